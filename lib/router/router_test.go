package router

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

func links(gateway string, pod ...string) []v1alpha1.KubeLink {
	st := v1alpha1.KubeLinkStatus{Gateway: gateway}
	if len(pod) > 0 {
		st.GatewayPod = pod[0]
	}
	return []v1alpha1.KubeLink{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24", CIDR: "100.64.0.0/20"},
			Status: st},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1alpha1.KubeLinkSpec{Endpoint: "b.org", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"},
			Status: v1alpha1.KubeLinkStatus{Gateway: "10.9.9.9"}}, // a foreign link's gateway is not used
	}
}

// gateways is Gateways with the test's node (10.10.0.0/16) and pod
// (10.110.0.0/16) networks.
func gateways(m *mesh.Model, links []v1alpha1.KubeLink) map[string]GatewayInfo {
	gws, _ := Gateways(m, links, netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.110.0.0/16"))
	return gws
}

// A gateway the LocalLink's status puts outside this cluster's networks is
// no gateway: the mesh gets no route to it, and the refusal says why.
func TestGatewaysOnlyInsideTheClusterNetworks(t *testing.T) {
	nodeNet, podNet := netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.110.0.0/16")
	for _, c := range []struct {
		name, gateway, pod string
		want               string // "" to be accepted, else in the refusal
	}{
		{"a node", "10.10.0.1", "", ""},
		{"a node and a pod", "10.10.0.1", "10.110.2.2", ""},
		{"node mode: the pod is the node", "10.10.0.1", "10.10.0.1", ""},
		{"a node outside the node network", "203.0.113.9", "", "status.gateway 203.0.113.9 is outside the node network 10.10.0.0/16"},
		{"cloud metadata", "169.254.169.254", "", "status.gateway 169.254.169.254 is outside"},
		{"a pod outside the pod network", "10.10.0.1", "203.0.113.7", "status.gatewayPod 203.0.113.7 is outside the pod network 10.110.0.0/16"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ls []v1alpha1.KubeLink
			if c.pod != "" {
				ls = links(c.gateway, c.pod)
			} else {
				ls = links(c.gateway)
			}
			m := mesh.Build(ls, mesh.ParseOptions{})
			gws, refused := Gateways(m, ls, nodeNet, podNet)
			_, ok := gws[m.Meshes[0].Name]
			switch {
			case c.want == "" && (!ok || len(refused) > 0):
				t.Errorf("refused %v, want the gateway", refused)
			case c.want != "" && (ok || len(refused) != 1 || !strings.Contains(refused[0], c.want) || !strings.Contains(refused[0], "LocalLink a")):
				t.Errorf("gateways %v, refused %v; want none, refused with %q", gws, refused, c.want)
			}
			if c.want != "" {
				// and no route towards it: the mesh keeps what it had (nothing here)
				if routes, _, ok := Desired(m, gws, nil, netip.MustParseAddr("10.10.0.3"), "eth0", nil); ok || len(routes) != 0 {
					t.Errorf("routes %v ok %v for a refused gateway", routes, ok)
				}
			}
		})
	}
}

func TestDesiredRoutesFollowTheGateway(t *testing.T) {
	node := netip.MustParseAddr("10.10.0.3")
	tests := []struct {
		name       string
		links      []v1alpha1.KubeLink
		wantOK     bool
		wantCount  int
		wantVia    string
		wantDevice string
	}{
		{"other node is gateway", links("10.10.0.1"), true, 2, "10.10.0.1", "eth0"},
		{"gateway moved", links("10.10.0.2"), true, 2, "10.10.0.2", "eth0"},
		{"other node is gateway in pod mode", links("10.10.0.1", "10.110.2.2"), true, 2, "10.10.0.1", "eth0"},
		{"this node is gateway", links("10.10.0.3"), true, 0, "", ""},
		{"this node hosts the broker pod", links("10.10.0.3", "10.110.2.2"), true, 2, "10.110.2.2", "vbroker"},
		{"gateway unknown keeps routes", links(""), false, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mesh.Build(tt.links, mesh.ParseOptions{})
			routes, _, ok := Desired(m, gateways(m, tt.links), nil, node, "eth0", map[netip.Addr]string{netip.MustParseAddr("10.110.2.2"): "vbroker"})
			if ok != tt.wantOK || len(routes) != tt.wantCount {
				t.Fatalf("routes %v ok %v, want %d routes ok %v", routes, ok, tt.wantCount, tt.wantOK)
			}
			for _, r := range routes {
				if r.Gateway.String() != tt.wantVia || r.Device != tt.wantDevice {
					t.Errorf("route %+v, want via %s on %s", r, tt.wantVia, tt.wantDevice)
				}
				// Routes to the broker pod must be onlink: CNIs route to
				// pods with scope host, which makes a plain gateway void.
				if wantOnLink := tt.wantDevice == "vbroker"; r.OnLink != wantOnLink {
					t.Errorf("route %+v: OnLink %v, want %v", r, r.OnLink, wantOnLink)
				}
			}
		})
	}
	if routes, _, ok := Desired(mesh.Build(nil, mesh.ParseOptions{}), nil, nil, node, "eth0", nil); !ok || routes != nil {
		t.Error("without meshes every route must go")
	}
}

