package kubeflags

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestTypedNetworkFlags(t *testing.T) {
	parse := func(args ...string) (netip.Prefix, netip.Addr, error) {
		var p netip.Prefix
		var a netip.Addr
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		PrefixVar(fs, &p, "node-cidr", "")
		AddrVar(fs, &a, "node-ip", "")
		return p, a, fs.Parse(args)
	}
	p, a, err := parse("--node-cidr", "10.250.1.7/16", "--node-ip", " 10.250.0.5 ")
	if err != nil || p != netip.MustParsePrefix("10.250.0.0/16") || a != netip.MustParseAddr("10.250.0.5") {
		t.Errorf("parsed %v %v %v; want the masked CIDR and the IP", p, a, err)
	}
	if p, a, err := parse(); err != nil || p.IsValid() || a.IsValid() {
		t.Errorf("unset flags: %v %v %v", p, a, err)
	}
	if p, _, err := parse("--node-cidr", ""); err != nil || p.IsValid() {
		t.Errorf("empty CIDR: %v %v", p, err)
	}
	for _, args := range [][]string{{"--node-cidr", "10.250.0.0"}, {"--node-ip", "10.250.0.0/16"}} {
		if _, _, err := parse(args...); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: error %v, want one naming %s", args, err, args[0])
		}
	}
}
