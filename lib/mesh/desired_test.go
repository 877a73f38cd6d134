package mesh

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// twoMeshes: default mesh with peers b and c (c reached through b), mesh lab
// with peer b again (same key) and z.
func twoMeshes() []v1alpha1.KubeLink {
	b := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.example.org:8777", keyB)
	b.Spec.Egress = []string{"10.20.0.0/16", "192.168.0.100"}
	return []v1alpha1.KubeLink{
		local("a", "192.168.0.11/24", "100.64.0.0/20"),
		b,
		link("c", 3, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", GatewayLink: "b"}),
		local("lab--a", "10.200.0.1/24", "100.64.0.0/20"),
		peer("lab--b", "10.200.0.2/24", "100.64.16.0/20", "b.example.org:8777", keyB),
		peer("lab--z", "10.200.0.26/24", "100.64.48.0/20", "Inbound", keyC),
	}
}

func TestRoutesForGatewayAndNodes(t *testing.T) {
	m := Build(twoMeshes(), wgOpts)
	wantNets := pfxs("10.20.0.0/16", "10.200.0.0/24", "100.64.16.0/20", "100.64.32.0/20", "100.64.48.0/20", "192.168.0.0/24")
	if got := m.RoutedNetworks(); !slices.Equal(got, wantNets) {
		t.Fatalf("RoutedNetworks = %v, want %v (mesh CIDRs plus remote networks outside them)", got, wantNets)
	}
	gw := m.GatewayRoutes("kubelink")
	if len(gw) != len(wantNets) || gw[0] != (Route{Dst: pfx("10.20.0.0/16"), Device: "kubelink"}) {
		t.Errorf("GatewayRoutes = %v", gw)
	}
	nodes := m.NodeRoutes(addr("10.250.0.5"), "eth0")
	for i, r := range nodes {
		if r.Gateway != addr("10.250.0.5") || r.Device != "eth0" || r.Dst != wantNets[i] {
			t.Errorf("NodeRoutes[%d] = %+v", i, r)
		}
	}
	if len(m.NodeRoutes(addr("2001:db8::1"), "eth0")) != 0 {
		t.Error("IPv4 networks must not be routed via an IPv6 gateway")
	}
	if m.NodeRoutes(addr("10.250.0.5"), "eth0") == nil || m.NodeRoutes(netip.Addr{}, "eth0") != nil {
		t.Error("no gateway known must mean no node routes")
	}

	lonely := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20")}, wgOpts)
	if got := lonely.RoutedNetworks(); !slices.Equal(got, pfxs("192.168.0.0/24")) {
		t.Errorf("LocalLink only: %v, want only the mesh CIDR (the local service CIDR is never routed into the mesh)", got)
	}
}

func TestWireGuardPeersGroupByKeyAndCarryTransit(t *testing.T) {
	m := Build(twoMeshes(), wgOpts)
	peers, errs := m.WireGuardPeers(DefaultKeepalive)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(peers) != 2 {
		t.Fatalf("got %d peers, want 2 (b in two meshes is one peer): %+v", len(peers), peers)
	}
	byKey := map[string]Peer{}
	for _, p := range peers {
		byKey[p.PublicKey.String()] = p
	}
	b := byKey[keyB]
	// c uses b as gatewayLink: its address and CIDR ride on b's peer (the
	// original never filled them in).
	wantB := pfxs("10.20.0.0/16", "10.200.0.2/32", "100.64.16.0/20", "100.64.32.0/20", "192.168.0.12/32", "192.168.0.13/32", "192.168.0.100/32")
	if !slices.Equal(b.AllowedIPs, wantB) {
		t.Errorf("b AllowedIPs = %v, want %v", b.AllowedIPs, wantB)
	}
	if !slices.Equal(b.Links, []string{"b", "c", "lab--b"}) {
		t.Errorf("b links = %v", b.Links)
	}
	if b.Endpoint.String() != "b.example.org:8777" || b.Keepalive != 21*time.Second {
		t.Errorf("b endpoint/keepalive = %s/%s", b.Endpoint, b.Keepalive)
	}
	z := byKey[keyC]
	if z.Endpoint.Kind != EndpointInbound {
		t.Errorf("Inbound peer got endpoint %+v", z.Endpoint)
	}
	if !slices.Equal(z.AllowedIPs, pfxs("10.200.0.26/32", "100.64.48.0/20")) {
		t.Errorf("z AllowedIPs = %v", z.AllowedIPs)
	}
}

func TestWireGuardPeerConflictsAreLinkErrors(t *testing.T) {
	pskA := peer("b", "192.168.0.12/24", "", "b.org", keyB)
	pskA.Spec.PresharedKey = pskOne
	pskB := peer("lab--b", "10.200.0.2/24", "", "b.org", keyB)
	pskB.Spec.PresharedKey = pskTwo
	otherEP := peer("lab--b", "10.200.0.2/24", "", "elsewhere.org", keyB)
	noKey := link("c", 1, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", Endpoint: "c.org"})
	base := []v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), local("lab--a", "10.200.0.1/24", "")}
	tests := []struct {
		name  string
		links []v1alpha1.KubeLink
		want  map[string]string
	}{
		{"preshared keys differ", []v1alpha1.KubeLink{pskA, pskB}, map[string]string{"b": "not the presharedKey", "lab--b": "not the presharedKey"}},
		{"endpoints differ", []v1alpha1.KubeLink{peer("b", "192.168.0.12/24", "", "b.org", keyB), otherEP}, map[string]string{"b": "different endpoints", "lab--b": "different endpoints"}},
		{"no public key", []v1alpha1.KubeLink{noKey}, map[string]string{"c": "spec.publicKey is required in WireGuard mode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(append(slices.Clone(base), tt.links...), wgOpts)
			peers, errs := m.WireGuardPeers(DefaultKeepalive)
			if len(peers) != 0 {
				t.Errorf("peers = %+v, want none", peers)
			}
			if len(errs) != len(tt.want) {
				t.Errorf("errors = %v, want %d", errs, len(tt.want))
			}
			for n, w := range tt.want {
				if errs[n] == nil || !strings.Contains(errs[n].Error(), w) {
					t.Errorf("%s: error %v, want %q", n, errs[n], w)
				}
			}
		})
	}
}

