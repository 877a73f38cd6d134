package netapply

import (
	"net/netip"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// TestServiceDNATReachesAndSpreadsOverTargets: namespace a connects to a
// mesh service address; the OUTPUT hook DNATs to servers in b and c.
func TestServiceDNATReachesAndSpreadsOverTargets(t *testing.T) {
	a, b, c := nstest.New(t, "a"), nstest.New(t, "b"), nstest.New(t, "c")
	nstest.Veth(t, a, "tob", "10.1.1.1/24", b, "eth0", "10.1.1.2/24")
	nstest.Veth(t, a, "toc", "10.1.2.1/24", c, "eth0", "10.1.2.2/24")
	b.Run(t, "ip", "route", "add", "default", "via", "10.1.1.1")
	c.Run(t, "ip", "route", "add", "default", "via", "10.1.2.1")
	// A local connect needs a route to the virtual address before OUTPUT
	// rewrites it.
	a.Run(t, "ip", "route", "add", "192.168.0.0/24", "dev", "tob")
	serve(t, b, "10.1.1.2:8080", "b")
	serve(t, c, "10.1.2.2:8080", "c")
	target := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	tests := []struct {
		name    string
		targets []netip.AddrPort
		want    []string
	}{
		{"one target", []netip.AddrPort{target("10.1.2.2:8080")}, []string{"c"}},
		{"two targets", []netip.AddrPort{target("10.1.1.2:8080"), target("10.1.2.2:8080")}, []string{"b", "c"}},
	}
	chains := newChains(t, ServiceChains)
	t.Cleanup(func() { _ = a.Do(chains.CleanUp) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := withDNATProtocol(t, mesh.ServiceRules([]*mesh.ServiceBinding{{
				Key: "default/echo", Address: netip.MustParseAddr("192.168.0.100"),
				Ports: []mesh.BoundPort{{Protocol: "tcp", Port: 80, Targets: tt.targets}},
			}}))
			set(t, a, chains, rs)
			const conns = 40
			count := map[string]int{}
			for range conns {
				reply, err := dial(a, "192.168.0.100:80", 2*time.Second)
				if err != nil {
					t.Fatalf("connect to the service address: %v", err)
				}
				count[reply]++
			}
			atLeast := conns
			if len(tt.want) > 1 {
				atLeast = 5
			}
			for _, w := range tt.want {
				if count[w] < atLeast {
					t.Errorf("server %s got %d of %d connections, want at least %d (all: %v)", w, count[w], conns, atLeast, count)
				}
			}
			if len(count) != len(tt.want) {
				t.Errorf("replies %v, want only from %v", count, tt.want)
			}
		})
	}
	// Without the rules nothing answers on the service address.
	do(t, a, chains.CleanUp)
	if reply, err := dial(a, "192.168.0.100:80", 300*time.Millisecond); err == nil {
		t.Errorf("after CleanUp the service address still answers %q", reply)
	}
}
