package mesh

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The plan of one model for each transport: what carries each link, which
// links cannot be served and why, the peers or connections, and the
// bridge's routing table. Addresses, routes and NAT do not depend on the
// transport.
func TestGatewayPlan(t *testing.T) {
	links := []v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		peer("b", "192.168.0.12/24", "100.64.16.0/20", "172.30.0.21:8777", keyB),
		// c is reached through b (b's peer forwards it).
		link("c", 1, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", GatewayLink: "b"}),
		// d has a host endpoint but no public key.
		peer("d", "192.168.0.14/24", "100.64.48.0/20", "172.30.0.41:8777", ""),
		// e dials us: no endpoint of its own.
		peer("e", "192.168.0.15/24", "100.64.64.0/20", "Inbound", keyC),
	}
	m := Build(links, wgOpts)
	for n, v := range m.Verdicts {
		if !v.Accepted() {
			t.Fatalf("link %s: %s %s", n, v.State, v.Message)
		}
	}
	type route struct{ dst, link string }
	for _, c := range []struct {
		transport Transport
		carrier   map[string]string
		errs      map[string]string // link → part of its error
		peers     []string          // "key:links:allowedIPs"
		conns     []string          // "link:carries"
		routes    []route           // bridge table lookups
	}{
		{
			transport: TransportWireGuard,
			carrier:   map[string]string{"b": "b", "c": "b", "e": "e"},
			errs:      map[string]string{"d": "spec.publicKey is required"},
			peers: []string{
				keyC + ":e:100.64.64.0/20,192.168.0.15/32",
				keyB + ":b,c:100.64.16.0/20,100.64.32.0/20,192.168.0.12/32,192.168.0.13/32",
			},
		},
		{
			transport: TransportBridge,
			carrier:   map[string]string{"b": "b", "c": "b", "d": "d"},
			errs:      map[string]string{"e": "bridge mode needs an endpoint host:port"},
			conns:     []string{"b:b,c", "d:d"},
			routes: []route{
				{"100.64.16.9", "b"}, {"192.168.0.12", "b"},
				{"100.64.32.9", "b"}, {"192.168.0.13", "b"}, // transit: into b's connection
				{"100.64.48.9", "d"}, {"192.168.0.14", "d"},
				{"100.64.64.9", ""}, {"192.168.0.15", ""}, // e is not served
				{"100.64.0.9", ""}, // our own network
			},
		},
		{transport: TransportNone, carrier: map[string]string{}, errs: map[string]string{}},
	} {
		t.Run(c.transport.String(), func(t *testing.T) {
			p := m.Plan(PlanOptions{Transport: c.transport, Device: "kubelink", ProbePort: 8779, Keepalive: DefaultKeepalive})
			if !maps.Equal(p.Carrier, c.carrier) {
				t.Errorf("carriers %v, want %v", p.Carrier, c.carrier)
			}
			if len(p.LinkErrs) != len(c.errs) {
				t.Errorf("link errors %v, want %v", p.LinkErrs, c.errs)
			}
			for l, want := range c.errs {
				if err := p.LinkErrs[l]; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("link %s: error %v, want %q", l, err, want)
				}
				if _, ok := p.Carrier[l]; ok {
					t.Errorf("link %s has an error and a carrier", l)
				}
			}
			var peers []string
			for _, pr := range p.Peers {
				var allowed []string
				for _, a := range pr.AllowedIPs {
					allowed = append(allowed, a.String())
				}
				peers = append(peers, pr.PublicKey.String()+":"+strings.Join(pr.Links, ",")+":"+strings.Join(allowed, ","))
			}
			if !slices.Equal(peers, c.peers) {
				t.Errorf("peers\n %v\nwant\n %v", peers, c.peers)
			}
			var conns []string
			for _, cn := range p.Connections {
				conns = append(conns, cn.Link.Name.String()+":"+strings.Join(cn.Carries(), ","))
				if cn.Mesh == nil || cn.Mesh.Local.Name.String() != "a" {
					t.Errorf("connection %s: mesh %v, want the mesh of local link a", cn.Link.Name, cn.Mesh)
				}
			}
			if !slices.Equal(conns, c.conns) {
				t.Errorf("connections %v, want %v", conns, c.conns)
			}
			for _, r := range c.routes {
				if got := p.Route(addr(r.dst)); got != r.link {
					t.Errorf("bridge route %s -> %q, want %q", r.dst, got, r.link)
				}
			}
			for i := 1; i < len(p.Table); i++ {
				if p.Table[i-1].Prefix.Bits() < p.Table[i].Prefix.Bits() {
					t.Errorf("table not longest prefix first: %v", p.Table)
				}
			}
			// Common to every transport.
			if len(p.Addresses) != 1 || p.Addresses[0] != pfx("192.168.0.11/24") {
				t.Errorf("addresses %v", p.Addresses)
			}
			if len(p.Routes) == 0 || p.Routes[0].Device != "kubelink" {
				t.Errorf("routes %v", p.Routes)
			}
			if len(p.Policy.Links) != 4 {
				t.Errorf("policy for %d links, want every foreign link (4)", len(p.Policy.Links))
			}
			// The kernel renders the policy only where the kernel enforces it.
			if fw := len(p.Firewall.Chains) > 0; fw != (c.transport == TransportWireGuard) {
				t.Errorf("firewall chains %d for transport %v", len(p.Firewall.Chains), c.transport)
			}
		})
	}
}

// A link whose gatewayLink has no peer (no public key) or no connection
// (no host endpoint) is not served, with a message naming the gateway link.
func TestGatewayPlanTransitWithoutCarrier(t *testing.T) {
	m := Build([]v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		peer("b", "192.168.0.12/24", "100.64.16.0/20", "Inbound", ""),
		link("c", 1, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", GatewayLink: "b"}),
	}, wgOpts)
	for tr, want := range map[Transport]string{TransportWireGuard: "gatewayLink b has no WireGuard peer", TransportBridge: "gatewayLink b has no bridge connection"} {
		p := m.Plan(PlanOptions{Transport: tr, Device: "kubelink"})
		if err := p.LinkErrs["c"]; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("transport %v: link c error %v, want %q", tr, err, want)
		}
		if _, ok := p.Carrier["c"]; ok || p.Route(addr("100.64.32.1")) != "" {
			t.Errorf("transport %v: c is carried", tr)
		}
	}
}
