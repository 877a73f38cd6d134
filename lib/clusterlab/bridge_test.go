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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// bridgeCA is a throwaway CA issuing the bridge certificates of the lab.
type bridgeCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newBridgeCA(t *testing.T) *bridgeCA {
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
	return &bridgeCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// certDir writes tls.crt, tls.key and ca.crt for a bridge named by its
// internet address (CN and IP SAN) and returns the directory.
func (ca *bridgeCA) certDir(t *testing.T, c *Cluster) string {
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	dir := filepath.Join(t.TempDir(), "certs-"+c.Name)
	must(t, os.MkdirAll(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), ca.pem, 0o600))
	return dir
}

// bridgeLinkTo is the KubeLink by which another cluster reaches c over the
// TLS bridge: no public key, the bridge port.
func bridgeLinkTo(c *Cluster) *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: c.Name}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: c.MeshAddress.String(), CIDR: c.ServiceCIDR.String(),
		Endpoint: fmt.Sprintf("%s:8088", c.InetIP)}}
}

// The TLS bridge data plane between two clusters: traffic both ways, a
// dead peer, its return.
func TestBridgeModeBetweenTwoClusters(t *testing.T) {
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := newBridgeCA(t)
	aCerts, bCerts := ca.certDir(t, a), ca.certDir(t, b)
	bridgeFlags := func(dir string) []string {
		return []string{"--mode", "bridge", "--cert-dir", dir, "--bridge-port", "8088"}
	}
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, bridgeFlags(aCerts)...)
	bBroker := b.StartBroker(lab, b.GW, bridgeFlags(bCerts)...)

	applied := time.Now()
	a.Apply(a.LocalLink(), bridgeLinkTo(b))
	b.Apply(b.LocalLink(), bridgeLinkTo(a))
	body, took := WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second)
	if !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q; want B's echo seeing A's cluster address (SNAT)", body)
	}
	t.Logf("A pod -> B ClusterIP over the bridge worked %s after apply (%s of retries)", time.Since(applied).Round(time.Millisecond), took.Round(time.Millisecond))
	if body, _ := WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 192.168.0.12:") {
		t.Errorf("B -> A answered %q", body)
	}

	_, kl := a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	if kl.Status.DataPlane != "bridge" {
		t.Errorf("dataPlane = %q, want bridge", kl.Status.DataPlane)
	}
	if kl.Status.Gateway != a.GWIP.String() {
		t.Errorf("gateway = %q, want %s", kl.Status.Gateway, a.GWIP)
	}
	b.WaitState("a", v1alpha1.StateUp, 5*time.Second)

	// A dead peer is not Up within 2 s (Idle: the connection ended), and Up
	// again after its return.
	bBroker.Kill()
	killed := time.Now()
	var gone *v1alpha1.KubeLink
	waitFor(t, "A's link to B to leave Up after B's broker died", 2*time.Second, func() bool {
		kl, err := a.Link("b")
		gone = kl
		return err == nil && kl.Status.State != v1alpha1.StateUp
	})
	t.Logf("B killed: A shows %s after %s (%s)", gone.Status.State, time.Since(killed).Round(time.Millisecond), gone.Status.Message)
	if s := gone.Status.State; s != v1alpha1.StateIdle && s != v1alpha1.StateDown {
		t.Errorf("after the kill A's link is %s, want Idle or Down", s)
	}
	b.StartBroker(lab, b.GW, bridgeFlags(bCerts)...)
	restarted := time.Now()
	up, _ := a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	t.Logf("B restarted %s after the kill: A shows Up after %s", restarted.Sub(killed).Round(time.Millisecond), up.Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
}
