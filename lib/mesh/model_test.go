package mesh

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// verdicts renders the verdict of every link as "state: message".
func verdicts(m *Model) map[string]string {
	out := map[string]string{}
	for n, v := range m.Verdicts {
		out[n] = v.State + ": " + v.Message
	}
	return out
}

func TestBuildGivesInvalidForBadAttributesAndStaleForBadMeshSetup(t *testing.T) {
	gwUser := link("lab--e", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.5/24", GatewayLink: "lab--x"})
	tests := []struct {
		name  string
		links []v1alpha1.KubeLink
		want  map[string]string // link -> "State: message substring"; "" = accepted
	}{
		{
			name:  "valid pair",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": ""},
		},
		{
			// The old code called this Stale (the states were swapped).
			name:  "bad attribute is Invalid",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), peer("b", "192.168.0.12/24", "100.64.16.0/33", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": "Invalid: spec.cidr"},
		},
		{
			// The old code called this Invalid.
			name:  "missing LocalLink is Stale",
			links: []v1alpha1.KubeLink{peer("lab--b", "10.200.0.2/24", "", "b.org", keyB)},
			want:  map[string]string{"lab--b": `Stale: no LocalLink for mesh "lab": create a KubeLink lab--<this-cluster>`},
		},
		{
			name:  "address outside mesh is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), peer("b", "192.168.1.12/24", "", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": "Stale: clusterAddress 192.168.1.12/24 is not in the network 192.168.0.0/24"},
		},
		{
			name:  "different prefix length is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), peer("b", "192.168.0.12/16", "", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": "Stale: clusterAddress 192.168.0.12/16 is not in the network"},
		},
		{
			name:  "own address is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), peer("b", "192.168.0.11/24", "", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": "Stale: clusterAddress 192.168.0.11/24 is the local cluster's own address"},
		},
		{
			name: "duplicate address: newer is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), link("c", 5, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "c.org"}),
				peer("b", "192.168.0.12/24", "", "b.org", keyB)},
			want: map[string]string{"a": "", "b": "", "c": "Stale: clusterAddress 192.168.0.12/24 is already used by link b"},
		},
		{
			name: "overlapping service CIDRs: newer is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB),
				link("c", 9, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.16.0/21", Endpoint: "c.org", PublicKey: keyC})},
			want: map[string]string{"a": "", "b": "", "c": "Stale: 100.64.16.0/21 overlaps 100.64.16.0/20 of link b"},
		},
		{
			name:  "service CIDR overlapping the local one is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.0.0/16", "b.org", keyB)},
			want:  map[string]string{"a": "", "b": "Stale: 100.64.0.0/16 overlaps the local service CIDR 100.64.0.0/20"},
		},
		{
			name: "second LocalLink: the older one wins",
			links: []v1alpha1.KubeLink{link("new", 7, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24"}),
				link("old", 3, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24"})},
			want: map[string]string{"old": "", "new": `Stale: mesh "default" is already defined by the older LocalLink old`},
		},
		{
			name:  "overlapping mesh networks",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), link("lab--a", 4, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.200/16"})},
			want:  map[string]string{"a": "", "lab--a": "Stale: mesh network 192.168.0.0/16 overlaps 192.168.0.0/24"},
		},
		{
			name:  "unknown gateway link",
			links: []v1alpha1.KubeLink{local("lab--a", "10.200.0.1/24", ""), gwUser},
			want:  map[string]string{"lab--a": "", "lab--e": "Stale: gatewayLink lab--x does not exist"},
		},
		{
			name: "gateway link must not be local",
			links: []v1alpha1.KubeLink{local("lab--a", "10.200.0.1/24", ""),
				link("lab--e", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.5/24", GatewayLink: "lab--a"})},
			want: map[string]string{"lab--a": "", "lab--e": "Stale: gatewayLink lab--a is a LocalLink"},
		},
		{
			name: "gateway link chains are rejected",
			links: []v1alpha1.KubeLink{local("lab--a", "10.200.0.1/24", ""), peer("lab--b", "10.200.0.2/24", "", "b.org", keyB),
				link("lab--c", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.3/24", GatewayLink: "lab--b"}),
				link("lab--d", 3, v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.4/24", GatewayLink: "lab--c"})},
			want: map[string]string{"lab--a": "", "lab--b": "", "lab--c": "", "lab--d": "Stale: gatewayLink lab--c itself uses gatewayLink lab--b"},
		},
		{
			name: "gateway link that is itself stale",
			links: []v1alpha1.KubeLink{local("lab--a", "10.200.0.1/24", ""), peer("lab--b", "10.99.0.2/24", "", "b.org", keyB),
				link("lab--c", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.3/24", GatewayLink: "lab--b"})},
			want: map[string]string{"lab--a": "", "lab--b": "Stale: clusterAddress", "lab--c": "Stale: gatewayLink lab--b is not usable (Stale:"},
		},
		// A link may claim (and so send from) only its own networks: nothing
		// around a mesh, nothing in another mesh, no other member's address.
		{
			name:  "egress covering the mesh network is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), egressPeer("b", "192.168.0.12/24", "192.168.0.0/16")},
			want:  map[string]string{"a": "", "b": `Stale: 192.168.0.0/16 covers the network 192.168.0.0/24 of mesh "default"`},
		},
		{
			name:  "default route as egress is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), egressPeer("b", "192.168.0.12/24", "0.0.0.0/0")},
			want:  map[string]string{"a": "", "b": "Stale: 0.0.0.0/0 covers the network 192.168.0.0/24"},
		},
		{
			name: "egress inside another mesh is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), local("lab--a", "10.200.0.1/24", ""),
				egressPeer("b", "192.168.0.12/24", "10.200.0.77")},
			want: map[string]string{"a": "", "lab--a": "", "b": `Stale: 10.200.0.77/32 is inside the network 10.200.0.0/24 of mesh "lab", but the link belongs to mesh "default"`},
		},
		{
			name:  "egress with the local cluster address is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), egressPeer("b", "192.168.0.12/24", "192.168.0.8/29")},
			want:  map[string]string{"a": "", "b": "Stale: 192.168.0.8/29 contains the local cluster address 192.168.0.11"},
		},
		{
			name: "egress with another member's address is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""),
				link("c", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", Endpoint: "c.org", PublicKey: keyC}),
				egressPeer("b", "192.168.0.12/24", "192.168.0.13")},
			want: map[string]string{"a": "", "c": "", "b": "Stale: 192.168.0.13/32 contains the cluster address 192.168.0.13 of link c"},
		},
		{
			name: "member inside an older link's egress is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), egressPeer("b", "192.168.0.12/24", "192.168.0.100"),
				link("c", 9, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.100/24", Endpoint: "c.org", PublicKey: keyC})},
			want: map[string]string{"a": "", "b": "", "c": "Stale: clusterAddress 192.168.0.100/24 is inside 192.168.0.100/32, which link b claims"},
		},
		{
			name:  "egress inside the own mesh (MeshService addresses) is accepted",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), egressPeer("b", "192.168.0.12/24", "192.168.0.100")},
			want:  map[string]string{"a": "", "b": ""},
		},
		{
			name:  "LocalLink service CIDR inside its mesh is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", "192.168.0.128/25")},
			want:  map[string]string{"a": "Stale: cidr 192.168.0.128/25 overlaps the mesh network 192.168.0.0/24"},
		},
		{
			name:  "mesh network over another mesh's service CIDR is Stale",
			links: []v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), link("lab--a", 4, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "100.64.1.1/24"})},
			want:  map[string]string{"a": "", "lab--a": "Stale: mesh network 100.64.1.0/24 overlaps the service CIDR 100.64.0.0/20 (LocalLink a)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(tt.links, wgOpts)
			got := verdicts(m)
			if len(got) != len(tt.want) {
				t.Errorf("got verdicts for %d links, want %d: %v", len(got), len(tt.want), got)
			}
			for name, want := range tt.want {
				g, ok := got[name]
				if !ok {
					t.Errorf("%s: no verdict", name)
					continue
				}
				if want == "" {
					if g != ": " {
						t.Errorf("%s: %q, want accepted", name, g)
					}
				} else if !strings.HasPrefix(g, want[:strings.Index(want, ":")+1]) || !strings.Contains(g, want[strings.Index(want, ":")+2:]) {
					t.Errorf("%s: %q, want %q", name, g, want)
				}
			}
		})
	}
}

// Verdicts and meshes must not depend on the order links arrive in (the
// original picked the stale-mesh replacement arbitrarily and its sort
// comparators compared an element with itself).
func TestBuildIsIndependentOfInputOrder(t *testing.T) {
	links := []v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		link("a2", 5, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.99/24"}),
		peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB),
		link("c", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", Endpoint: "c.org", PublicKey: keyC}),
		link("d", 2, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", Endpoint: "d.org"}),
		local("lab--a", "10.200.0.1/24", ""),
		peer("lab--b", "10.200.0.2/24", "100.64.16.0/20", "b.org", keyB),
		peer("lab--z", "10.200.0.26/24", "100.64.48.0/20", "z.org", keyC),
	}
	ref := Build(links, wgOpts)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := append([]v1alpha1.KubeLink(nil), links...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := Build(shuffled, wgOpts)
		if !reflect.DeepEqual(verdicts(got), verdicts(ref)) {
			t.Fatalf("permutation %d: verdicts %v differ from %v", i, verdicts(got), verdicts(ref))
		}
		if !reflect.DeepEqual(got.Meshes, ref.Meshes) {
			t.Fatalf("permutation %d: meshes differ", i)
		}
	}
	// c and d were created at the same time with the same address: the name decides.
	if v := ref.Verdicts["d"]; v.State != v1alpha1.StateStale {
		t.Errorf("d = %+v, want Stale (c sorts first at equal age)", v)
	}
	// The same peer (same key) may repeat its service CIDR in another mesh.
	if v := ref.Verdicts["lab--b"]; !v.Accepted() {
		t.Errorf("lab--b = %+v, want accepted (same peer as b)", v)
	}
}

// For an unknown peer that says hello, the mesh is found from its cluster
// address; the original used the hello's service CIDR.
func TestMeshForAddressUsesTheClusterAddress(t *testing.T) {
	m := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), local("lab--a", "10.200.0.1/24", "")}, wgOpts)
	ms, ok := m.MeshForAddress(addr("10.200.0.77"))
	if !ok || ms.Name != "lab" {
		t.Fatalf("MeshForAddress(10.200.0.77) = %v, %v; want mesh lab", ms, ok)
	}
	if _, ok := m.MeshForAddress(addr("100.64.16.1")); ok {
		t.Error("a service CIDR address must not select a mesh")
	}
	if _, ok := m.LinkForAddress(addr("10.200.0.77")); ok {
		t.Error("unknown address resolved to a link")
	}
}

