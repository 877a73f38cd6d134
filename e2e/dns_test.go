//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// scaleBrokers sets the replicas of cluster c's broker Deployment.
func scaleBrokers(ctx context.Context, c *Cluster, n int32) error {
	// the Deployment controller writes the object too: retry a conflict
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var d appsv1.Deployment
		if err := c.Res.Get(ctx, "kubelink-broker", "kubelink", &d); err != nil {
			return err
		}
		d.Spec.Replicas = &n
		return c.Res.Update(ctx, &d)
	})
}

// resolves reports whether name resolves from pod (busybox nslookup through
// the cluster DNS); an error means it does not.
func resolves(ctx context.Context, c *Cluster, pod, name string) error {
	out, err := c.Exec(ctx, pod, "timeout", "3", "busybox", "nslookup", name)
	if err != nil {
		return fmt.Errorf("%s does not resolve: %v", name, err)
	}
	if !strings.Contains(out, "Address") || strings.Contains(out, "NXDOMAIN") {
		return fmt.Errorf("%s: %s", name, strings.TrimSpace(out))
	}
	return nil
}

// brokerReplicas is the replica count of cluster c's broker Deployment.
func brokerReplicas(ctx context.Context, c *Cluster) (int32, error) {
	var d appsv1.Deployment
	if err := c.Res.Get(ctx, "kubelink-broker", "kubelink", &d); err != nil {
		return 0, err
	}
	if d.Spec.Replicas == nil {
		return 1, nil
	}
	return *d.Spec.Replicas, nil
}

// dnsWithdrawBudget is the regression bound on how long a peer's names may
// still resolve after the link to it left Up (each direction once in
// `make e2e`). Issue #11's goal is 3 s and the figures are
// `make lab-bench`'s (docs/benchmarks.md); with the kubelinkgate plugin
// and no cached SERVFAIL the lab measured 0–4.8 s over many runs, and the
// bound leaves room for the polling of the link state here, which lags
// under load. A regression (the gate not following the link, a cached
// answer) takes the name's TTL or forever.
const dnsWithdrawBudget = 6 * time.Second

func TestMeshDNSFollowsLinkHealth(t *testing.T) {
	var fs []features.Feature
	for _, d := range []struct{ observer, peer *Cluster }{{lab.A, lab.B}, {lab.B, lab.A}} {
		name := "echo.default.svc." + d.peer.Name + ".kubelink"
		fs = append(fs, features.New("mesh DNS follows link health in "+d.observer.Name).Assess(fmt.Sprintf("%s's brokers stopped and started: in %s, %s goes within the budget after Down and returns after Up", d.peer.Name, d.observer.Name, name),
			func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
				pod := anyClient(ctx, t, d.observer)
				replicas, err := brokerReplicas(ctx, d.peer)
				if err != nil {
					t.Fatal(err)
				}
				if replicas < 2 {
					// e.g. a run killed by go test's -timeout, which runs no
					// deferred restore
					t.Fatalf("cluster %s runs %d broker replicas, want ≥ 2 (active and standby); restore them: kubectl --kubeconfig %s -n kubelink scale deploy/kubelink-broker --replicas=2",
						d.peer.Name, replicas, d.peer.Kubeconfig)
				}
				restored := true
				defer func() {
					if !restored {
						_ = scaleBrokers(context.Background(), d.peer, replicas)
					}
				}()
				var gone, back []float64
				for run := 1; run <= runs(t); run++ {
					restored = false
					g, b := dnsCycle(ctx, t, run, d.observer, d.peer, replicas, pod, name)
					restored = true
					gone, back = append(gone, g.Seconds()), append(back, b.Seconds())
				}
				if worst := distribution(t, "dns_gone_after_down_"+d.observer.Name+"_seconds", gone); worst > dnsWithdrawBudget.Seconds() {
					t.Errorf("worst DNS withdrawal %.2fs after Down, regression bound %s", worst, dnsWithdrawBudget)
				}
				if worst := distribution(t, "dns_back_after_up_"+d.observer.Name+"_seconds", back); worst > dnsReturnBudget.Seconds() {
					t.Errorf("worst DNS return %.2fs after Up, regression bound %s", worst, dnsReturnBudget)
				}
				waitStandby(ctx, t, d.peer)
				expectEcho(ctx, t, d.observer, pod, echoURL(ctx, t, d.peer), d.peer.Name, 30*time.Second)
				return ctx
			}).Feature())
	}
	testenv.Test(t, fs...)
}

