package clusterlab

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
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

// The TLS bridge data plane between two clusters: traffic both ways, a
// dead peer, its return.
func TestBridgeModeBetweenTwoClusters(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := NewBridgeCA(t)
	aCerts, bCerts := ca.CertDir(t, a), ca.CertDir(t, b)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, BridgeFlags(aCerts)...)
	bBroker := b.StartBroker(lab, b.GW, BridgeFlags(bCerts)...)

	applied := time.Now()
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))
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
		WaitMetric(t, a.GW, m, 5*time.Second, func(v float64) bool { return v > 0 })
	}
	WaitMetric(t, a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="spoofed"}`, time.Second, func(v float64) bool { return v == 0 })
	WaitMetric(t, a.GW, `kubelink_bridge_rejected_handshakes_total`, time.Second, func(v float64) bool { return v == 0 })
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
	WaitMetric(t, a.GW, `kubelink_bridge_peer_certificate_info{link="b",serial="`+certSerial(t, bCerts)+`",subject="CN=`+b.InetIP.String()+`"}`,
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
	newSerial := ca.WriteCerts(t, bCerts, b)
	WaitMetric(t, a.GW, `kubelink_bridge_peer_certificate_info{link="b",serial="`+newSerial+`",subject="CN=`+b.InetIP.String()+`"}`,
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
	b.StartBroker(lab, b.GW, BridgeFlags(bCerts)...)
	restarted := time.Now()
	up, _ := a.WaitState("b", v1alpha1.StateUp, 2*time.Second)
	t.Logf("B restarted %s after the kill: A shows Up %s after B's return", restarted.Sub(killed).Round(time.Millisecond), up.Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
}
