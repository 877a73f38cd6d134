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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/certwatch"
	"github.com/kubelink/kubelink/lib/nstest"
)

// certSerial is the serial (hex) of the certificate in dir.
func certSerial(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	must(t, err)
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatalf("no PEM in %s/tls.crt", dir)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	must(t, err)
	return cert.SerialNumber.Text(16)
}

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
	dir := filepath.Join(t.TempDir(), "certs-"+c.Name)
	ca.writeCerts(t, dir, c)
	return dir
}

// writeCerts issues a new certificate for c and puts it into dir the way
// certwatch does (an atomic ..data swap); it returns the serial in hex.
func (ca *bridgeCA) writeCerts(t *testing.T, dir string, c *Cluster) string {
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
	_, err = certwatch.WriteAtomic(dir, []certwatch.File{
		{Name: "tls.crt", Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Mode: 0o600},
		{Name: "tls.key", Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		{Name: "ca.crt", Data: ca.pem, Mode: 0o600},
	})
	must(t, err)
	return tmpl.SerialNumber.Text(16)
}

// metric reads the first sample of /metrics in ns (the lab's brokers serve
// it on 127.0.0.1:9090) whose line starts with prefix, e.g.
// `kubelink_bridge_rx_bytes_total{link="b"}`; false when there is none.
func metric(ns *nstest.Namespace, prefix string) (float64, bool) {
	body, err := Get(ns, metricsAddr, "/metrics", time.Second)
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
func waitMetric(t *testing.T, ns *nstest.Namespace, prefix string, limit time.Duration, cond func(float64) bool) float64 {
	t.Helper()
	var v float64
	waitFor(t, prefix+" in "+ns.Name+"'s /metrics", limit, func() bool {
		var ok bool
		v, ok = metric(ns, prefix)
		return ok && cond(v)
	})
	return v
}

func bridgeFlags(dir string) []string {
	return []string{"--mode", "bridge", "--cert-dir", dir, "--bridge-port", "8088"}
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

	// Bridge counters: per link in the metrics and in the status health.
	for _, m := range []string{`kubelink_bridge_rx_bytes_total{link="b"}`, `kubelink_bridge_tx_bytes_total{link="b"}`,
		`kubelink_bridge_rx_frames_total{link="b"}`, `kubelink_bridge_tx_frames_total{link="b"}`} {
		waitMetric(t, a.GW, m, 5*time.Second, func(v float64) bool { return v > 0 })
	}
	waitMetric(t, a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="spoofed"}`, time.Second, func(v float64) bool { return v == 0 })
	waitMetric(t, a.GW, `kubelink_bridge_rejected_handshakes_total`, time.Second, func(v float64) bool { return v == 0 })
	var health *v1alpha1.LinkHealth
	waitFor(t, "rx/tx bytes in A's status of link b", 6*time.Second, func() bool {
		kl, err := a.Link("b")
		health = kl.Status.Health
		return err == nil && health != nil && health.RxBytes > 0 && health.TxBytes > 0 && health.LastHandshake != nil
	})
	t.Logf("A's status of link b: rxBytes %d, txBytes %d, last handshake %s", health.RxBytes, health.TxBytes, health.LastHandshake)

	// Certificate rotation under traffic: B's certificate directory is
	// swapped the way certwatch does it while A's pod keeps fetching from
	// B. No request fails, and A sees B's new certificate within 5 s.
	waitMetric(t, a.GW, `kubelink_bridge_peer_certificate_info{link="b",serial="`+certSerial(t, bCerts)+`",subject="CN=`+b.InetIP.String()+`"}`,
		time.Second, func(v float64) bool { return v == 1 })
	stop := make(chan struct{})
	var requests, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			requests.Add(1)
			if _, err := Get(a.Pod, b.ServiceIP, "/", 3*time.Second); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	time.Sleep(time.Second)
	rotated := time.Now()
	newSerial := ca.writeCerts(t, bCerts, b)
	waitMetric(t, a.GW, `kubelink_bridge_peer_certificate_info{link="b",serial="`+newSerial+`",subject="CN=`+b.InetIP.String()+`"}`,
		5*time.Second, func(v float64) bool { return v == 1 })
	inUse := time.Since(rotated)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("rotation: A sees B's new certificate (serial %s) %s after the swap; %d requests during the rotation, %d failed",
		newSerial, inUse.Round(time.Millisecond), requests.Load(), failures.Load())
	if failures.Load() > 0 || requests.Load() < 20 {
		t.Errorf("%d of %d requests failed during the rotation (first: %v)", failures.Load(), requests.Load(), firstErr.Load())
	}
	a.WaitState("b", v1alpha1.StateUp, time.Second)

	// A dead peer is Idle or Down within 2 s, and Up within 2 s of its
	// return; it stays away 3 s, long enough for A's redial backoff to grow.
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
	time.Sleep(3*time.Second - time.Since(killed))
	b.StartBroker(lab, b.GW, bridgeFlags(bCerts)...)
	restarted := time.Now()
	up, _ := a.WaitState("b", v1alpha1.StateUp, 2*time.Second)
	t.Logf("B restarted %s after the kill: A shows Up %s after B's return", restarted.Sub(killed).Round(time.Millisecond), up.Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
}