// egressPeer is a WireGuard peer without service CIDR and one egress entry.
func egressPeer(name, addr, egress string) v1alpha1.KubeLink {
	return link(name, 1, v1alpha1.KubeLinkSpec{ClusterAddress: addr, Endpoint: name + ".org", PublicKey: keyB, Egress: []string{egress}})
}

// A foreign link may not claim the local cluster's own networks (#34): its
// cidr or egress overlapping the node or pod network, loopback or
// link-local is Stale, naming both networks; without the reserved
// networks (ParseOptions) the same links are accepted.
func TestLinksClaimingTheClusterNetworksAreStale(t *testing.T) {
	opts := ParseOptions{Reserved: ReservedNetworks(netip.MustParsePrefix("172.18.0.0/16"), netip.MustParsePrefix("10.110.0.0/16"))}
	withEgress := func(name, addr, egress string) v1alpha1.KubeLink {
		l := peer(name, addr, "", name+".org", "")
		l.Spec.Egress = []string{egress}
		return l
	}
	links := []v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		peer("b", "192.168.0.12/24", "172.18.200.0/24", "b.org", keyB),
		peer("c", "192.168.0.13/24", "10.110.5.0/24", "c.org", keyC),
		withEgress("d", "192.168.0.14/24", "169.254.169.254/32"),
		peer("f", "192.168.0.16/24", "100.64.32.0/20", "f.org", ""),
		withEgress("e", "192.168.0.15/24", "10.0.0.0/8"),
	}
	want := map[string]string{
		"a": "", "f": "",
		"b": "Stale: 172.18.200.0/24 overlaps the node network 172.18.0.0/16 of this cluster",
		"c": "Stale: 10.110.5.0/24 overlaps the pod network 10.110.0.0/16 of this cluster",
		"d": "Stale: 169.254.169.254/32 overlaps the link-local network 169.254.0.0/16 of this cluster",
		"e": "Stale: 10.0.0.0/8 overlaps the pod network 10.110.0.0/16 of this cluster",
	}
	got := verdicts(Build(links, opts))
	for n, w := range want {
		if (w == "") != (got[n] == ": ") || !strings.Contains(got[n], w) {
			t.Errorf("%s: %q, want %q", n, got[n], w)
		}
	}
	// (e, which covers c's network, is left out: without the reserved
	// networks it would conflict with c.)
	for n, v := range verdicts(Build(links[:5], ParseOptions{})) {
		if v != ": " {
			t.Errorf("without reserved networks %s: %q, want accepted", n, v)
		}
	}
}
