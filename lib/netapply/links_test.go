package netapply

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// linkNS is a namespace with a veth pair kl0/kl0p (both ends inside).
func linkNS(t *testing.T) *nstest.Namespace {
	t.Helper()
	n := nstest.New(t, "ln")
	n.Run(t, "ip", "link", "add", "kl0", "type", "veth", "peer", "name", "kl0p")
	n.Run(t, "ip", "link", "set", "kl0p", "up")
	return n
}

// globalAddrs lists the addresses of dev as "a/bits", without link-local.
func globalAddrs(t *testing.T, ns *nstest.Namespace, dev string) []string {
	var out []string
	for _, l := range strings.Split(ns.Run(t, "ip", "-o", "addr", "show", "dev", dev), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && !strings.HasPrefix(f[3], "fe80:") {
			out = append(out, f[3])
		}
	}
	slices.Sort(out)
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSetAddressesAddsAndRemoves(t *testing.T) {
	n := linkNS(t)
	do(t, n, func() error { return SetUp("kl0") })
	if out := n.Run(t, "ip", "link", "show", "kl0"); !strings.Contains(out, ",UP") {
		t.Fatalf("SetUp: %s", out)
	}
	steps := []struct {
		name string
		want []string
	}{
		{"add both families", []string{"10.0.0.1/24", "10.0.0.2/24", "fd00::1/64"}},
		{"same again", []string{"10.0.0.1/24", "10.0.0.2/24", "fd00::1/64"}},
		// Removing the primary 10.0.0.1 takes the secondary 10.0.0.2 along.
		{"remove the primary", []string{"10.0.0.2/24", "fd00::2/64"}},
		{"remove all", nil},
	}
	for _, s := range steps {
		do(t, n, func() error { return SetAddresses("kl0", prefixes(s.want...)) })
		want := slices.Clone(s.want)
		slices.Sort(want)
		if got := globalAddrs(t, n, "kl0"); !slices.Equal(got, want) {
			t.Errorf("%s: addresses %q, want %q", s.name, got, want)
		}
	}
	if out := n.Run(t, "ip", "-6", "addr", "show", "dev", "kl0"); !strings.Contains(out, "fe80:") {
		t.Errorf("the link-local address must stay:\n%s", out)
	}
	err := n.Do(func() error { return SetAddresses("nope0", nil) })
	if err == nil || !strings.Contains(err.Error(), `"nope0"`) {
		t.Errorf("error = %v, want one naming the device", err)
	}
}

func TestDeleteLinkIsIdempotent(t *testing.T) {
	n := linkNS(t)
	for i := range 2 {
		if err := n.Do(func() error { return DeleteLink("kl0") }); err != nil {
			t.Fatalf("DeleteLink #%d: %v", i+1, err)
		}
	}
	if out := n.Run(t, "ip", "-o", "link", "show"); strings.Contains(out, "kl0") {
		t.Errorf("kl0 still exists:\n%s", out)
	}
}

func TestEnableForwardingOnlyInTheCurrentNamespace(t *testing.T) {
	n := nstest.New(t, "fw")
	rootBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		n.Run(t, "sysctl", "-qw", f+"=0")
	}
	do(t, n, func() error { return EnableForwarding(true, true) })
	for _, f := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if got := strings.TrimSpace(n.Run(t, "sysctl", "-n", f)); got != "1" {
			t.Errorf("%s = %s, want 1", f, got)
		}
	}
	if rootAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(rootAfter) != string(rootBefore) {
		t.Errorf("the root namespace changed: ip_forward %q -> %q", rootBefore, rootAfter)
	}
}

// TestEnableDeviceForwardingNeedsOnlyNetAdmin: a process with nothing but
// CAP_NET_ADMIN, as an unprivileged user that cannot write
// /proc/sys/net/ipv4/ip_forward, makes the namespace forward between two
// devices while ip_forward stays 0; without CAP_NET_ADMIN it cannot.
func TestEnableDeviceForwardingNeedsOnlyNetAdmin(t *testing.T) {
	c, g, s := nstest.New(t, "cl"), nstest.New(t, "gw"), nstest.New(t, "srv")
	nstest.Veth(t, c, "eth0", "10.1.0.2/24", g, "c0", "10.1.0.1/24")
	nstest.Veth(t, g, "s0", "10.2.0.1/24", s, "eth0", "10.2.0.2/24")
	c.Run(t, "ip", "route", "add", "default", "via", "10.1.0.1")
	s.Run(t, "ip", "route", "add", "default", "via", "10.2.0.1")
	g.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	serve(t, s, "10.2.0.2:8080", "s")
	if reply, err := dial(c, "10.2.0.2:8080", 500*time.Millisecond); err == nil {
		t.Fatalf("control: forwarded with ip_forward=0 (reply %q)", reply)
	}

	helper := func(caps string) error {
		args := []string{"netns", "exec", g.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=" + caps, "--ambient-caps=" + caps, "--bounding-set=" + caps, os.Args[0]}
		cmd := exec.Command("ip", args...)
		cmd.Env = append(os.Environ(), helperDevicesEnv+"=c0,s0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := helper("-all"); err == nil {
		t.Fatal("a process without CAP_NET_ADMIN enabled forwarding")
	}
	if err := helper("-all,+net_admin"); err != nil {
		t.Fatalf("with CAP_NET_ADMIN only: %v", err)
	}
	if reply, err := dial(c, "10.2.0.2:8080", 2*time.Second); err != nil || reply != "s" {
		t.Errorf("through the gateway after EnableDeviceForwarding: reply %q, %v", reply, err)
	}
	if got := strings.TrimSpace(g.Run(t, "sysctl", "-n", "net.ipv4.ip_forward")); got != "0" {
		t.Errorf("ip_forward = %s: the namespace-wide setting must stay as it was", got)
	}
	do(t, g, func() error {
		for _, d := range []string{"c0", "s0"} {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + d + "/forwarding")
			if err != nil || strings.TrimSpace(string(b)) != "1" {
				return fmt.Errorf("net.ipv4.conf.%s.forwarding = %q, %v; want 1", d, b, err)
			}
		}
		return nil
	})
}
