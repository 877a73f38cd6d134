package clusterlab

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// apiCut is how long only the active gateway's node loses the API server.
const apiCut = 30 * time.Second

// A one-sided API cut: only the node of A's active broker loses the API
// server, for 30 s, while it still reaches B. The standby takes the lease
// over after the lease duration and, before it opens its data plane,
// fences the old holder, which stops its own and exits. So one gateway
// carries A's traffic at a time: B's endpoint for A moves once, from GW to
// GW2, and never back (each packet the old gateway sent with A's key would
// pull it back), and requests fail only during the hand-over. Without the
// fence the old holder kept sending for the whole cut.
func TestOneSidedAPICutMovesTheGatewayOnce(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A 1 s keepalive: a second sender would show within a second. A
	// fence wait beyond any teardown on a loaded machine: the new holder
	// must not start before the old one confirmed it stopped.
	keepalive := []string{"--keepalive", "1s"}
	first, second, bBroker := startActiveStandby(t, lab, append(keepalive, "--fence-wait", "5s"), keepalive)
	bDevice := wgDeviceReader(t, b.GW)
	waitFor(t, "B's endpoint for A to be GW", 5*time.Second, func() bool {
		ip, err := peerEndpoint(bDevice, bBroker.Device)
		return err == nil && ip == a.InetIP
	})
	waitFor(t, "the second broker to be a ready standby", 10*time.Second, func() bool {
		_, err := Get(a.GW2, metricsAddr, "/readyz", time.Second)
		return err != nil && strings.Contains(err.Error(), "503")
	})

	a.SetAPIDownFor(a.GW, true)
	cut := time.Now()

	// Requests both ways over the whole cut, beside the endpoint samples.
	type result struct {
		at  time.Duration
		err error
		dir string
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	done := make(chan struct{})
	stop := sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	t.Cleanup(stop) // also when the sampling below fails the test
	for _, d := range []struct {
		from *nstest.Namespace
		to   *Cluster
		name string
	}{{a.Pod, b, "A→B"}, {b.Pod, a, "B→A"}} {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				start := time.Since(cut)
				_, err := Get(d.from, d.to.ServiceIP, "/", 2*time.Second)
				mu.Lock()
				results = append(results, result{start, err, d.name})
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	last, samples := a.InetIP, 0
	var moves []string
	for time.Since(cut) < apiCut {
		ip, err := peerEndpoint(bDevice, bBroker.Device)
		if err != nil {
			t.Fatalf("reading B's device: %v", err)
		}
		samples++
		if ip != last {
			moves = append(moves, fmt.Sprintf("%s → %s after %s", last, ip, time.Since(cut).Round(time.Millisecond)))
			last = ip
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.SetAPIDownFor(a.GW, false)
	stop()

	t.Logf("B's endpoint for A over %d samples in %s: %v", samples, apiCut, moves)
	if len(moves) != 1 || last != a.Inet2IP {
		t.Errorf("B's endpoint for A moved %d times (%v), want once, from GW %s to GW2 %s: two gateways sent with A's key", len(moves), moves, a.InetIP, a.Inet2IP)
	}
	// The hand-over takes the lease duration (4 s) plus the fence and the
	// router's switch; 15 s leaves room for a slow machine. After it,
	// every request in both directions answers.
	const handover = 15 * time.Second
	var failed []string
	late, ok := 0, 0
	for _, r := range results {
		if r.at >= handover {
			late++
		}
		if r.err == nil {
			ok++
			continue
		}
		failed = append(failed, fmt.Sprintf("%s at %s: %v", r.dir, r.at.Round(time.Millisecond), r.err))
		if r.at >= handover {
			t.Errorf("%s failed %s after the cut, after the hand-over: %v", r.dir, r.at.Round(time.Millisecond), r.err)
		}
	}
	t.Logf("%d requests, %d answered, %d after the hand-over window; failed: %v", len(results), ok, late, failed)
	if late < 20 {
		t.Errorf("only %d requests after the hand-over window: too few to tell", late)
	}

	// The old holder stopped because it was fenced, and told why; the
	// new one says the old one stopped before it started.
	waitFor(t, "the fenced broker to exit", 5*time.Second, first.Exited)
	if out := first.Output(); !strings.Contains(out, "fenced by "+a.GW2.Name) {
		t.Errorf("the old holder's output does not say it was fenced by %s:\n%s", a.GW2.Name, out)
	}
	if out := second.Output(); !strings.Contains(out, "the previous holder stopped its data plane") {
		t.Errorf("the new holder's output does not say the old one stopped:\n%s", out)
	}
	if second.Exited() {
		t.Errorf("the new holder exited:\n%s", second.Output())
	}
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
}