// Two meshes served by two brokers (--served-links): each mesh's networks
// go to the gateway its LocalLink names, and a mesh whose gateway is
// unknown keeps what was set for it while the other follows its own.
func TestDesiredRoutesPerMesh(t *testing.T) {
	node := netip.MustParseAddr("10.10.0.3")
	kl := func(name string, spec v1alpha1.KubeLinkSpec, gw string) v1alpha1.KubeLink {
		return v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec, Status: v1alpha1.KubeLinkStatus{Gateway: gw}}
	}
	items := func(gwDefault, gwLab string) []v1alpha1.KubeLink {
		return []v1alpha1.KubeLink{
			kl("a", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24", CIDR: "100.64.0.0/20"}, gwDefault),
			kl("b", v1alpha1.KubeLinkSpec{Endpoint: "b.org", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"}, ""),
			kl("lab--a", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "10.200.0.1/24", CIDR: "100.64.0.0/20"}, gwLab),
			kl("lab--c", v1alpha1.KubeLinkSpec{Endpoint: "c.org", ClusterAddress: "10.200.0.3/24", CIDR: "100.64.32.0/20", Egress: []string{"172.31.0.0/16"}}, ""),
		}
	}
	via := func(routes []mesh.Route) map[string]string {
		out := map[string]string{}
		for _, r := range routes {
			out[r.Dst.String()] = r.Gateway.String()
		}
		return out
	}
	links := items("10.10.0.1", "10.10.0.2")
	m := mesh.Build(links, mesh.ParseOptions{})
	if len(m.Meshes) != 2 {
		t.Fatalf("%d meshes: %v", len(m.Meshes), m.Verdicts)
	}
	routes, perMesh, ok := Desired(m, gateways(m, links), nil, node, "eth0", nil)
	want := map[string]string{
		"192.168.0.0/24": "10.10.0.1", "100.64.16.0/20": "10.10.0.1", // mesh default → broker on .1
		"10.200.0.0/24": "10.10.0.2", "100.64.32.0/20": "10.10.0.2", "172.31.0.0/16": "10.10.0.2", // mesh lab → broker on .2
	}
	if got := via(routes); !ok || !maps.Equal(got, want) {
		t.Errorf("routes %v ok %v, want %v", got, ok, want)
	}

	// lab's broker is gone (its LocalLink names no gateway): lab keeps what
	// it had, default follows its broker to .4.
	links = items("10.10.0.4", "")
	routes, _, ok = Desired(m, gateways(m, links), perMesh, node, "eth0", nil)
	want["192.168.0.0/24"], want["100.64.16.0/20"] = "10.10.0.4", "10.10.0.4"
	if got := via(routes); !ok || !maps.Equal(got, want) {
		t.Errorf("lab gateway unknown: routes %v ok %v, want %v", got, ok, want)
	}
	// The same without routes set before (router restart): keep everything.
	if _, _, ok := Desired(m, gateways(m, links), nil, node, "eth0", nil); ok {
		t.Error("a mesh with unknown gateway and nothing set before must keep the installed routes (ok=false)")
	}
	// This node runs lab's broker (node mode): no routes for lab here.
	links = items("10.10.0.1", node.String())
	routes, _, _ = Desired(m, gateways(m, links), nil, node, "eth0", nil)
	if got := via(routes); len(got) != 2 || got["10.200.0.0/24"] != "" {
		t.Errorf("this node is lab's gateway: routes %v, want only default's two", got)
	}
}

func TestValidate(t *testing.T) {
	c := Config{NodeCIDR: netip.MustParsePrefix("10.10.0.0/24"), Tunnel: TunnelNone}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{TunnelVXLAN, TunnelIPIP} {
		c.Tunnel = ok
		if err := c.Validate(); err != nil {
			t.Errorf("--tunnel=%s: %v", ok, err)
		}
	}
	for _, bad := range []Config{{Tunnel: TunnelNone}, {NodeCIDR: c.NodeCIDR, Tunnel: "gre"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
