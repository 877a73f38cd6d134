package certwatch

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIssueCertIsCASignedWithCNAndBothUsages(t *testing.T) {
	now := time.Now()
	caCrt, caKey, err := NewCA(now, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := IssueCert(caCrt, caKey, "kubelink.example.com", now, 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := CheckCert(crt, key, caCrt, "kubelink.example.com", now)
	if err != nil {
		t.Fatalf("fresh certificate rejected: %v", err)
	}
	if cert.Subject.CommonName != "kubelink.example.com" || !slices.Equal(cert.DNSNames, []string{"kubelink.example.com"}) {
		t.Errorf("CN %q SANs %v", cert.Subject.CommonName, cert.DNSNames)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ext key usage %v", cert.ExtKeyUsage)
	}
	if got := cert.NotAfter.Sub(now); got < 10*24*time.Hour-time.Second || got > 10*24*time.Hour+time.Second {
		t.Errorf("validity %s", got)
	}
	// Checks that force a new certificate.
	otherCA, otherKey, _ := NewCA(now, CAValidity)
	_, key2, _ := IssueCert(caCrt, caKey, "kubelink.example.com", now, time.Hour)
	for name, tc := range map[string]struct {
		crt, key, ca []byte
		dns          string
		at           time.Time
		want         string
	}{
		"other CA":     {crt, key, otherCA, "kubelink.example.com", now, "unknown authority"},
		"other name":   {crt, key, caCrt, "other.example.com", now, `CN "kubelink.example.com", want "other.example.com"`},
		"key mismatch": {crt, key2, caCrt, "kubelink.example.com", now, "tls.crt/tls.key"},
		"expired":      {crt, key, caCrt, "kubelink.example.com", now.Add(11 * 24 * time.Hour), "expired"},
		"due":          {crt, key, caCrt, "kubelink.example.com", now.Add(7 * 24 * time.Hour), "due for renewal"},
		"empty":        {nil, nil, caCrt, "kubelink.example.com", now, "tls.crt/tls.key"},
	} {
		if _, err := CheckCert(tc.crt, tc.key, tc.ca, tc.dns, tc.at); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
	if _, _, err := IssueCert(caCrt, otherKey, "x.example.com", now, time.Hour); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched CA key: %v", err)
	}
	if _, _, err := IssueCert(crt, key, "x.example.com", now, time.Hour); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: %v", err)
	}
}

func TestRenewalWhenAThirdOfTheLifetimeRemains(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(30 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {19 * time.Hour, false}, {20*time.Hour - time.Second, false}, {20 * time.Hour, true}, {29 * time.Hour, true}, {31 * time.Hour, true}} {
		if got := NeedsRenewal(cert, start.Add(tc.at)); got != tc.want {
			t.Errorf("after %s: NeedsRenewal %v, want %v", tc.at, got, tc.want)
		}
	}
	if got := RenewalTime(cert); !got.Equal(start.Add(20 * time.Hour)) {
		t.Errorf("RenewalTime %s", got)
	}
	// The default 10 days (backdated 5 minutes) renew about 3.3 days before expiry.
	now := time.Now()
	caCrt, caKey, _ := NewCA(now, CAValidity)
	crt, _, err := IssueCert(caCrt, caKey, "a.example.com", now, 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCertificate(crt)
	if left := c.NotAfter.Sub(RenewalTime(c)); left < 80*time.Hour || left > 81*time.Hour {
		t.Errorf("renewal %s before expiry", left)
	}
}

// A bridge addressed by IP (the kind lab's node IPs) needs an IP SAN: TLS
// host verification of an IP never looks at DNS SANs. Without it the
// certificate would also fail CheckCert and be reissued on every sync.
func TestIssueCertForAnIPAddressUsesAnIPSAN(t *testing.T) {
	now := time.Now()
	caCrt, caKey, err := NewCA(now, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := IssueCert(caCrt, caKey, "172.18.0.3", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := CheckCert(crt, key, caCrt, "172.18.0.3", now)
	if err != nil {
		t.Fatalf("certificate for an IP rejected by CheckCert: %v", err)
	}
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "172.18.0.3" || len(cert.DNSNames) != 0 {
		t.Errorf("IP SANs %v DNS SANs %v, want [172.18.0.3] and none", cert.IPAddresses, cert.DNSNames)
	}
}

// The identities (URI SANs) are what bridge peers check; a certificate
// without the wanted ones, or with others, is reissued.
func TestIssueCertCarriesIdentities(t *testing.T) {
	now := time.Now()
	caCrt, caKey, err := NewCA(now, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"kubelink://default/a", "kubelink://lab/a"}
	crt, key, err := IssueCert(caCrt, caKey, "172.18.0.2", now, time.Hour, ids...)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := CheckCert(crt, key, caCrt, "172.18.0.2", now, "kubelink://lab/a", "kubelink://default/a")
	if err != nil {
		t.Fatalf("certificate with its identities rejected: %v", err)
	}
	if len(cert.URIs) != 2 || cert.URIs[0].String() != ids[0] {
		t.Errorf("URI SANs %v", cert.URIs)
	}
	if _, err := CheckCert(crt, key, caCrt, "172.18.0.2", now, "kubelink://default/a"); err == nil || !strings.Contains(err.Error(), "identities") {
		t.Errorf("an extra identity must force a new certificate, got %v", err)
	}
	if _, err := CheckCert(crt, key, caCrt, "172.18.0.2", now, append(ids, "kubelink://x/a")...); err == nil {
		t.Error("a missing identity must force a new certificate")
	}
	for id, ok := range map[string]bool{"kubelink://default/a": true, "kubelink://lab/b-2": true,
		"https://default/a": false, "kubelink://default": false, "kubelink://default/a/b": false, "kubelink://Default/a": false,
		"kubelink://default/a?x=1": false, "kubelink://default/a_b": false, "not a uri at all": false} {
		if err := ValidIdentity(id); (err == nil) != ok {
			t.Errorf("ValidIdentity(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}
