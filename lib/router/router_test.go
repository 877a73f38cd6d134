package router

import (
	"net/netip"
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
			routes, ok := Desired(m, Gateway(m, tt.links), node, "eth0", "vbroker")
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
	if routes, ok := Desired(mesh.Build(nil, mesh.ParseOptions{}), GatewayInfo{}, node, "eth0", ""); !ok || routes != nil {
		t.Error("without meshes every route must go")
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
