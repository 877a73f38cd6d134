package netapply

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// TestDropUnNATedLetsAFlowFromBeforeTheRulesBeRewritten: a pod's SYN that
// crossed the gateway before its SNAT rules existed is tracked without
// NAT, and the same connection (source port) keeps leaving with the pod's
// address after the rules are in, so the peer never answers. DropUnNATed
// deletes exactly that entry: the retry is rewritten and connects, and a
// flow outside the scope keeps its entry.
func TestDropUnNATedLetsAFlowFromBeforeTheRulesBeRewritten(t *testing.T) {
	c, g, p := nstest.New(t, "pod"), nstest.New(t, "gw"), nstest.New(t, "peer")
	nstest.Veth(t, c, "eth0", "10.110.1.2/24", g, "cluster", "10.110.1.1/24")
	// The gateway's "mesh device" is a veth named like the WireGuard device.
	nstest.Veth(t, g, "kubelink", "172.30.0.1/24", p, "eth0", "172.30.0.2/24")
	c.Run(t, "ip", "route", "add", "default", "via", "10.110.1.1")
	g.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	g.Run(t, "ip", "route", "add", "100.64.16.0/20", "via", "172.30.0.2", "dev", "kubelink")
	// The peer answers only the local cluster address (as a peer's
	// allowed IPs do), never the pod network.
	p.Run(t, "ip", "addr", "add", "100.64.16.20/32", "dev", "eth0")
	p.Run(t, "ip", "route", "add", "192.168.0.0/24", "via", "172.30.0.1")
	serve(t, p, "100.64.16.20:80", "b")
	// A node tracks connections before kubelink's rules come (kube-proxy's
	// rule against invalid packets, as here, turns tracking on).
	g.Run(t, "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")

	const port = 40123
	dialPort := func(port int, to string, timeout time.Duration) error {
		_, err := dialFrom(c, fmt.Sprintf("10.110.1.2:%d", port), to, timeout)
		return err
	}
	// Before the rules: the SYNs leave un-rewritten and get no answer.
	if err := dialPort(port, "100.64.16.20:80", 300*time.Millisecond); err == nil {
		t.Fatal("connected before the SNAT rules: the peer must not answer the pod address")
	}
	// A flow outside the scope: to the peer's underlay address.
	if err := dialPort(port+1, "172.30.0.2:82", 300*time.Millisecond); err == nil {
		t.Fatal("connected to the underlay address: the peer must not answer the pod address")
	}
	m := oneMesh(t)
	set(t, g, newChains(t, SNATChains), m.SNATRules(mesh.NATOptions{Device: "kubelink"}))

	// With the rules in but the old entry kept, the same source port stays
	// un-rewritten: this is the stuck connection.
	if err := dialPort(port, "100.64.16.20:80", 500*time.Millisecond); err == nil {
		t.Fatal("the retry connected although its connection was tracked without SNAT; the test shows nothing")
	}
	if got := unNATedTo(t, g, "100.64.16.20"); got == 0 {
		t.Fatal("no un-rewritten entry to 100.64.16.20 before DropUnNATed")
	}
	scopes := m.SNATScopes()
	var n uint
	do(t, g, func() (err error) { n, err = DropUnNATed(scopes); return err })
	if n == 0 {
		t.Fatal("DropUnNATed deleted nothing")
	}
	if got := unNATedTo(t, g, "100.64.16.20"); got != 0 {
		t.Fatalf("%d un-rewritten entries to 100.64.16.20 remain", got)
	}
	if got := unNATedTo(t, g, "172.30.0.2"); got == 0 {
		t.Error("DropUnNATed deleted the entry of a flow outside the SNAT scope")
	}
	if err := dialPort(port, "100.64.16.20:80", 2*time.Second); err != nil {
		t.Fatalf("the retry from the same source port after DropUnNATed: %v", err)
	}
	// Nothing left to delete, and the rewritten flow is not touched.
	do(t, g, func() (err error) { n, err = DropUnNATed(scopes); return err })
	if n != 0 {
		t.Errorf("a second DropUnNATed deleted %d entries; want 0 (rewritten flows stay)", n)
	}
	if natted := nattedTo(t, g, "100.64.16.20"); natted == 0 {
		t.Error("no rewritten entry to 100.64.16.20 after the retry")
	}
}

// flows lists the gateway's IPv4 connection-tracking entries to dst.
func flows(t *testing.T, ns *nstest.Namespace, dst string) []*netlink.ConntrackFlow {
	t.Helper()
	var out []*netlink.ConntrackFlow
	want := netip.MustParseAddr(dst)
	do(t, ns, func() error {
		all, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		for _, f := range all {
			if a, ok := addrOf(f.Forward.DstIP); ok && a == want {
				out = append(out, f)
			}
		}
		return err
	})
	return out
}

func unNATedTo(t *testing.T, ns *nstest.Namespace, dst string) (n int) {
	for _, f := range flows(t, ns, dst) {
		if f.Reverse.DstIP.Equal(f.Forward.SrcIP) {
			n++
		}
	}
	return n
}

func nattedTo(t *testing.T, ns *nstest.Namespace, dst string) (n int) {
	for _, f := range flows(t, ns, dst) {
		if f.Reverse.DstIP.Equal(net.ParseIP("192.168.0.11")) {
			n++
		}
	}
	return n
}

// TestUnNATedMatchesOnlyFlowsTheRulesWouldRewriteDifferently: the filter
// of DropUnNATed, on flows as the kernel reports them.
func TestUnNATedMatchesOnlyFlowsTheRulesWouldRewriteDifferently(t *testing.T) {
	f := unNATed(oneMesh(t).SNATScopes())
	flow := func(src, dst, replySrc, replyDst string) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP(replySrc), DstIP: net.ParseIP(replyDst)},
		}
	}
	for _, tt := range []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"a pod's flow into the mesh without SNAT", flow("10.110.1.2", "100.64.16.20", "100.64.16.20", "10.110.1.2"), true},
		{"rewritten to another source (an old cluster address)", flow("10.110.1.2", "100.64.16.20", "100.64.16.20", "192.168.0.99"), true},
		{"rewritten to the cluster address", flow("10.110.1.2", "100.64.16.20", "100.64.16.20", "192.168.0.11"), false},
		{"to the local cluster address itself", flow("10.110.1.2", "192.168.0.11", "192.168.0.11", "10.110.1.2"), false},
		{"destination rewritten (DNAT)", flow("10.110.1.2", "100.64.16.20", "10.110.7.7", "10.110.1.2"), false},
		{"from a mesh address (transit, our own probes)", flow("192.168.0.13", "100.64.16.20", "100.64.16.20", "192.168.0.13"), false},
		{"outside the mesh", flow("10.110.1.2", "8.8.8.8", "8.8.8.8", "10.110.1.2"), false},
	} {
		if got := f.MatchConntrackFlow(tt.flow); got != tt.want {
			t.Errorf("%s: match = %v, want %v", tt.name, got, tt.want)
		}
	}
}
