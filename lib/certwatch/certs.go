package certwatch

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"time"
)

// CAValidity is the lifetime of a CA that certwatch creates.
const CAValidity = 10 * 365 * 24 * time.Hour

// Organization is the subject organization of the certificates certwatch makes.
const Organization = "kubelink"

// NewCA creates a self-signed CA (ECDSA P-256) valid from now for validity.
// It returns the certificate and the PKCS#8 key, both PEM encoded.
func NewCA(now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kubelink-ca", Organization: []string{Organization}},
		NotBefore:             now.Add(-backdate(validity)),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// IssueCert creates a key pair and a certificate signed by the CA for server
// and client authentication, with CN and DNS SAN dnsName and the URI SANs
// identities (kubelink://<mesh>/<cluster>: what peers' links check), valid
// from now for validity (NotBefore is backdated by a tenth of validity, at
// most 5 minutes, against clock skew).
func IssueCert(caCertPEM, caKeyPEM []byte, dnsName string, now time.Time, validity time.Duration, identities ...string) (certPEM, keyPEM []byte, err error) {
	ca, caKey, err := parseCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	var uris []*url.URL
	for _, id := range identities {
		u, err := url.Parse(id)
		if err != nil {
			return nil, nil, fmt.Errorf("identity %q: %w", id, err)
		}
		uris = append(uris, u)
	}
	der, err := signLeaf(ca, caKey, &key.PublicKey, dnsName, now, validity, uris)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// signLeaf signs a certificate for pub with the CA: server and client
// auth, CN dnsName, a DNS SAN (an IP SAN when dnsName is an address), the
// URI SANs uris, valid from now (backdated) for validity, capped at the
// CA's expiry. It returns the DER.
func signLeaf(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, dnsName string, now time.Time, validity time.Duration, uris []*url.URL) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: dnsName, Organization: []string{Organization}},
		NotBefore:    now.Add(-backdate(validity)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	// A bridge reached by IP address (no DNS name, as in the kind lab) is
	// named by an IP SAN: that is what TLS host verification checks for IPs.
	if ip := net.ParseIP(dnsName); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{dnsName}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
}

// NeedsRenewal reports whether less than a third of cert's lifetime
// (NotAfter - NotBefore) remains at now.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewalTime(cert))
}

// RenewalTime is the moment from which NeedsRenewal is true.
func RenewalTime(cert *x509.Certificate) time.Time {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Add(-lifetime / 3)
}

// CheckCert tells why the certificate in certPEM/keyPEM cannot be kept in
// self-managed mode: unparsable, key mismatch, not signed by the CA (or not
// valid for server and client auth), CN or SAN other than dnsName, URI SANs
// other than identities, or due for renewal at now. It returns the parsed
// certificate and nil when it is fine.
func CheckCert(certPEM, keyPEM, caCertPEM []byte, dnsName string, now time.Time, identities ...string) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.crt/tls.key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls.crt: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caCertPEM) {
		return cert, errors.New("ca.crt: no certificate")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return cert, fmt.Errorf("tls.crt: %w", err)
		}
	}
	if cert.Subject.CommonName != dnsName {
		return cert, fmt.Errorf("tls.crt: CN %q, want %q", cert.Subject.CommonName, dnsName)
	}
	if err := cert.VerifyHostname(dnsName); err != nil {
		return cert, fmt.Errorf("tls.crt: %w", err)
	}
	var have []string
	for _, u := range cert.URIs {
		have = append(have, u.String())
	}
	if want := slices.Sorted(slices.Values(identities)); !slices.Equal(slices.Sorted(slices.Values(have)), want) {
		return cert, fmt.Errorf("tls.crt: identities %v, want %v", have, want)
	}
	if NeedsRenewal(cert, now) {
		return cert, fmt.Errorf("tls.crt: %w since %s (expires %s)", ErrDue, RenewalTime(cert).Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	}
	return cert, nil
}

// ErrDue is CheckCert's error for a certificate that is fine but due for
// renewal.
var ErrDue = errors.New("due for renewal")

// ParseCertificate decodes the first certificate of a PEM bundle.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	ca, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ca.crt: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("ca.crt: not a CA certificate")
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ca.key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, errors.New("ca.key does not match ca.crt")
	}
	return ca, key, nil
}

func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS#8, EC or PKCS#1 private key")
	}
	return (*rsa.PrivateKey)(k), nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func backdate(validity time.Duration) time.Duration {
	return min(validity/10, 5*time.Minute)
}
