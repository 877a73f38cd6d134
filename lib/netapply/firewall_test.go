package netapply

import (
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// TestFirewallEnforcesIngressOfAPeer: router r forwards between peer p (on
// its mesh device "kubelink") and two server namespaces. Peer b may reach the
// local service CIDR except one address, and nothing else.
func TestFirewallEnforcesIngressOfAPeer(t *testing.T) {
	p, r, s1, s2 := nstest.New(t, "p"), nstest.New(t, "r"), nstest.New(t, "s1"), nstest.New(t, "s2")
	nstest.Veth(t, p, "eth0", "192.168.0.12/24", r, "kubelink", "192.168.0.11/24")
	nstest.Veth(t, r, "s1", "100.64.0.1/24", s1, "eth0", "100.64.0.20/24")
	nstest.Veth(t, r, "s2", "10.9.0.1/24", s2, "eth0", "10.9.0.2/24")
	s1.Run(t, "ip", "addr", "add", "100.64.0.10/24", "dev", "eth0")
	p.Run(t, "ip", "route", "add", "default", "via", "192.168.0.11")
	s1.Run(t, "ip", "route", "add", "default", "via", "100.64.0.1")
	s2.Run(t, "ip", "route", "add", "default", "via", "10.9.0.1")
	do(t, r, func() error { return EnableForwarding(true, false) })
	serve(t, s1, "0.0.0.0:8080", "s1")
	serve(t, s2, "0.0.0.0:8080", "s2")

	m := model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"),
		peerLink("b", "192.168.0.12/24", "100.64.16.0/20", keyB, "100.64.0.0/20", "!100.64.0.10"))
	rs := m.FirewallRules("kubelink", 8779)
	tests := []struct {
		dst, reply string
		allowed    bool
	}{
		{"100.64.0.20:8080", "s1", true},
		{"100.64.0.10:8080", "s1", false}, // denied inside the allowed CIDR
		{"10.9.0.2:8080", "s2", false},    // not in the allow list
	}
	check := func(step string, firewall bool) {
		t.Helper()
		for _, tt := range tests {
			pass := tt.allowed || !firewall
			timeout := 2 * time.Second
			if !pass {
				timeout = 300 * time.Millisecond
			}
			reply, err := dial(p, tt.dst, timeout)
			switch {
			case pass && (err != nil || reply != tt.reply):
				t.Errorf("%s: %s: got %q, %v; want reply %q", step, tt.dst, reply, err, tt.reply)
			case !pass && err == nil:
				t.Errorf("%s: %s answered %q; the firewall must drop it", step, tt.dst, reply)
			}
		}
	}

	check("without firewall", false) // proves the network itself works
	chains := newChains(t, FirewallChains)
	set(t, r, chains, rs)
	check("with firewall", true)
	do(t, r, chains.CleanUp)
	check("after CleanUp", false)
}
