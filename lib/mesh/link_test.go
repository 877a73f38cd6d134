package mesh

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func TestParseLinkRejectsBadAttributesWithActionableMessages(t *testing.T) {
	yes := true
	tests := []struct {
		name    string
		kl      v1alpha1.KubeLink
		wantErr []string // every substring must be in the error
	}{
		{"missing address", link("b", 0, v1alpha1.KubeLinkSpec{Endpoint: "b.example.org"}), []string{"spec.clusterAddress: is required"}},
		{"address without prefix", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12", Endpoint: "b.org"}), []string{"with the mesh prefix length"}},
		{"address is network", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.0/24", Endpoint: "b.org"}), []string{"network address of the mesh"}},
		{"bad cidr", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/33", Endpoint: "b.org"}), []string{"spec.cidr", "is not a CIDR"}},
		{"cidr host bits", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.1/20", Endpoint: "b.org"}), []string{"did you mean 100.64.16.0/20"}},
		{"garbage endpoint", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org:http"}), []string{"spec.endpoint", "1 to 65535"}},
		{"no endpoint", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24"}), []string{"spec.endpoint: is required"}},
		{"bad egress", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", Egress: []string{"10.0.0.0/8", "nope"}}), []string{"spec.egress", `"nope"`}},
		{"bad ingress", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", Ingress: []string{"!x"}}), []string{"spec.ingress", "'!' denies"}},
		{"bad public key", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", PublicKey: "c2hvcnQ="}), []string{"spec.publicKey", "decodes to 5 bytes"}},
		{"psk without key", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", PresharedKey: pskOne}), []string{"presharedKey: needs publicKey"}},
		{"local with egress", link("a", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.11/24", Endpoint: "LocalLink", Egress: []string{"10.0.0.0/8"}}), []string{"not allowed on a LocalLink"}},
		{"local with gatewayLink", link("a", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.11/24", Endpoint: "LocalLink", GatewayLink: "c"}), []string{"gatewayLink: is not allowed on a LocalLink"}},
		{"own gateway", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", GatewayLink: "b"}), []string{"cannot be its own gateway link"}},
		{"bad dns ip", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", DNS: &v1alpha1.KubeLinkDNS{DNSIP: "x"}}), []string{"spec.dns.dnsIP"}},
		{"bad base domain", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", DNS: &v1alpha1.KubeLinkDNS{BaseDomain: "a_b", OmitDNSPropagation: &yes}}), []string{"spec.dns.baseDomain"}},
		// IPv4 only, per field: an IPv6 prefix once broke the shared iptables-restore of every link.
		{"ipv6 cluster address", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "fd00:50::2/64", Endpoint: "b.org"}), []string{"spec.clusterAddress", "not IPv4"}},
		{"ipv6 cidr", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "fd00:50::/64", Endpoint: "b.org"}), []string{"spec.cidr", "not IPv4"}},
		{"ipv6 egress", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", Egress: []string{"10.0.0.0/8", "fd00::/8"}}), []string{"spec.egress", `"fd00::/8" is not IPv4`}},
		{"ipv6 ingress", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", Ingress: []string{"!fd00::1"}}), []string{"spec.ingress", `"!fd00::1" is not IPv4`}},
		{"ipv6 dns ip", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org", DNS: &v1alpha1.KubeLinkDNS{DNSIP: "fd00::10"}}), []string{"spec.dns.dnsIP", "not IPv4"}},
		{"mesh too large", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "16.0.0.2/4", Endpoint: "b.org"}), []string{"spec.clusterAddress", "/16 to /31"}},
		{"mesh of everything", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "10.0.0.2/0", Endpoint: "b.org"}), []string{"spec.clusterAddress", "/16 to /31"}},
		{"mesh too small", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/32", Endpoint: "b.org"}), []string{"spec.clusterAddress", "/16 to /31"}},
		// kubelink://default/b is b of the default mesh: a mesh "default" would take its certificate.
		{"reserved mesh name", link("default--b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org"}), []string{"metadata.name", `mesh name "default" is reserved`, `name the link "b"`}},
		{"several problems at once", link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "x", CIDR: "y", Endpoint: "b.org"}), []string{"spec.clusterAddress", "spec.cidr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLink(&tt.kl, wgOpts)
			if err == nil {
				t.Fatalf("accepted, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseLinkAppliesDefaults(t *testing.T) {
	kl := peer("lab--b", "10.200.0.2/24", "100.64.16.0/20", "b.example.org", keyB)
	kl.Spec.Egress = []string{"10.20.0.0/16", "10.20.1.0/24", "10.30.0.7"}
	l, err := ParseLink(&kl, wgOpts)
	if err != nil {
		t.Fatal(err)
	}
	if l.Name.Mesh != "lab" || l.Name.Cluster != "b" {
		t.Errorf("name = %+v", l.Name)
	}
	if l.Endpoint.Port != 8777 {
		t.Errorf("default port = %d, want 8777", l.Endpoint.Port)
	}
	if got := prefixStrings(l.Egress); strings.Join(got, ",") != "10.20.0.0/16,10.30.0.7/32" {
		t.Errorf("egress = %v (covered entries must drop out)", got)
	}
	if l.DNS.IP != addr("100.64.16.10") || l.DNS.Domain != "cluster.local" || !l.DNSPropagated() {
		t.Errorf("dns defaults = %+v", l.DNS)
	}
	if l.MeshCIDR() != pfx("10.200.0.0/24") {
		t.Errorf("mesh cidr = %s", l.MeshCIDR())
	}

	lo := local("kubelink1", "192.168.0.11/24", "100.64.0.0/20")
	ll, err := ParseLink(&lo, wgOpts)
	if err != nil {
		t.Fatal(err)
	}
	if ll.DNS.Domain != "kubelink" || ll.DNS.IP.IsValid() {
		t.Errorf("LocalLink dns defaults = %+v, want mesh domain kubelink and no global DNS", ll.DNS)
	}
}

// The original rejected a foreign link without cidr or dns.dnsIP, and a
// LocalLink without dns.baseDomain, even with DNS propagation switched off.
func TestMissingDNSInformationDoesNotInvalidateLinks(t *testing.T) {
	kl := link("b", 0, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "b.org"})
	l, err := ParseLink(&kl, wgOpts)
	if err != nil {
		t.Fatalf("link without cidr and dns rejected: %v", err)
	}
	if l.DNSPropagated() {
		t.Error("a link without DNS IP cannot take part in DNS propagation")
	}
}

// Destinations are merged once at parse time and equal what a hand-built
// Link with the same networks merges on every call.
func TestDestinationsOfParsedAndHandBuiltLinksAgree(t *testing.T) {
	kl := link("b", 0, v1alpha1.KubeLinkSpec{
		ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20", Endpoint: "203.0.113.2:8777",
		PublicKey: "kZyZH0TNzMQEwGcm3ijk4MzAAbNbH86qv4wqfAzvOmc=",
		Egress:    []string{"10.1.0.0/24", "10.1.1.0/24", "100.64.16.0/21"},
	})
	l, err := ParseLink(&kl, ParseOptions{DefaultPort: 8777})
	if err != nil {
		t.Fatal(err)
	}
	// Contained prefixes go (100.64.16.0/21 is inside the service CIDR);
	// neighbours stay apart.
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.1.1.0/24"), netip.MustParsePrefix("100.64.16.0/20")}
	if got := l.Destinations(); !slices.Equal(got, want) {
		t.Errorf("parsed: %v, want %v", got, want)
	}
	hand := &Link{ServiceCIDR: l.ServiceCIDR, Egress: l.Egress}
	if got := hand.Destinations(); !slices.Equal(got, want) {
		t.Errorf("hand-built: %v, want %v", got, want)
	}
}

// spec.presharedKeySecret is read through ParseOptions.SecretKey (the
// broker's key Secret): a good key becomes the link's preshared key, a
// resolver's error or a key that does not parse makes the link invalid
// naming the field, and without a resolver (router, meshdns) the link
// parses with no key.
func TestParseLinkPresharedKeySecret(t *testing.T) {
	kl := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.example.org", keyB)
	kl.Spec.PresharedKeySecret = &v1alpha1.SecretKeySelector{Key: "psk-b"}
	secret := map[string]string{"psk-b": pskOne + "\n", "bad": "c2hvcnQ="}
	opts := wgOpts
	opts.SecretKey = func(ref v1alpha1.SecretKeySelector) (string, error) {
		if v, ok := secret[ref.Key]; ok {
			return v, nil
		}
		return "", errors.New(`Secret kubelink/wireguard has no key "` + ref.Key + `"`)
	}
	l, err := ParseLink(&kl, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := ParseKey(pskOne); l.PresharedKey != want {
		t.Errorf("preshared key %s, want the Secret's", l.PresharedKey)
	}
	for key, want := range map[string]string{"missing": `spec.presharedKeySecret: Secret kubelink/wireguard has no key "missing"`, "bad": "spec.presharedKeySecret: "} {
		kl.Spec.PresharedKeySecret.Key = key
		if _, err := ParseLink(&kl, opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %s: %v, want %q", key, err, want)
		}
	}
	kl.Spec.PresharedKeySecret.Key = "missing"
	if l, err := ParseLink(&kl, wgOpts); err != nil || l.PresharedKey != (Key{}) {
		t.Errorf("without a resolver: %v, key %s; want no error and no key", err, l.PresharedKey)
	}
	kl.Spec.PresharedKey = pskOne
	if _, err := ParseLink(&kl, opts); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both fields: %v", err)
	}
	kl.Spec.PresharedKey, kl.Spec.PublicKey = "", ""
	if _, err := ParseLink(&kl, opts); err == nil || !strings.Contains(err.Error(), "presharedKeySecret: needs publicKey") {
		t.Errorf("without publicKey: %v", err)
	}
}
