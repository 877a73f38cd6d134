package clusterlab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The heart of the product: two clusters joined by KubeLinks, real brokers
// with embedded WireGuard, real routers, a pod in each cluster reaching the
// other's ClusterIP; then a dead peer, its return, and a deleted link.
func TestWireGuardMeshBetweenTwoClusters(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	aBroker := a.StartBroker(lab, a.GW)
	bBroker := b.StartBroker(lab, b.GW)

	applied := time.Now()
	Connect(a, b)
	body, took := WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	if !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q; want B's echo seeing A's cluster address (SNAT)", body)
	}
	t.Logf("A pod -> B ClusterIP worked %s after apply (%s of retries)", time.Since(applied).Round(time.Millisecond), took.Round(time.Millisecond))
	if body, _ := WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 192.168.0.12:") {
		t.Errorf("B -> A answered %q", body)
	}

	// Status tells the truth: Up with health figures, the data plane, the key.
	_, kl := a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	if want := expectedDataPlane(); kl.Status.DataPlane != want {
		t.Errorf("dataPlane = %q, want %s on this kernel", kl.Status.DataPlane, want)
	}
	t.Logf("dataPlane: %s (broker status)", kl.Status.DataPlane)
	if kl.Status.Gateway != a.GWIP.String() {
		t.Errorf("gateway = %q, want %s", kl.Status.Gateway, a.GWIP)
	}
	_, local := a.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	if local.Status.PublicKey != a.PublicKey().String() {
		t.Errorf("LocalLink publicKey = %q, want %s", local.Status.PublicKey, a.PublicKey())
	}
	waitFor(t, "health figures in the status", 6*time.Second, func() bool {
		kl, err := a.Link("b")
		return err == nil && kl.Status.Health != nil && kl.Status.Health.RTT != nil && kl.Status.Health.RxBytes > 0 && kl.Status.Health.LastHandshake != nil
	})

	// A dead peer is Down within 2 s, and Up again within 2 s of its return.
	bBroker.Kill()
	killed := time.Now()
	down, kl := a.WaitState("b", v1alpha1.StateDown, 2*time.Second)
	t.Logf("B killed: A shows Down after %s (%s)", down.Round(time.Millisecond), kl.Status.Message)
	b.StartBroker(lab, b.GW)
	restarted := time.Now()
	up, _ := a.WaitState("b", v1alpha1.StateUp, 2*time.Second)
	t.Logf("B restarted %s after the kill: A shows Up after %s", restarted.Sub(killed).Round(time.Millisecond), up.Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)

	// Deleting the link removes its peer and routes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kl, _ = a.Link("b")
	if err := a.Kube.Delete(ctx, kl); err != nil {
		t.Fatal(err)
	}
	// The client lives in A's gateway namespace: a kernel device is only
	// reached by genetlink there (wireguard-go by its socket from anywhere).
	var wg *wgctrl.Client
	if err := a.GW.Do(func() (err error) { wg, err = wgctrl.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	waitFor(t, "B's peer to disappear from A's device", 5*time.Second, func() bool {
		dev, err := wg.Device(aBroker.Device)
		return err == nil && len(dev.Peers) == 0
	})
	waitFor(t, "B's service route to disappear from A's gateway and node", 5*time.Second, func() bool {
		return !strings.Contains(a.GW.Run(t, "ip", "route"), "100.64.16.0/20") && !strings.Contains(a.Node.Run(t, "ip", "route"), "100.64.16.0/20")
	})
	if _, err := Get(a.Pod, b.ServiceIP, "/", 500*time.Millisecond); err == nil {
		t.Error("B's service still reachable after the link was deleted")
	}
}

// expectedDataPlane is the kind a broker in auto mode must report here:
// the kernel device where the kernel has WireGuard (make test-kernel's VM),
// else wireguard-go.
func expectedDataPlane() string {
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return "wireguard-kernel"
	}
	return "wireguard-userspace"
}

// holdsFor checks cond every 50 ms for the whole window and fails at the
// first check that does not hold: a state that must last is checked all
// through the window, not once after a pause (which would hide a flap).
func holdsFor(t testing.TB, what string, window time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	for n := 1; ; n++ {
		if !cond() {
			t.Fatalf("%s: stopped holding %s into the %s window (check %d)", what, time.Since(start).Round(time.Millisecond), window, n)
		}
		if time.Since(start) >= window {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linkIs reports whether c's link name is in state (a failed read is not).
func linkIs(c *Cluster, name, state string) bool {
	kl, err := c.Link(name)
	return err == nil && kl.Status.State == state
}

func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