// dnsReturnBudget is the regression bound on how long after the link came
// Up again a peer's name still does not resolve. The lab measured 3.2–4.8 s
// (the gate follows the status by a watch, then CoreDNS's negative cache of
// 5 s at most); a regression (a name that never returns) fails it.
const dnsReturnBudget = 15 * time.Second

// dnsSettle is how long after the link came Up again the name must have
// resolved in every check before the probe ends.
const dnsSettle = 10 * time.Second

// Checks for startProbe: "gone" is an NXDOMAIN (the name was withdrawn),
// not a timeout towards B's unreachable DNS; "resolves" is an answer with
// an address. The name is rooted so that no search domain is tried.
func nameGone(name string) []string     { return []string{"nxdomain", name + "."} }
func nameResolves(name string) []string { return []string{"resolves", name + "."} }

// linkLeaves polls c's link to peer every 100 ms until its state is (up)
// or is not (!up) Up, and returns when it saw that.
func linkLeaves(ctx context.Context, t *testing.T, c, peer *Cluster, up bool, timeout time.Duration) time.Time {
	t.Helper()
	if _, err := Eventually(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) error {
		l, err := c.Link(ctx, peer.Name)
		if err != nil {
			return err
		}
		if (l.Status.State == v1alpha1.StateUp) != up {
			return fmt.Errorf("link %s %s", peer.Name, l.Status.State)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s's link %s Up=%v: %v", c.Name, peer.Name, up, err)
	}
	return time.Now()
}

// linkSample is one reading of a link: Up or not.
type linkSample struct {
	at time.Time
	up bool
}

// sampleLink reads c's link to peer every interval until ctx ends and then
// delivers the readings (failed reads are left out).
func sampleLink(ctx context.Context, c, peer *Cluster, interval time.Duration) <-chan []linkSample {
	out := make(chan []linkSample, 1)
	go func() {
		var s []linkSample
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if l, err := c.Link(ctx, peer.Name); err == nil {
				s = append(s, linkSample{time.Now(), l.Status.State == v1alpha1.StateUp})
			}
			select {
			case <-ctx.Done():
				out <- s
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// lastLeftUp is when the link was last seen leaving Up (the first reading
// not Up after an Up one) and how often it came Up again after the first
// such change.
func lastLeftUp(s []linkSample) (last time.Time, reUps int) {
	downs := 0
	for i := 1; i < len(s); i++ {
		switch {
		case s[i-1].up && !s[i].up:
			last = s[i].at
			downs++
		case !s[i-1].up && s[i].up && downs > 0:
			reUps++
		}
	}
	return last, reUps
}

// dnsCycle stops peer's brokers until c's link to it is Down and starts
// them (replicas) until it is Up again, while a client in c looks the name
// up every 100 ms; it returns how long after Down the name was gone for
// good, and how long after Up it resolved for good.
func dnsCycle(ctx context.Context, t *testing.T, run int, c, peer *Cluster, replicas int32, pod, name string) (gone, back time.Duration) {
	t.Helper()
	linkLeaves(ctx, t, c, peer, true, 120*time.Second)
	if _, err := Eventually(ctx, 60*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		return resolves(ctx, c, pod, name)
	}); err != nil {
		t.Fatalf("run %d: before: %v", run, err)
	}
	if _, err := installProber(ctx, c, pod); err != nil {
		t.Fatal(err)
	}
	probeAsync := func(check []string, window time.Duration, flags ...string) <-chan probeSeries {
		done, err := startProbe(ctx, c, pod, check, time.Second, 100*time.Millisecond, window, flags...)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		return done
	}

	// The name may go before the status poll here sees Down (the gate
	// follows the status by a watch): both are measured from the stop, and
	// the withdrawal is how much later than Down the name went (0 when it
	// went first).
	goneProbe := probeAsync(nameGone(name), 15*time.Second)
	// c's link to peer is sampled all through the window: peer's two brokers stop
	// one after the other, and the one stopping last may hold the Lease
	// for a moment, so the link can come Up again after its first Down —
	// and the name rightly with it. The withdrawal counts from the last
	// time the link left Up.
	linkCtx, stopSampling := context.WithCancel(ctx)
	samples := sampleLink(linkCtx, c, peer, 100*time.Millisecond)
	stopped := time.Now()
	if err := scaleBrokers(ctx, peer, 0); err != nil {
		t.Fatal(err)
	}
	tDown := linkLeaves(ctx, t, c, peer, false, 10*time.Second)
	r := <-goneProbe
	stopSampling()
	if r.err != nil {
		t.Fatalf("run %d: probe: %v", run, r.err)
	}
	if last, reUps := lastLeftUp(<-samples); reUps > 0 && last.After(tDown) {
		t.Logf("run %d: link %s came Up again %d time(s) after its first Down (%s's brokers stopping one after the other); the withdrawal counts from its last Down, %s after the first",
			run, peer.Name, reUps, peer.Name, last.Sub(tDown).Round(10*time.Millisecond))
		tDown = last
	}
	goneAfterStop, tail, flaps, err := settled(r.series, stopped, true)
	if err != nil {
		t.Fatalf("run %d: %s after the stop: %v", run, name, err)
	}
	if flaps > 0 {
		// the peer's two brokers terminate one after the other: the standby may
		// hold the Lease for a moment, and the link (and the name, which
		// follows it) comes back briefly. Reported, not failed.
		t.Logf("run %d: %s came back %d times before it was gone for good", run, name, flaps)
	}
	gone = max(0, goneAfterStop-tDown.Sub(stopped))
	t.Logf("DNS %s run %d: %s's brokers stopped; link left Up after %s (as polled), %s gone after %s: %s after Down, then NXDOMAIN for %s",
		c.Name, run, peer.Name, tDown.Sub(stopped).Round(10*time.Millisecond), name, goneAfterStop.Round(10*time.Millisecond), gone.Round(10*time.Millisecond), tail.Round(10*time.Millisecond))

	// The probe ends once the name resolved in every check of
	// dnsSettle after the link came Up (40 s at most): a name that goes
	// again within that stretch is seen.
	over := fmt.Sprintf("/tmp/kubelink-dns-up-%d", time.Now().UnixNano())
	backProbe := probeAsync(nameResolves(name), 40*time.Second, settleFlags(over, dnsSettle)...)
	started := time.Now()
	if err := scaleBrokers(ctx, peer, replicas); err != nil {
		t.Fatal(err)
	}
	tUp := linkLeaves(ctx, t, c, peer, true, 30*time.Second)
	if err := endEvent(ctx, c, pod, over); err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	r = <-backProbe
	if r.err != nil {
		t.Fatalf("run %d: probe: %v", run, r.err)
	}
	backAfterStart, tail, flaps, err := settled(r.series, started, true)
	if err != nil {
		t.Fatalf("run %d: %s after the start: %v", run, name, err)
	}
	if flaps > 0 {
		t.Logf("run %d: %s went away %d times before it resolved for good (the link settling)", run, name, flaps)
	}
	back = max(0, backAfterStart-tUp.Sub(started))
	if tail < dnsSettle-time.Second && r.series[len(r.series)-1].at.Sub(r.series[0].at) < 39*time.Second {
		// the prober ended early without the settle: not what it was asked
		t.Errorf("run %d: the probe ended after resolving for only %s (settle %s)", run, tail.Round(10*time.Millisecond), dnsSettle)
	}
	t.Logf("DNS %s run %d: %s's brokers started; link Up after %s (as polled), %s resolves after %s: %s after Up, then for %s",
		c.Name, run, peer.Name, tUp.Sub(started).Round(10*time.Millisecond), name, backAfterStart.Round(10*time.Millisecond), back.Round(10*time.Millisecond), tail.Round(10*time.Millisecond))
	return gone, back
}
