package meshdns

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// advertise sets what the broker writes from the peer's bridge HELLO.
func advertise(kl v1alpha1.KubeLink, domain, ip string) v1alpha1.KubeLink {
	kl.Status.Advertised = &v1alpha1.AdvertisedInfo{ClusterDomain: domain, DNSIP: ip, Port: 8088}
	return kl
}

// Where a remote cluster's DNS comes from: spec.dns, then the peer's
// advertisement, then the defaults (service CIDR + 10, cluster.local),
// field by field.
func TestRemoteDNSPrecedence(t *testing.T) {
	noCIDR := peerD(v1alpha1.StateUp)
	noCIDR.Spec.CIDR = ""
	for _, tc := range []struct {
		name       string
		kl         v1alpha1.KubeLink
		wantIP     string // "" = invalid
		wantDomain string
		wantErr    string
	}{
		{"defaults", peerD("Up"), "100.64.48.10", "cluster.local", ""},
		{"advertised", advertise(peerD("Up"), "d.internal", "100.64.48.53"), "100.64.48.53", "d.internal", ""},
		{"advertised domain only", advertise(peerD("Up"), "d.internal", ""), "100.64.48.10", "d.internal", ""},
		{"advertised IP only", advertise(peerD("Up"), "", "100.64.48.53"), "100.64.48.53", "cluster.local", ""},
		{"advertised domain normalized", advertise(peerD("Up"), "D.Internal.", ""), "100.64.48.10", "d.internal", ""},
		{"spec wins over advertised", advertise(peerC("Up", false), "x.internal", "100.64.32.99"), "100.64.32.53", "c.internal", ""},
		{"spec dnsIP, advertised domain", withDNS(advertise(peerD("Up"), "d.internal", "100.64.48.53"), &v1alpha1.KubeLinkDNS{DNSIP: "100.64.48.60"}),
			"100.64.48.60", "d.internal", ""},
		{"spec baseDomain, advertised IP", withDNS(advertise(peerD("Up"), "d.internal", "100.64.48.53"), &v1alpha1.KubeLinkDNS{BaseDomain: "Spec.Local"}),
			"100.64.48.53", "spec.local", ""},
		// Only inside what the link routes: a peer cannot have the zone's
		// queries sent elsewhere (here: nowhere routed, or this cluster's own DNS).
		{"no cidr: advertised IP outside", advertise(noCIDR, "", "100.64.48.53"), "", "", "the advertised DNS IP 100.64.48.53 is outside the link's networks (cluster address 192.168.0.14)"},
		{"advertised IP outside the cidr", advertise(peerD("Up"), "", "10.96.0.10"), "", "", "10.96.0.10 is outside the link's networks (cluster address 192.168.0.14, 100.64.48.0/20)"},
		{"advertised cloud metadata", advertise(peerD("Up"), "", "169.254.169.254"), "", "", "set spec.dns.dnsIP if the peer's DNS really is elsewhere"},
		{"advertised IP in an egress network", advertise(withEgress(peerD("Up"), "10.200.0.0/24"), "", "10.200.0.53"), "10.200.0.53", "cluster.local", ""},
		{"advertised at the cluster address", advertise(peerD("Up"), "", "192.168.0.14"), "192.168.0.14", "cluster.local", ""},
		{"no cidr, nothing advertised", noCIDR, "", "cluster.local", ""},
		{"bad advertised IP", advertise(peerD("Up"), "", "100.64.48.x"), "", "", "advertised DNS IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			links := []v1alpha1.KubeLink{localA(nil), tc.kl}
			m := mesh.Build(links, mesh.ParseOptions{})
			l, ok := m.Link(tc.kl.Name)
			if !ok {
				t.Fatalf("model does not accept %s: %+v", tc.kl.Name, m.Verdicts[tc.kl.Name])
			}
			ip, domain, err := RemoteDNS(l, &links[1])
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want netip.Addr
			if tc.wantIP != "" {
				want = netip.MustParseAddr(tc.wantIP)
			}
			if ip != want || domain != tc.wantDomain {
				t.Errorf("RemoteDNS = %v %q, want %v %q", ip, domain, want, tc.wantDomain)
			}
		})
	}
}

func withEgress(kl v1alpha1.KubeLink, egress ...string) v1alpha1.KubeLink {
	kl.Spec.Egress = egress
	return kl
}

func withDNS(kl v1alpha1.KubeLink, d *v1alpha1.KubeLinkDNS) v1alpha1.KubeLink {
	kl.Spec.DNS = d
	return kl
}

// The Corefile with advertised DNS: b advertises its domain and DNS IP and
// gets them; c's spec.dns wins over its advertisement; d opts out and
// stays out whatever it advertises; e has no spec.cidr, so its advertised
// DNS IP is outside what the link routes, and it is left out with a
// warning; f advertises an unusable IP and is left out with a warning.
func TestRenderAdvertisedGolden(t *testing.T) {
	d := advertise(peerD("Up"), "d.internal", "100.64.48.53")
	d.Spec.DNS = &v1alpha1.KubeLinkDNS{OmitDNSPropagation: ptr(true)}
	e := klink("e", "Up", v1alpha1.KubeLinkSpec{Endpoint: "e.example.com", ClusterAddress: "192.168.0.15/24"})
	f := klink("f", "Up", v1alpha1.KubeLinkSpec{Endpoint: "f.example.com", ClusterAddress: "192.168.0.16/24", CIDR: "100.64.80.0/20"})
	links := []v1alpha1.KubeLink{localA(nil),
		advertise(peerB("Up"), "b.internal", "100.64.16.53"),
		advertise(peerC("Up", false), "x.internal", "100.64.32.99"),
		d,
		advertise(e, "", "100.64.64.10"),
		advertise(f, "f.internal", "fe80::1%eth0"),
	}
	got := renderAll(t, links, InputOptions{Mode: ModeDNS})
	golden(t, "dns-advertised", got)
	for _, want := range []string{
		`name regex ^(.*)\.b\.kubelink\.$ {1}.b.internal.`, "forward . 100.64.16.53",
		`name regex ^(.*)\.c\.kubelink\.$ {1}.c.internal.`, "forward . 100.64.32.53",
		`link e left out of DNS: the advertised DNS IP 100.64.64.10 is outside the link's networks`,
		`link f left out of DNS: the advertised DNS IP "fe80::1%eth0" is not a plain IP address`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, bad := range []string{"x.internal", "100.64.32.99", "d.kubelink", "d.internal", "100.64.48.53", "f.kubelink:", "e.kubelink:", "forward . 100.64.64.10"} {
		if strings.Contains(got, bad) {
			t.Errorf("output has %q", bad)
		}
	}

	// Without the advertisement b falls back to the defaults.
	links[1].Status.Advertised = nil
	if got := renderAll(t, links, InputOptions{Mode: ModeDNS}); !strings.Contains(got, "forward . 100.64.16.10") || strings.Contains(got, "b.internal") {
		t.Errorf("without an advertisement b should use 100.64.16.10 and cluster.local:\n%s", got)
	}
}
