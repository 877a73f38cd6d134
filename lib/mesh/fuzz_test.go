package mesh

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// fuzzLink builds a KubeLink from fuzzed fields; list fields are split at
// commas.
func fuzzLink(name, addr, cidr, endpoint, egress, ingress, gw, dnsIP string) v1alpha1.KubeLink {
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	kl := link(name, len(name), v1alpha1.KubeLinkSpec{ClusterAddress: addr, CIDR: cidr, Endpoint: endpoint,
		Egress: split(egress), Ingress: split(ingress), GatewayLink: gw})
	if dnsIP != "" {
		kl.Spec.DNS = &v1alpha1.KubeLinkDNS{DNSIP: dnsIP}
	}
	return kl
}

// Whatever a KubeLink holds (admission may be bypassed), Build never panics,
// gives every link a verdict, and an accepted link only has IPv4 networks
// that are disjoint from other peers' and outside foreign meshes.
func FuzzBuild(f *testing.F) {
	f.Add("b", "192.168.0.12/24", "100.64.16.0/20", "b.org:8777", "10.20.0.0/16", "!100.64.0.1", "", "")
	f.Add("lab--c", "10.200.0.3/24", "fd00::/64", "Inbound", "192.168.0.0/16", "0.0.0.0/0", "lab--b", "fd00::1")
	f.Add("x--y", "16.0.0.2/4", "100.64.0.0/20", "[2001:db8::1]:1", "192.168.0.13", "10.0.0.0/8,!10.1.0.0/16", "b", "100.64.0.10")
	f.Fuzz(func(t *testing.T, name, addr, cidr, endpoint, egress, ingress, gw, dnsIP string) {
		kls := []v1alpha1.KubeLink{
			local("a", "192.168.0.11/24", "100.64.0.0/20"),
			local("lab--a", "10.200.0.1/24", "100.64.0.0/20"),
			peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB),
			fuzzLink(name, addr, cidr, endpoint, egress, ingress, gw, dnsIP),
		}
		m := Build(kls, wgOpts)
		for _, kl := range kls {
			if _, ok := m.Verdicts[kl.Name]; !ok {
				t.Fatalf("no verdict for %q", kl.Name)
			}
		}
		pol := m.Policy(8779)
		_ = pol.FirewallRules("kubelink")
		_, _ = m.WireGuardPeers(DefaultKeepalive)
		_ = m.SNATRules(NATOptions{Device: "kubelink"})
		for _, ms := range m.Meshes {
			for _, l := range ms.Members {
				for _, d := range append(l.AllowedIPs(), l.Ingress.Allow...) {
					if !d.Addr().Is4() {
						t.Fatalf("accepted link %s has the non-IPv4 network %s", l.Name, d)
					}
				}
				for _, other := range ms.Members {
					if other == l || samePeer(l, other) {
						continue
					}
					for _, d := range l.Destinations() {
						for _, od := range other.Destinations() {
							if d.Overlaps(od) {
								t.Fatalf("accepted links %s and %s share %s/%s", l.Name, other.Name, d, od)
							}
						}
					}
				}
				for _, d := range l.Destinations() {
					for _, om := range m.Meshes {
						if d.Overlaps(om.CIDR()) && (om != ms || !contains(om.CIDR(), d)) {
							t.Fatalf("accepted link %s claims %s across mesh %s", l.Name, d, om.CIDR())
						}
					}
				}
			}
		}
	})
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"b.example.org:8777", "[2001:db8::1]:51820", "LocalLink", "Inbound", "1.2.3.4", "host:0", ":", "[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEndpoint(s, 8777)
		if err == nil && e.Kind == EndpointHost && (e.Host == "" || e.Port == 0) {
			t.Fatalf("ParseEndpoint(%q) accepted %+v without host or port", s, e)
		}
	})
}

// The bridge's decision never panics, and a packet is accepted only from a
// source the carrying link owns.
func FuzzPolicyDecide(f *testing.F) {
	f.Add([]byte{192, 168, 0, 12}, []byte{100, 64, 0, 20}, true, uint16(40000), uint16(8779))
	f.Add([]byte{10, 30, 0, 1}, []byte{192, 168, 0, 11}, false, uint16(0), uint16(0))
	m := policyModel(f)
	pol := m.Policy(8779)
	f.Fuzz(func(t *testing.T, src, dst []byte, udp bool, sport, dport uint16) {
		s, ok1 := netip.AddrFromSlice(src)
		d, ok2 := netip.AddrFromSlice(dst)
		if !ok1 || !ok2 {
			return
		}
		pkt := Packet{Src: s, Dst: d, UDP: udp, SrcPort: sport, DstPort: dport}
		for _, via := range []string{"b", "d", "lab--z"} {
			carries := func(l string) bool { return l == via }
			if pol.Decide(carries, pkt) == Accept {
				if o, ok := pol.Owner(s); !ok || !carries(o.Link) {
					t.Fatalf("%v accepted from %s's carrier but owned by %v", pkt, via, o)
				}
			}
		}
	})
}
