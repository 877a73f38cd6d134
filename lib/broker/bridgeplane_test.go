package broker

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
)

// C's view of a transit: b is a direct peer, a is reached through b. The
// connection to b accepts a's sources too, and checks each packet against
// the ingress rule of the link its source belongs to.
func TestConnectionPolicyOfAGatewayLink(t *testing.T) {
	kl := func(name string, spec v1alpha1.KubeLinkSpec) v1alpha1.KubeLink {
		return v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	m := mesh.Build([]v1alpha1.KubeLink{
		kl("c", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20"}),
		kl("b", v1alpha1.KubeLinkSpec{Endpoint: "172.30.0.21:8088", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"}),
		kl("a", v1alpha1.KubeLinkSpec{GatewayLink: "b", ClusterAddress: "192.168.0.11/24", CIDR: "100.64.0.0/20", Ingress: []string{"!100.64.32.20"}}),
		kl("d", v1alpha1.KubeLinkSpec{Endpoint: "172.30.0.41:8088", ClusterAddress: "192.168.0.14/24", CIDR: "100.64.48.0/20"}),
	}, mesh.ParseOptions{DefaultPort: 8088})
	for n, v := range m.Verdicts {
		if !v.Accepted() {
			t.Fatalf("link %s: %s %s", n, v.State, v.Message)
		}
	}
	plan := m.Plan(mesh.PlanOptions{Transport: mesh.TransportBridge, Device: "kubelink", ProbePort: 8779})
	conn := func(link string) mesh.Connection {
		for _, c := range plan.Connections {
			if c.Link.Name.String() == link {
				return c
			}
		}
		t.Fatalf("no connection for link %s in %v", link, plan.Connections)
		return mesh.Connection{}
	}
	if got := conn("b").Carries(); strings.Join(got, ",") != "b,a" {
		t.Errorf("b's connection carries %v, want b and its transit link a", got)
	}
	pol := connectionPolicy(plan.Policy, conn("b"))
	for _, c := range []struct {
		src, dst string
		want     bridge.Verdict
		why      string
	}{
		{"192.168.0.12", "100.64.32.20", bridge.Pass, "b to C's ClusterIP: b has no rule"},
		{"100.64.16.5", "100.64.32.20", bridge.Pass, "from b's service CIDR"},
		{"192.168.0.11", "100.64.32.20", bridge.Denied, "a's rule denies C's ClusterIP to a's traffic through b"},
		{"100.64.0.7", "100.64.32.20", bridge.Denied, "a's service CIDR is a's too"},
		{"192.168.0.11", "100.64.32.21", bridge.Pass, "a to another ClusterIP of C"},
		{"192.168.0.11", "192.168.0.13", bridge.Pass, "a to C's cluster address"},
		{"192.168.0.11", "100.64.48.1", bridge.Pass, "a to member d's networks: transit, d's business"},
		{"192.168.0.12", "10.250.0.5", bridge.Denied, "b to C's node network: not exported by default"},
		{"192.168.0.14", "100.64.32.21", bridge.Spoofed, "d's address through b: spoofed"},
		{"10.99.0.1", "100.64.32.21", bridge.Spoofed, "nobody's address"},
	} {
		if got := pol.Filter(bridge.Packet{Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.dst)}); got != c.want {
			t.Errorf("%s: %s -> %s verdict %d, want %d", c.why, c.src, c.dst, got, c.want)
		}
	}

	// Without transit links the connection is b's alone.
	alone := connectionPolicy(plan.Policy, mesh.Connection{Link: conn("b").Link})
	if v := alone.Filter(bridge.Packet{Src: netip.MustParseAddr("192.168.0.11"), Dst: netip.MustParseAddr("100.64.32.21")}); v != bridge.Spoofed {
		t.Errorf("b's connection gives a's packet verdict %d, want spoofed: no link uses b as gatewayLink", v)
	}
}

// A in two meshes: the links of each mesh announce A's cluster address in
// that mesh and are checked by that mesh's rules, and the routing table
// covers both.
func TestBridgeLinksOfSeveralMeshes(t *testing.T) {
	kl := func(name string, spec v1alpha1.KubeLinkSpec) v1alpha1.KubeLink {
		return v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	m := mesh.Build([]v1alpha1.KubeLink{
		kl("a", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24", CIDR: "100.64.0.0/20"}),
		kl("b", v1alpha1.KubeLinkSpec{Endpoint: "172.30.0.21:8088", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"}),
		kl("lab--a", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "10.200.0.1/24", CIDR: "100.64.0.0/20"}),
		kl("lab--c", v1alpha1.KubeLinkSpec{Endpoint: "172.30.0.31", ClusterAddress: "10.200.0.3/24", CIDR: "100.64.32.0/20"}),
		kl("lab--d", v1alpha1.KubeLinkSpec{Endpoint: "Inbound", ClusterAddress: "10.200.0.4/24", CIDR: "100.64.48.0/20"}),
	}, mesh.ParseOptions{DefaultPort: 8088})
	if len(m.Meshes) != 2 {
		t.Fatalf("%d meshes", len(m.Meshes))
	}
	p := &bridgePlane{gateway: &gateway{cfg: &Config{BridgePort: 8088, ProbePort: 8779}}}
	plan := m.Plan(mesh.PlanOptions{Transport: mesh.TransportBridge, Device: "kubelink", ProbePort: 8779})
	links := map[string]bridge.Link{}
	for _, l := range p.links(plan) {
		links[l.ID] = l
	}
	want := map[string]struct{ local, endpoint string }{
		"b":      {"192.168.0.11/24", "172.30.0.21:8088"},
		"lab--c": {"10.200.0.1/24", "172.30.0.31:8088"},
	}
	if len(links) != len(want) {
		t.Errorf("links %v, want %v", links, want)
	}
	for id, w := range want {
		l, ok := links[id]
		if !ok {
			t.Errorf("no link %s", id)
			continue
		}
		if l.Local == nil || l.Local.ClusterAddress.String() != w.local || l.Endpoint != w.endpoint {
			t.Errorf("link %s announces %v at %s, want %s at %s", id, l.Local, l.Endpoint, w.local, w.endpoint)
		}
	}
	if err := plan.LinkErrs["lab--d"]; err == nil || !strings.Contains(err.Error(), "endpoint host:port") {
		t.Errorf("inbound link lab--d: %v", err)
	}
	if len(plan.LinkErrs) != 1 {
		t.Errorf("link errors %v", plan.LinkErrs)
	}
	// Each mesh's probe and rules: C reaches A's address in lab (and its
	// probe responder there), not B's networks.
	c := links["lab--c"].Policy
	pkt := func(src, dst string) bridge.Packet {
		return bridge.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)}
	}
	probe := pkt("10.200.0.3", "10.200.0.1")
	probe.UDP, probe.SrcPort, probe.DstPort = true, 40000, 8779
	if c.Filter(pkt("10.200.0.3", "100.64.0.20")) != bridge.Pass || c.Filter(pkt("10.200.0.3", "100.64.16.20")) != bridge.Denied || c.Filter(probe) != bridge.Pass {
		t.Error("lab--c: want A's services and A's lab probe responder allowed, B's networks (another mesh) denied")
	}
	routes := map[string]string{}
	for _, e := range plan.Table {
		routes[e.Prefix.String()] = e.Link
	}
	for dst, l := range map[string]string{"100.64.16.0/20": "b", "192.168.0.12/32": "b", "100.64.32.0/20": "lab--c", "10.200.0.3/32": "lab--c"} {
		if routes[dst] != l {
			t.Errorf("route %s -> %q, want %s (table %v)", dst, routes[dst], l, routes)
		}
	}
}
