package clusterlab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
)

var metricsAddr = netip.MustParseAddrPort("127.0.0.1:9090")

// Two broker replicas in cluster A on different nodes: one active, one
// standby. Killing the active one moves the gateway: the standby takes the
// Lease, the router follows, the peer roams, and traffic recovers.
func TestGatewayFailoverToStandbyBroker(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	active, _, _ := startActiveStandby(t, lab, nil, nil)

	// Readiness follows the Lease, so a Service selecting ready brokers
	// follows the active one.
	if _, err := Get(a.GW2, metricsAddr, "/readyz", time.Second); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("standby /readyz: %v, want 503", err)
	}
	for _, ns := range []*nstest.Namespace{a.GW, a.GW2} {
		if body, err := Get(ns, metricsAddr, "/healthz", time.Second); err != nil || body != "ok\n" {
			t.Errorf("%s /healthz: %q, %v (active and standby are both alive)", ns.Name, body, err)
		}
	}
	metrics, err := Get(a.GW, metricsAddr, "/metrics", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`kubelink_links{state="Up"} 2`, `kubelink_link_up{link="b"} 1`, `kubelink_dataplane_info{kind="wireguard-`, "kubelink_link_rx_bytes{link=\"b\"}", "kubelink_link_probe_rtt_seconds{link=\"b\"}", "kubelink_reconcile_errors_total 0", "kubelink_broker_active 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	active.Kill()
	killed := time.Now()
	waitFor(t, "the standby to publish itself as gateway", 10*time.Second, func() bool {
		kl, err := a.Link("a")
		return err == nil && kl.Status.Gateway == a.GW2IP.String()
	})
	moved := time.Now()
	waitFor(t, "worker routes to follow the gateway within 2 s", 2*time.Second, func() bool {
		return strings.Contains(a.Node.Run(t, "ip", "route"), "100.64.16.0/20 via "+a.GW2IP.String())
	})
	t.Logf("gateway moved %s after the kill; worker routes followed %s later", moved.Sub(killed).Round(time.Millisecond), time.Since(moved).Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second)
	t.Logf("active broker killed: A pod -> B works again after %s", time.Since(killed).Round(time.Millisecond))
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
}

// A missing or broken key gives Error with a message on the served links and
// recovers when the Secret is fixed, without a restart.
func TestKeySecretErrorsAndRecovery(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sec corev1.Secret
	must(t, a.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "wireguard"}, &sec))
	must(t, a.Kube.Delete(ctx, &sec))

	a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	_, kl := a.WaitState("a", v1alpha1.StateError, 5*time.Second)
	if !strings.Contains(kl.Status.Message, "Secret kubelink/wireguard not found") {
		t.Errorf("message %q", kl.Status.Message)
	}
	a.WaitState("b", v1alpha1.StateError, 5*time.Second)

	sec.ResourceVersion = ""
	sec.Data = map[string][]byte{v1alpha1.SecretKeyWireGuardPrivateKey: []byte("c2hvcnQ=")}
	must(t, a.Kube.Create(ctx, &sec))
	waitFor(t, "a bad key to be reported", 5*time.Second, func() bool {
		kl, err := a.Link("a")
		return err == nil && strings.Contains(kl.Status.Message, "key WireGuardPrivateKey: decodes to 5 bytes")
	})

	// The README's spelling of the key works too.
	sec.Data = map[string][]byte{v1alpha1.SecretKeyWireGuardPrivateKey: []byte(a.PrivateKey.String() + "\n")}
	must(t, a.Kube.Update(ctx, &sec))
	a.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
}
