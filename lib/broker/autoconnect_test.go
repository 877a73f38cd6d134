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

func kubeLink(name, addr, cidr, endpoint string) v1alpha1.KubeLink {
	return v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: addr, CIDR: cidr, Endpoint: endpoint}}
}

func TestAutoLinkFromHello(t *testing.T) {
	local := kubeLink("lab--a", "192.168.0.11/24", "100.64.0.0/20", v1alpha1.EndpointLocalLink)
	existing := []v1alpha1.KubeLink{local, kubeLink("lab--c", "192.168.0.13/24", "100.64.32.0/20", "c.example:8088")}
	m := mesh.Build(existing, mesh.ParseOptions{DefaultPort: 8088})
	if len(m.Meshes) != 1 {
		t.Fatalf("meshes %+v", m.Meshes)
	}
	ms := m.Meshes[0]
	reserved := []netip.Prefix{netip.MustParsePrefix("172.18.0.0/16"), netip.MustParsePrefix("10.110.0.0/16"), netip.MustParsePrefix("169.254.0.0/16")}
	peer := func(ids []string, addr, cidr string, port uint16) bridge.UnknownPeer {
		h := bridge.Hello{MinVersion: 1, MaxVersion: 1, ClusterAddress: netip.MustParsePrefix(addr), Port: port}
		if cidr != "" {
			h.ServiceCIDR = netip.MustParsePrefix(cidr)
		}
		// As a certificate gives them: the URIs among the names are its URI SANs.
		var uris []string
		for _, id := range ids {
			if strings.Contains(id, "://") {
				uris = append(uris, id)
			}
		}
		return bridge.UnknownPeer{Identities: ids, URIs: uris, Remote: netip.MustParseAddrPort("172.30.0.21:40000"), Hello: h}
	}
	// kubelink://lab/b as the common name (or a DNS name) only: no identity.
	cnOnly := peer([]string{"kubelink://lab/b", "172.30.0.21"}, "192.168.0.12/24", "", 8088)
	cnOnly.URIs = nil

	kl, err := AutoLink(ms, peer([]string{"172.30.0.21", "kubelink://default/x", "kubelink://lab/b"}, "192.168.0.12/24", "100.64.16.0/20", 9443), 8088, 16, existing, reserved)
	if err != nil {
		t.Fatal(err)
	}
	if kl.Name != "lab--b" || kl.Spec.ClusterAddress != "192.168.0.12/24" || kl.Spec.CIDR != "100.64.16.0/20" ||
		kl.Spec.Endpoint != "172.30.0.21:9443" || kl.Annotations[AnnotationAutoConnected] != "172.30.0.21,kubelink://default/x,kubelink://lab/b" {
		t.Errorf("got %s %+v %v", kl.Name, kl.Spec, kl.Annotations)
	}
	if l, _ := mesh.ParseLink(kl, mesh.ParseOptions{DefaultPort: 8088}); l.PeerIdentity() != "kubelink://lab/b" {
		t.Errorf("the created link pins %s, want the certificate's identity kubelink://lab/b", l.PeerIdentity())
	}
	kl, err = AutoLink(ms, peer([]string{"kubelink://lab/b"}, "192.168.0.12/24", "", 0), 8088, 16, existing, reserved)
	if err != nil || kl.Name != "lab--b" || kl.Spec.Endpoint != "172.30.0.21:8088" || kl.Spec.CIDR != "" {
		t.Errorf("named peer: %v %+v", err, kl)
	}

	for _, c := range []struct {
		name string
		p    bridge.UnknownPeer
		want string
	}{
		{"the identity as a common name only", cnOnly, "no identity kubelink://lab/<cluster> for mesh \"lab\" as a URI SAN"},
		{"no identity for the mesh", peer([]string{"b.example.org", "172.30.0.21", "kubelink://default/b"}, "192.168.0.12/24", "", 8088), "no identity kubelink://lab/<cluster>"},
		{"service CIDR over the node network", peer([]string{"kubelink://lab/f"}, "192.168.0.15/24", "172.18.0.0/24", 8088), "overlaps the local network 172.18.0.0/16"},
		{"service CIDR over cloud metadata", peer([]string{"kubelink://lab/f"}, "192.168.0.15/24", "169.254.0.0/16", 8088), "overlaps the local network 169.254.0.0/16"},
		{"outside the mesh", peer(nil, "10.1.0.12/24", "", 8088), "not in the mesh"},
		{"other prefix length", peer(nil, "192.168.0.12/16", "", 8088), "not in the mesh"},
		{"our own address", peer(nil, "192.168.0.11/24", "", 8088), "this cluster's"},
		{"existing name", peer([]string{"kubelink://lab/c"}, "192.168.0.14/24", "", 8088), "KubeLink lab--c exists"},
		{"existing address", peer([]string{"kubelink://lab/d"}, "192.168.0.13/24", "", 8088), "lab--c has cluster address"},
		{"service CIDR larger than the limit", peer([]string{"kubelink://lab/f"}, "192.168.0.15/24", "100.0.0.0/12", 8088), "its service CIDR 100.0.0.0/12 is larger than /16 (--auto-connect-largest-cidr)"},
		{"overlapping service CIDR", peer([]string{"kubelink://lab/e"}, "192.168.0.14/24", "100.64.0.0/16", 8088), "overlaps the local service CIDR"},
	} {
		if kl, err := AutoLink(ms, c.p, 8088, 16, existing, reserved); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %+v, %v; want an error with %q", c.name, kl, err, c.want)
		}
	}
}

