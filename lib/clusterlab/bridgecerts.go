package clusterlab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/certwatch"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// BridgeCA is a throwaway CA issuing the bridge certificates of the lab.
type BridgeCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func NewBridgeCA(t testing.TB) *BridgeCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubelink lab CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &BridgeCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// certDir writes tls.crt, tls.key and ca.crt for a bridge named by its
// internet address (CN and IP SAN) and returns the directory.
func (ca *BridgeCA) CertDir(t testing.TB, c *Cluster) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs-"+c.Name)
	ca.WriteCerts(t, dir, c)
	return dir
}

// WriteCerts issues a new certificate for c — named by its internet address
// (CN, IP SAN) and identified as c in the lab's meshes (URI SANs
// kubelink://default/<c> and kubelink://lab/<c>) — and puts it into dir the
// way certwatch does (an atomic ..data swap); it returns the serial in hex.
func (ca *BridgeCA) WriteCerts(t testing.TB, dir string, c *Cluster) string {
	t.Helper()
	return ca.WriteCertsAs(t, dir, c, mesh.Identity("", c.Name), mesh.Identity("lab", c.Name))
}

// WriteCertsAs is WriteCerts with the given identities (URI SANs).
func (ca *BridgeCA) WriteCertsAs(t testing.TB, dir string, c *Cluster, identities ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: c.InetIP.String()},
		IPAddresses: []net.IP{c.InetIP.AsSlice()},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, id := range identities {
		u, err := url.Parse(id)
		must(t, err)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	_, err = certwatch.WriteAtomic(dir, []certwatch.File{
		{Name: "tls.crt", Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Mode: 0o600},
		{Name: "tls.key", Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		{Name: "ca.crt", Data: ca.pem, Mode: 0o600},
	})
	must(t, err)
	return tmpl.SerialNumber.Text(16)
}

// WriteRevoked puts a revocation list (the mesh authority's, as certwatch
// copies it) next to the certificates in dir, keeping them: lines are its
// entries ("<serial hex> <notAfter> <identities>"), none an empty list.
func WriteRevoked(t testing.TB, dir string, lines ...string) {
	t.Helper()
	cur, err := certwatch.ReadSnapshot(dir, "tls.crt", "tls.key", "ca.crt")
	must(t, err)
	list := strings.Join(lines, "\n")
	if list != "" {
		list += "\n"
	}
	_, err = certwatch.WriteAtomic(dir, []certwatch.File{
		{Name: "tls.crt", Data: cur["tls.crt"], Mode: 0o600},
		{Name: "tls.key", Data: cur["tls.key"], Mode: 0o600},
		{Name: "ca.crt", Data: cur["ca.crt"], Mode: 0o600},
		{Name: certwatch.FileRevoked, Data: []byte(list), Mode: 0o600},
	})
	must(t, err)
}

// metric reads the first sample of /metrics in ns (the lab's brokers serve
// it on 127.0.0.1:9090) whose line starts with prefix, e.g.
// `kubelink_bridge_rx_bytes_total{link="b"}`; false when there is none.
func Metric(ns *nstest.Namespace, prefix string) (float64, bool) {
	body, err := Get(ns, netip.MustParseAddrPort("127.0.0.1:9090"), "/metrics", time.Second)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitMetric waits until the metric satisfies cond and returns its value.
func WaitMetric(t testing.TB, ns *nstest.Namespace, prefix string, limit time.Duration, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, ok := Metric(ns, prefix)
		if ok && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s's /metrics: not as wanted within %s (last %v, present %v)", prefix, ns.Name, limit, v, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func BridgeFlags(dir string) []string {
	return []string{"--mode", "bridge", "--cert-dir", dir, "--bridge-port", "8088"}
}

// BridgeLinkTo is the KubeLink by which another cluster reaches c over the
// TLS bridge: no public key, the bridge port.
func BridgeLinkTo(c *Cluster) *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: c.Name}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: c.MeshAddress.String(), CIDR: c.ServiceCIDR.String(),
		Endpoint: fmt.Sprintf("%s:8088", c.InetIP)}}
}
