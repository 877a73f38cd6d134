package meshdns

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// renderAll is what the controller writes, as one text for a golden file.
func renderAll(t *testing.T, links []v1alpha1.KubeLink, o InputOptions) string {
	t.Helper()
	m := mesh.Build(links, mesh.ParseOptions{DefaultPort: 8777})
	in, warnings := BuildInput(m, links, o)
	out, err := Render(in)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	again, _ := Render(in)
	if again.Corefile != out.Corefile || string(again.Kubeconfig) != string(out.Kubeconfig) {
		t.Fatal("Render is not deterministic")
	}
	hook, err := CorednsCustom(in.Meshes, in.ClusterSetZone, netip.MustParseAddr("100.64.0.11"), 0)
	if err != nil {
		t.Fatalf("CorednsCustom: %v", err)
	}
	var b strings.Builder
	b.WriteString("### Corefile\n" + out.Corefile)
	b.WriteString("### kubeconfig\n" + string(out.Kubeconfig))
	b.WriteString("### coredns-custom " + HookKey + "\n" + hook)
	b.WriteString("### warnings\n")
	for _, w := range append(warnings, out.Warnings...) {
		b.WriteString(w + "\n")
	}
	return b.String()
}

func TestRenderGolden(t *testing.T) {
	dnsOpts := InputOptions{Mode: ModeDNS}
	kubeOpts := InputOptions{Mode: ModeKubernetes, Credentials: map[string]Credentials{
		"b":       {Token: "token-b", CA: []byte(testCA)},
		"blue--e": {Token: "token-e"},
	}}
	for _, tc := range []struct {
		name  string
		links []v1alpha1.KubeLink
		opts  InputOptions
	}{
		{"dns-one-cluster", []v1alpha1.KubeLink{localA(nil), peerB("Up")}, dnsOpts},
		{"dns-two-clusters", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Up", false)}, dnsOpts},
		{"dns-cluster-name-flag", []v1alpha1.KubeLink{localA(nil), peerB("Up")},
			InputOptions{Mode: ModeDNS, ClusterName: "alpha", ClusterDomain: "a.internal", DNS: netip.MustParseAddr("100.64.0.53")}},
		{"kubernetes", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Up", false), blueLocal(), blueE("Up")}, kubeOpts},
		{"omit-link", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Up", true)}, dnsOpts},
		{"omit-mesh", []v1alpha1.KubeLink{localA(&v1alpha1.KubeLinkDNS{OmitDNSPropagation: ptr(true)}), peerB("Up")}, dnsOpts},
		{"link-not-up", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Down", false), peerD("Idle"), blueLocal(), blueE("")}, dnsOpts},
		{"two-meshes", []v1alpha1.KubeLink{localA(nil), peerB("Up"), blueLocal(), blueE("Up")}, dnsOpts},
		{"global-dns", []v1alpha1.KubeLink{localA(&v1alpha1.KubeLinkDNS{DNSIP: "100.64.0.12", BaseDomain: "kubelink"}), peerB("Up")}, dnsOpts},
		{"none", nil, dnsOpts},
		// with the gate every link keeps its block whatever its state
		{"link-gate", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Down", false), peerD("Idle"), blueLocal(), blueE("")},
			InputOptions{Mode: ModeDNS, LinkGate: true}},
		{"link-gate-kubernetes-mode-ignores-it", []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Up", false), blueLocal(), blueE("Up")},
			InputOptions{Mode: ModeKubernetes, Credentials: kubeOpts.Credentials, LinkGate: true}},
		// the Multi-Cluster Services API's zone, from this cluster's ServiceImports
		{"clusterset", []v1alpha1.KubeLink{localA(nil), peerB("Up")},
			InputOptions{Mode: ModeDNS, LinkGate: true, ClusterSetZone: ClusterSetZone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, tc.name, renderAll(t, tc.links, tc.opts))
		})
	}
}

// A mesh domain that overlaps the clusterset zone is refused with a message
// naming both, rather than rendering two blocks that shadow each other.
func TestRenderRefusesAMeshDomainInTheClusterSetZone(t *testing.T) {
	for _, domain := range []string{"clusterset.local", "x.clusterset.local", "local"} {
		in := Input{Mode: ModeDNS, ClusterSetZone: ClusterSetZone, Meshes: []MeshInput{{Name: "default", Domain: domain}}}
		_, err := Render(in)
		if err == nil || !strings.Contains(err.Error(), "overlaps the clusterset zone") || !strings.Contains(err.Error(), domain) {
			t.Errorf("mesh domain %q: err %v, want one naming the overlap", domain, err)
		}
	}
	in := Input{Mode: ModeDNS, ClusterSetZone: "Bad Zone"}
	if _, err := Render(in); err == nil || !strings.Contains(err.Error(), "clusterset zone") {
		t.Errorf("zone with a blank: err %v", err)
	}
	if _, err := CorednsCustom(nil, "bad{zone", netip.MustParseAddr("100.64.0.11"), 0); err == nil {
		t.Error("CorednsCustom accepted a zone with a brace")
	}
}

// Links the model does not accept never reach the Corefile, even when a
// stale status still says Up.
func TestRenderIgnoresLinksNotAccepted(t *testing.T) {
	badDNS := peerC("Up", false)
	badDNS.Spec.DNS.DNSIP = "not-an-ip"
	outside := peerD("Up")
	outside.Spec.ClusterAddress = "192.168.7.14/24" // not in the mesh network
	orphan := klink("green--f", "Up", v1alpha1.KubeLinkSpec{Endpoint: "f.example.com", ClusterAddress: "172.16.0.6/24", CIDR: "100.66.0.0/20"})
	links := []v1alpha1.KubeLink{localA(nil), peerB("Up"), badDNS, outside, orphan}

	m := mesh.Build(links, mesh.ParseOptions{})
	for name, want := range map[string]string{"c": v1alpha1.StateInvalid, "d": v1alpha1.StateStale, "green--f": v1alpha1.StateStale} {
		if got := m.Verdicts[name].State; got != want {
			t.Fatalf("model verdict of %s = %q, want %q", name, got, want)
		}
	}
	got := renderAll(t, links, InputOptions{Mode: ModeDNS})
	want := renderAll(t, []v1alpha1.KubeLink{localA(nil), peerB("Up")}, InputOptions{Mode: ModeDNS})
	if got != want {
		t.Errorf("links not accepted changed the output:\n%s\nwant:\n%s", got, want)
	}
	for _, zone := range []string{"c.kubelink", "d.kubelink", "f.green"} {
		if strings.Contains(got, zone) {
			t.Errorf("output mentions %s", zone)
		}
	}
}

func TestRenderRejectsBadInput(t *testing.T) {
	ok := Cluster{Name: "b", Domain: "cluster.local", DNS: netip.MustParseAddrPort("100.64.16.10:53")}
	for name, in := range map[string]Input{
		"mode none":          {Mode: ModeNone},
		"zone injection":     {Mode: ModeDNS, Meshes: []MeshInput{{Domain: "kubelink {\n log\n}"}}},
		"upper-case cluster": {Mode: ModeDNS, Meshes: []MeshInput{{Domain: "kubelink", Clusters: []Cluster{{Name: "B", Domain: "cluster.local", DNS: ok.DNS}}}}},
		"no remote DNS":      {Mode: ModeDNS, Meshes: []MeshInput{{Domain: "kubelink", Clusters: []Cluster{{Name: "b", Domain: "cluster.local"}}}}},
		"no local DNS":       {Mode: ModeDNS, ClusterDomain: "cluster.local", Meshes: []MeshInput{{Domain: "kubelink", LocalCluster: "a"}}},
		"kubernetes no token": {Mode: ModeKubernetes, Meshes: []MeshInput{{Domain: "kubelink",
			Clusters: []Cluster{{Name: "b", Context: "b", APIServer: "https://100.64.16.1"}}}}},
		"upstream braces": {Mode: ModeDNS, Upstream: "1.1.1.1 }"},
	} {
		if _, err := Render(in); err == nil {
			t.Errorf("%s: Render accepted %+v", name, in)
		}
	}
	if _, err := Render(Input{Mode: ModeDNS, Meshes: []MeshInput{{Domain: "kubelink", Clusters: []Cluster{ok}}}}); err != nil {
		t.Errorf("valid input rejected: %v", err)
	}
}

// Two meshes with the same domain and a cluster of the same name would give
// CoreDNS a duplicate zone (it refuses to start); the first mesh wins.
func TestRenderDuplicateZoneKeepsFirstMesh(t *testing.T) {
	b1 := Cluster{Name: "b", Domain: "cluster.local", DNS: netip.MustParseAddrPort("100.64.16.10:53")}
	b2 := Cluster{Name: "b", Domain: "cluster.local", DNS: netip.MustParseAddrPort("100.70.0.10:53")}
	out, err := Render(Input{Mode: ModeDNS, Meshes: []MeshInput{
		{Name: "two", Domain: "kubelink", Clusters: []Cluster{b2}},
		{Name: "one", Domain: "kubelink", Clusters: []Cluster{b1}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.Corefile, "b.kubelink:8053 {"); n != 1 {
		t.Errorf("zone b.kubelink served %d times:\n%s", n, out.Corefile)
	}
	if n := strings.Count(out.Corefile, "\nkubelink:8053 {"); n != 1 {
		t.Errorf("mesh zone kubelink served %d times:\n%s", n, out.Corefile)
	}
	if !strings.Contains(out.Corefile, "forward . 100.64.16.10") || strings.Contains(out.Corefile, "100.70.0.10") {
		t.Errorf("mesh one (first by name) should win:\n%s", out.Corefile)
	}
	if len(out.Warnings) != 1 {
		t.Errorf("warnings = %q, want one", out.Warnings)
	}
}

func TestParseCredentials(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(testCA))
	for name, tc := range map[string]struct {
		data    map[string][]byte
		wantErr bool
	}{
		"pem":         {data: map[string][]byte{"token": []byte("t\n"), "certificate-authority-data": []byte(testCA)}},
		"base64 pem":  {data: map[string][]byte{"token": []byte("t"), "certificate-authority-data": []byte(b64)}},
		"no ca":       {data: map[string][]byte{"token": []byte("t")}},
		"no token":    {data: map[string][]byte{"certificate-authority-data": []byte(testCA)}, wantErr: true},
		"garbage ca":  {data: map[string][]byte{"token": []byte("t"), "certificate-authority-data": []byte("xyz")}, wantErr: true},
		"base64 junk": {data: map[string][]byte{"token": []byte("t"), "certificate-authority-data": []byte("aGVsbG8=")}, wantErr: true},
	} {
		c, err := ParseCredentials(tc.data)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", name, err, tc.wantErr)
			continue
		}
		if err == nil && c.Token != "t" {
			t.Errorf("%s: token %q", name, c.Token)
		}
		if err == nil && tc.data["certificate-authority-data"] != nil && string(c.CA) != testCA {
			t.Errorf("%s: CA %q", name, c.CA)
		}
	}
}

// A link whose apiAccess Secret is unusable is left out with the reason.
func TestBuildInputExplainsMissingCredentials(t *testing.T) {
	links := []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerD("Up"), peerC("Up", false)}
	links[3].Spec.APIAccess = &v1alpha1.SecretReference{Name: "c-access"}
	m := mesh.Build(links, mesh.ParseOptions{})
	in, warnings := BuildInput(m, links, InputOptions{Mode: ModeKubernetes,
		CredentialErrors: map[string]error{"c": errors.New("secret kubelink/c-access: no key \"token\"")}})
	if len(in.Meshes) != 1 || len(in.Meshes[0].Clusters) != 0 {
		t.Fatalf("clusters without credentials rendered: %+v", in.Meshes)
	}
	text := strings.Join(warnings, "\n")
	for _, want := range []string{"link b left out of DNS: apiAccess Secret b-access not found", "link c left out of DNS: apiAccess: secret kubelink/c-access", "link d left out of DNS: kubernetes mode needs spec.apiAccess"} {
		if !strings.Contains(text, want) {
			t.Errorf("warnings lack %q:\n%s", want, text)
		}
	}
}