// A proposal routes nothing until approved, and a denied identity gets none.
func TestAutoLinkIsAProposal(t *testing.T) {
	local := kubeLink("a", "192.168.0.11/24", "100.64.0.0/20", v1alpha1.EndpointLocalLink)
	m := mesh.Build([]v1alpha1.KubeLink{local}, mesh.ParseOptions{DefaultPort: 8088})
	p := bridge.UnknownPeer{Identities: []string{"kubelink://default/b"}, URIs: []string{"kubelink://default/b"}, Remote: netip.MustParseAddrPort("172.30.0.21:40000"),
		Hello: bridge.Hello{MinVersion: 1, MaxVersion: 1, ClusterAddress: netip.MustParsePrefix("192.168.0.12/24"), ServiceCIDR: netip.MustParsePrefix("100.64.16.0/20")}}
	kl, err := AutoLink(m.Meshes[0], p, 8088, 16, []v1alpha1.KubeLink{local}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pending := mesh.Build([]v1alpha1.KubeLink{local, *kl}, mesh.ParseOptions{DefaultPort: 8088})
	if v := pending.Verdicts["b"]; v.State != v1alpha1.StateStale || !strings.Contains(v.Message, "not approved") || !strings.Contains(v.Message, "kubectl annotate kubelink b kubelink.mandelsoft.org/approved=true") {
		t.Errorf("proposal verdict %+v, want Stale until approved", v)
	}
	if len(pending.RoutedNetworks()) != 1 {
		t.Errorf("a proposal is routed: %v", pending.RoutedNetworks())
	}
	kl.Annotations[v1alpha1.AnnotationApproved] = "true"
	if v := mesh.Build([]v1alpha1.KubeLink{local, *kl}, mesh.ParseOptions{DefaultPort: 8088}).Verdicts["b"]; !v.Accepted() {
		t.Errorf("approved: %+v", v)
	}
	local.Annotations = map[string]string{v1alpha1.AnnotationAutoConnectDeny: "kubelink://default/x, kubelink://default/b"}
	if _, err := AutoLink(m.Meshes[0], p, 8088, 16, []v1alpha1.KubeLink{local}, nil); err == nil || !strings.Contains(err.Error(), "deny list") {
		t.Errorf("denied identity: %v", err)
	}
}
