//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// TestSilentConnectionsDoNotLockOutAPeer (bridge mode): through the lab's
// real NodePorts (externalTrafficPolicy Cluster, NodePort's default: the
// broker sees the node's address as the source of every client, the peer's
// as well), one host holds 4 silent connections to each cluster's bridge at
// all times, reopening each as soon as it is cut. The bridge's limit of
// pending handshakes is per source address, so they fill it for the peer
// too. The broker evicts the oldest pending handshake instead of refusing
// the newest, so when b's active broker is deleted, the new one connects:
// both links Up and traffic both ways again, while the silent connections
// are held throughout.
func TestSilentConnectionsDoNotLockOutAPeer(t *testing.T) {
	if lab.Mode != "bridge" {
		t.Skip("the limit of pending handshakes is the TLS bridge's: make e2e's bridge pass runs this test")
	}
	f := features.New("silent connections at the bridge NodePorts").Assess("4 silent connections from one host do not keep b's new broker from connecting",
		func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			a, b := lab.A, lab.B
			// a's bridge (in b's link to a), which b's new broker dials,
			// and b's (in a's link to b), which has no broker for a moment.
			endpoint := func(c *Cluster, link string) string {
				l, err := c.Link(ctx, link)
				if err != nil {
					t.Fatal(err)
				}
				return l.Spec.Endpoint
			}
			aBridge, bBridge := endpoint(b, a.Name), endpoint(a, b.Name)
			targets := []string{aBridge, bBridge}
			waitStandby(ctx, t, b)
			aIP := activeBrokerIP(ctx, t, a)
			rejectedBefore := bridgeRejected(ctx, t, a, aIP)

			hctx, stop := context.WithCancel(ctx)
			h := holdSilent(hctx, targets, 4)
			defer func() { stop(); h.wait() }()
			if _, err := Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(context.Context) error {
				return h.allHeld()
			}); err != nil {
				t.Fatalf("holding 4 silent connections to each of %v: %v", targets, err)
			}

			victim, err := activeBroker(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Res.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: victim, Namespace: "kubelink"}}); err != nil {
				t.Fatal(err)
			}
			took, err := Eventually(ctx, 60*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
				holder, err := activeBroker(ctx, b)
				if err != nil || holder == victim {
					return fmt.Errorf("b's Lease still with %s (%v)", victim, err)
				}
				// Written by the new broker: its pod's address as
				// the link's gateway, and Up.
				var pod corev1.Pod
				if err := b.Res.Get(ctx, holder, "kubelink", &pod); err != nil {
					return err
				}
				l, err := b.Link(ctx, a.Name)
				if err != nil {
					return err
				}
				if l.Status.State != v1alpha1.StateUp || (l.Status.GatewayPod != pod.Status.PodIP && l.Status.Gateway != pod.Status.HostIP) {
					return fmt.Errorf("b's link a is %s (gateway %s, pod %s), want Up from the new broker %s (%s, %s): %s",
						l.Status.State, l.Status.Gateway, l.Status.GatewayPod, holder, pod.Status.HostIP, pod.Status.PodIP, l.Status.Message)
				}
				if l, err := a.Link(ctx, b.Name); err != nil || l.Status.State != v1alpha1.StateUp {
					return fmt.Errorf("a's link b: %v %v", l, err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("after deleting b's active broker %s, with 4 silent connections held at each bridge: %v", victim, err)
			}
			t.Logf("b's new broker connected %s after the delete", took.Round(10*time.Millisecond))
			expectEcho(ctx, t, b, anyClient(ctx, t, b), echoURL(ctx, t, a), a.Name, 30*time.Second)
			expectEcho(ctx, t, a, anyClient(ctx, t, a), echoURL(ctx, t, b), b.Name, 30*time.Second)

			// The silent connections were there all along, and a's broker
			// cut or evicted them (each counts as a rejected handshake).
			stop()
			h.wait()
			for _, target := range targets {
				held, samples, opened, evicted := h.stats(target)
				t.Logf("%s: 4 silent connections held in %d of %d samples, %d opened, %d cut before the handshake limit (evicted)", target, held, samples, opened, evicted)
				if target != aBridge {
					continue // b's bridge had no broker during the failover
				}
				// a's bridge stays up throughout: its limit must have been
				// full all along, and newer connections from the same
				// address (the NodePort gives every client the node's)
				// must have evicted silent ones: without eviction those
				// would have been refused, b's broker among them.
				// Otherwise the test proved nothing.
				if samples == 0 || float64(held) < 0.9*float64(samples) {
					t.Errorf("a's bridge %s: 4 silent connections held in only %d of %d samples: the test did not keep its limit full", target, held, samples)
				}
				if evicted == 0 {
					t.Errorf("a's bridge %s: no silent connection was evicted, so no other client shared their limit: the test did not exercise it", target)
				}
			}
			if after := bridgeRejected(ctx, t, a, aIP); after <= rejectedBefore {
				t.Errorf("a's broker rejected %v handshakes before and %v after: the silent connections never reached it", rejectedBefore, after)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// bridgeRejected is kubelink_bridge_rejected_handshakes_total of the broker
// pod at ip.
func bridgeRejected(ctx context.Context, t *testing.T, c *Cluster, ip string) float64 {
	t.Helper()
	m, err := brokerMetrics(ctx, c, ip)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := m["kubelink_bridge_rejected_handshakes_total"]
	if !ok {
		t.Fatalf("no kubelink_bridge_rejected_handshakes_total in the metrics of %s's broker %s", c.Name, ip)
	}
	return n
}

// silentHolder keeps n TCP connections open to each target, sending
// nothing; one that is cut is reopened at once. A sampler records, every
// 100 ms, whether all n were open.
type silentHolder struct {
	wg      sync.WaitGroup
	targets map[string]*silentTarget
}

type silentTarget struct {
	n             int
	open, opened  atomic.Int64
	held, samples atomic.Int64
	evicted       atomic.Int64
	lastErr       atomic.Pointer[string]
}

func holdSilent(ctx context.Context, targets []string, n int) *silentHolder {
	h := &silentHolder{targets: map[string]*silentTarget{}}
	for _, target := range targets {
		st := &silentTarget{n: n}
		h.targets[target] = st
		for range n {
			h.wg.Go(func() {
				d := net.Dialer{Timeout: 2 * time.Second}
				for ctx.Err() == nil {
					conn, err := d.DialContext(ctx, "tcp", target)
					if err != nil {
						msg := err.Error()
						st.lastErr.Store(&msg)
						select {
						case <-ctx.Done():
						case <-time.After(100 * time.Millisecond):
						}
						continue
					}
					st.opened.Add(1)
					st.open.Add(1)
					opened := time.Now()
					stop := context.AfterFunc(ctx, func() { conn.Close() })
					_, _ = conn.Read(make([]byte, 1)) // until the server cuts it (or ctx ends)
					lived := time.Since(opened)
					if stop() && lived < 2500*time.Millisecond {
						st.evicted.Add(1) // cut before the 3 s handshake limit: a newer connection took its slot
					}
					if lived < time.Millisecond {
						time.Sleep(10 * time.Millisecond) // closed at once: no busy loop
					}
					conn.Close()
					st.open.Add(-1)
				}
			})
		}
	}
	h.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, st := range h.targets {
				st.samples.Add(1)
				if st.open.Load() >= int64(st.n) {
					st.held.Add(1)
				}
			}
		}
	})
	return h
}

func (h *silentHolder) wait() { h.wg.Wait() }

// allHeld fails while some target has fewer than n connections open.
func (h *silentHolder) allHeld() error {
	for target, st := range h.targets {
		if o := st.open.Load(); o < int64(st.n) {
			last := ""
			if p := st.lastErr.Load(); p != nil {
				last = " (last error: " + *p + ")"
			}
			return fmt.Errorf("%s: %d of %d open%s", target, o, st.n, last)
		}
	}
	return nil
}

func (h *silentHolder) stats(target string) (held, samples, opened, evicted int64) {
	st := h.targets[target]
	return st.held.Load(), st.samples.Load(), st.opened.Load(), st.evicted.Load()
}