func TestSNATRulesOneMeshAndSeveral(t *testing.T) {
	one := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)}, wgOpts)
	rs := one.SNATRules(NATOptions{Device: "kubelink"})
	nt := chainName("NT", "192.168.0.0/24")
	want := RuleSet{
		Hooks: []Hook{{Table: "nat", Chain: "POSTROUTING", Rule: []string{"-m", "comment", "--comment", "kubelink snat rules", "-j", "KUBELINK-NAT"}}},
		Chains: []Chain{
			{Table: "nat", Name: "KUBELINK-NAT", Rules: [][]string{{"!", "-o", "kubelink", "-j", "RETURN"}, {"-j", nt}}},
			{Table: "nat", Name: nt, Rules: [][]string{
				{"-s", "192.168.0.0/24", "-j", "RETURN"},
				{"-d", "100.64.16.0/20", "-j", "SNAT", "--to-source", "192.168.0.11"},
				{"-d", "192.168.0.0/24", "-j", "SNAT", "--to-source", "192.168.0.11"},
			}},
		},
	}
	if !reflect.DeepEqual(rs, want) {
		t.Errorf("one mesh:\n got %+v\nwant %+v", rs, want)
	}

	several := Build(twoMeshes(), wgOpts).SNATRules(NATOptions{Device: "kubelink", PodInterface: "eth0"})
	if len(several.Chains) != 3 {
		t.Fatalf("several meshes: %d chains, want top + one per mesh", len(several.Chains))
	}
	if got := several.Chains[0].Rules[0]; !slices.Equal(got, []string{"-o", "eth0", "-j", "MASQUERADE"}) {
		t.Errorf("pod mode first rule = %v", got)
	}
	srcOf := map[string]string{}
	for _, c := range several.Chains[1:] {
		for _, r := range c.Rules {
			if r[len(r)-2] == "--to-source" {
				srcOf[r[1]] = r[len(r)-1]
			}
		}
	}
	// Each destination is SNATed to the address of the mesh it belongs to.
	for dst, src := range map[string]string{"10.200.0.0/24": "10.200.0.1", "100.64.48.0/20": "10.200.0.1", "192.168.0.0/24": "192.168.0.11", "100.64.32.0/20": "192.168.0.11", "10.20.0.0/16": "192.168.0.11"} {
		if srcOf[dst] != src {
			t.Errorf("SNAT for %s = %q, want %s", dst, srcOf[dst], src)
		}
	}

	if rs := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "")}, wgOpts).SNATRules(NATOptions{Device: "kubelink"}); len(rs.Chains)+len(rs.Hooks) != 0 {
		t.Errorf("no peers: %+v, want empty rule set (cleanup)", rs)
	}
}

// TestSNATScopeCoversWhatTheRulesRewrite: the scope DropUnNATed uses is the
// rules' own: a source outside the mesh to a mesh destination.
func TestSNATScopeCoversWhatTheRulesRewrite(t *testing.T) {
	one := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)}, wgOpts)
	scopes := one.SNATScopes()
	if len(scopes) != 1 || scopes[0].Source != netip.MustParseAddr("192.168.0.11") {
		t.Fatalf("scopes = %+v, want one with source 192.168.0.11", scopes)
	}
	a := netip.MustParseAddr
	for _, tt := range []struct {
		src, dst string
		want     bool
	}{
		{"10.110.1.2", "100.64.16.20", true},    // a pod to b's services
		{"10.110.1.2", "192.168.0.12", true},    // a pod to b's cluster address
		{"192.168.0.11", "100.64.16.20", false}, // already a mesh source
		{"192.168.0.13", "100.64.16.20", false}, // transit keeps its source
		{"10.110.1.2", "100.64.0.20", false},    // our own service network
		{"10.110.1.2", "8.8.8.8", false},
	} {
		if got := scopes[0].Covers(a(tt.src), a(tt.dst)); got != tt.want {
			t.Errorf("Covers(%s → %s) = %v, want %v", tt.src, tt.dst, got, tt.want)
		}
	}
	if s := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "")}, wgOpts).SNATScopes(); len(s) != 0 {
		t.Errorf("no peers: scopes %+v, want none", s)
	}
}

func TestChainNamesFitIptablesAndAreOurs(t *testing.T) {
	for _, key := range []string{"", "x", strings.Repeat("very-long-mesh-name--", 20)} {
		for _, kind := range []string{"NT", "FW", "MS", "EP"} {
			n := chainName(kind, key)
			if len(n) > 28 || !strings.HasPrefix(n, ChainPrefix) {
				t.Errorf("chainName(%s, %q) = %q", kind, key, n)
			}
		}
	}
	if chainName("FW", "a") == chainName("FW", "b") {
		t.Error("different keys share a chain name")
	}
}
