package mesh

import (
	"slices"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

const keyD = "Yy9nYWhHZmVkY2JhMDEyMzQ1Njc4OWFiY2RlZmdoaWo="

// policyModel: mesh default with b (allow list and deny), c reached through
// b, d (no ingress: the default) with an egress network; a mesh-wide deny on
// the LocalLink; mesh lab with z. Every kind of rule is in it.
func policyModel(t testing.TB) *Model {
	t.Helper()
	a := local("a", "192.168.0.11/24", "100.64.0.0/20")
	a.Spec.Ingress = []string{"!100.64.0.5"}
	b := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)
	b.Spec.Egress = []string{"192.168.0.100"} // a MeshService address of B
	b.Spec.Ingress = []string{"100.64.0.0/20", "192.168.0.11", "!100.64.0.10"}
	c := link("c", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", GatewayLink: "b", Ingress: []string{"100.64.0.20"}})
	d := peer("d", "192.168.0.14/24", "100.64.48.0/20", "d.org", keyD)
	d.Spec.Egress = []string{"10.30.0.0/16"}
	m := Build([]v1alpha1.KubeLink{a, b, c, d,
		local("lab--a", "10.200.0.1/24", "100.64.0.0/20"),
		peer("lab--z", "10.200.0.26/24", "100.64.80.0/20", "z.org", keyC),
	}, wgOpts)
	for n, v := range m.Verdicts {
		if !v.Accepted() {
			t.Fatalf("link %s: %s %s", n, v.State, v.Message)
		}
	}
	return m
}

func udp(src, dst string, sport, dport uint16) Packet {
	return Packet{Src: addr(src), Dst: addr(dst), UDP: true, SrcPort: sport, DstPort: dport}
}

func tcp(src, dst string) Packet { return Packet{Src: addr(src), Dst: addr(dst)} }

// The two renderings of one policy — kernel chains behind WireGuard's
// cryptokey routing (WireGuard mode) and Policy.Decide per bridge connection
// (bridge mode) — give the same verdict on the same packet from the same
// link's peer.
func TestPolicyRenderingsAgree(t *testing.T) {
	m := policyModel(t)
	pol := m.Policy(8779)
	rs := pol.FirewallRules("kubelink")
	peers, errs := m.WireGuardPeers(DefaultKeepalive)
	if len(errs) != 0 {
		t.Fatal(errs)
	}

	// kernel: WireGuard accepts a source only from the peer whose AllowedIPs
	// hold its longest match, then the chains decide.
	kernel := func(via string, p Packet) Decision {
		var from *Peer
		for i := range peers {
			if slices.Contains(peers[i].Links, via) {
				from = &peers[i]
			}
		}
		best, bits := -1, -1
		for i, pr := range peers {
			for _, a := range pr.AllowedIPs {
				if a.Contains(p.Src) && a.Bits() > bits {
					best, bits = i, a.Bits()
				}
			}
		}
		switch {
		case from == nil || best < 0 || peers[best].PublicKey != from.PublicKey:
			return DropSpoofed
		case iptablesDrops(t, rs, p):
			return DropDenied
		}
		return Accept
	}
	// bridge: the connection of a link carries it and the transit links
	// that name it as their gatewayLink.
	bridge := func(via string, p Packet) Decision {
		conn := via
		if l, ok := m.Link(via); ok && l.GatewayLink != "" {
			conn = l.GatewayLink
		}
		return pol.Decide(func(link string) bool {
			l, _ := m.Link(link)
			return link == conn || l.GatewayLink == conn
		}, p)
	}

	cases := []struct {
		via  string // the link whose peer sends the packet
		p    Packet
		want Decision
		why  string
	}{
		{"b", tcp("192.168.0.12", "100.64.0.20"), Accept, "b's allow list has the local service CIDR"},
		{"b", tcp("192.168.0.12", "100.64.0.10"), DropDenied, "b's own deny"},
		{"b", tcp("192.168.0.12", "100.64.0.5"), DropDenied, "the mesh-wide deny of the LocalLink"},
		{"b", tcp("192.168.0.12", "10.250.0.5"), DropDenied, "node network: not in b's allow list"},
		{"b", tcp("100.64.16.9", "192.168.0.11"), Accept, "b's service CIDR is b's source too"},
		{"b", tcp("192.168.0.100", "100.64.0.20"), Accept, "b's MeshService address (egress inside the mesh) is b's"},
		{"b", tcp("192.168.0.12", "100.64.48.7"), Accept, "transit to member d: d's business"},
		{"b", tcp("192.168.0.12", "10.30.1.1"), Accept, "transit to d's egress"},
		{"b", tcp("192.168.0.14", "100.64.0.20"), DropSpoofed, "d's address from b's peer"},
		{"b", tcp("10.30.0.1", "100.64.0.20"), DropSpoofed, "d's egress network from b's peer"},
		{"b", tcp("10.99.0.1", "100.64.0.20"), DropSpoofed, "nobody's address"},
		{"c", tcp("192.168.0.13", "100.64.0.20"), Accept, "c through b: c's allow list"},
		{"c", tcp("192.168.0.13", "100.64.0.21"), DropDenied, "c's allow list is one address; b's rule does not apply to c's sources"},
		{"c", tcp("100.64.32.5", "192.168.0.11"), Accept, "the cluster address passes every link's rule whatever its allow list: its own rule (LocalRules) decides"},
		{"d", tcp("192.168.0.14", "100.64.0.20"), Accept, "d has no rule: the local service CIDR is exported"},
		{"d", tcp("192.168.0.14", "192.168.0.11"), Accept, "d has no rule: the local cluster address is in the mesh"},
		{"d", tcp("10.30.4.4", "192.168.0.11"), Accept, "d's egress is d's source"},
		{"d", tcp("192.168.0.14", "10.250.0.5"), DropDenied, "the default does not export the node network"},
		{"d", tcp("192.168.0.14", "169.254.169.254"), DropDenied, "nor cloud metadata"},
		{"d", tcp("192.168.0.14", "10.96.0.1"), DropDenied, "nor an API server outside the service CIDR"},
		{"d", tcp("192.168.0.14", "100.64.0.1"), DropDenied, "nor the kubernetes Service (the API server)"},
		{"b", tcp("192.168.0.12", "100.64.0.2"), Accept, "b's explicit allow list has the whole service CIDR"},
		{"d", tcp("192.168.0.14", "100.64.0.5"), DropDenied, "the mesh-wide deny holds for the default too"},
		{"d", tcp("192.168.0.12", "100.64.0.20"), DropSpoofed, "b's address from d's peer"},
		{"lab--z", tcp("10.200.0.26", "100.64.0.20"), Accept, "z in mesh lab: default"},
		{"lab--z", tcp("10.200.0.26", "100.64.16.1"), DropDenied, "b's networks are not transit for z (another mesh)"},
		{"lab--z", tcp("192.168.0.12", "100.64.0.20"), DropSpoofed, "a default-mesh address from z"},
		// The probe: the peer's probes to the responder and its replies to
		// our prober's port pass every rule; nothing else on those ports.
		{"c", udp("192.168.0.13", "192.168.0.11", 40000, 8779), Accept, "c's probe to the responder"},
		{"d", udp("192.168.0.14", "192.168.0.11", 8779, 8780), Accept, "d's reply to our probe"},
		{"c", udp("192.168.0.13", "100.64.0.53", 8779, 53), DropDenied, "a UDP packet from the probe port to a service: no exemption"},
		{"c", udp("192.168.0.13", "192.168.0.11", 8779, 9000), Accept, "from the probe port to another port of the cluster address: left to the address's own rule, which drops it"},
		{"b", tcp("192.168.0.12", "192.168.0.11"), Accept, "b's allow list lacks the cluster address: it passes b's rule all the same (replies to our own connections)"},
		{"lab--z", udp("10.200.0.26", "10.200.0.1", 40000, 8779), Accept, "z's probe in mesh lab"},
		{"lab--z", udp("10.200.0.26", "192.168.0.11", 40000, 8779), DropDenied, "z probing the default mesh's address"},
	}
	for _, c := range cases {
		k, u := kernel(c.via, c.p), bridge(c.via, c.p)
		if k != c.want || u != c.want {
			t.Errorf("%s from %s's peer: kernel %s, bridge %s, want %s (%s)", c.p, c.via, k, u, c.want, c.why)
		}
	}
}

func (p Packet) String() string {
	if p.UDP {
		return "udp " + netipAddrPortFrom(p.Src, p.SrcPort).String() + " -> " + netipAddrPortFrom(p.Dst, p.DstPort).String()
	}
	return p.Src.String() + " -> " + p.Dst.String()
}

// The same WireGuard peer in two meshes (same key) may repeat a network: the
// first link in model order owns it, as the first matching jump of the
// kernel's chains does; either link's carrier may send from it.
func TestPolicyOwnerOfARepeatedNetwork(t *testing.T) {
	m := Build([]v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB),
		local("lab--a", "10.200.0.1/24", "100.64.0.0/20"),
		peer("lab--b", "10.200.0.2/24", "100.64.16.0/20", "b.org", keyB),
	}, wgOpts)
	pol := m.Policy(8779)
	if o, ok := pol.Owner(addr("100.64.16.3")); !ok || o.Link != "b" {
		t.Errorf("owner of 100.64.16.3 = %v, want b", o)
	}
	if o, ok := pol.Owner(addr("10.200.0.2")); !ok || o.Link != "lab--b" {
		t.Errorf("owner of 10.200.0.2 = %v, want lab--b", o)
	}
	onlyLab := func(l string) bool { return l == "lab--b" }
	if d := pol.Decide(onlyLab, tcp("100.64.16.3", "100.64.0.20")); d != Accept {
		t.Errorf("lab--b's connection sending from the shared network: %s, want accept", d)
	}
	if d := pol.Decide(onlyLab, tcp("192.168.0.12", "100.64.0.20")); d != DropSpoofed {
		t.Errorf("lab--b's connection sending from b's cluster address: %s, want spoofed", d)
	}
}

func TestProbeReplyPort(t *testing.T) {
	for in, want := range map[int]uint16{8779: 8780, 0: 0, 65535: 0, -1: 0, 1: 2} {
		if got := ProbeReplyPort(in); got != want {
			t.Errorf("ProbeReplyPort(%d) = %d, want %d", in, got, want)
		}
	}
}
