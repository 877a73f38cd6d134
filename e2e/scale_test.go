//go:build e2e && e2escale

package e2e

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	kltest "github.com/kubelink/kubelink/lib/testenv"
)

// The goals of issue #33, as make bench checks them on the simulated
// cluster; here they are printed, and a run far past them fails.
const (
	scaleStatedGoal = 5 * time.Second
	scaleChangeGoal = 100 * time.Millisecond
	scalePassGoal   = time.Second
	scaleRSSGoalMiB = 64
)

// scaleLabel marks the links TestScaleInTheLab applies, so that a run that
// stopped half-way is cleaned up by the next.
const scaleLabel = "kubelink-lab-scale"

// TestScaleInTheLab (make lab-scale; build tag e2escale, so make e2e does
// not run it) applies LAB_SCALE_LINKS (default 250) foreign KubeLinks to
// cluster a, as an operator of a growing mesh would: each a free address of
// a's mesh, its own /24 service CIDR (100.100.i.0/24) and key, and its
// endpoint on the loopback of the active broker's pod (127.0.0.1), so no
// packet leaves that pod; no peer answers and the links settle Down. It
// prints, as make bench does for the simulated cluster:
//
//	BENCH lab_scale_links_all_stated_seconds_<n>  the apply until every link has a state
//	BENCH lab_scale_full_pass_ms_<n>              the broker's average pass over 30 s
//	BENCH lab_scale_status_writes_per_min_<n>     KubeLink updates in that window, per minute
//	BENCH lab_scale_rss_mib_<n>                   the active broker's resident memory
//	BENCH lab_scale_one_change_ms_<n>             a changed spec until the status observes it (median of 5)
//	BENCH lab_scale_delete_all_seconds_<n>        the deletion until the broker counts no link of them
//
// Throughout, the lab's own link b stays Up and a reaches b's echo service.
func TestScaleInTheLab(t *testing.T) {
	n := 250
	if v := os.Getenv("LAB_SCALE_LINKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 250 {
			t.Fatalf("LAB_SCALE_LINKS=%q: want a number from 1 to 250", v)
		}
	}
	c := lab.A
	f := features.New(fmt.Sprintf("%d links in cluster %s", n, c.Name)).
		Assess("applied, changed and deleted within issue #33's goals; link b stays Up", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			cl := scaleClient(t, c)
			deleteScaleLinks(ctx, t, cl) // a stopped run's
			t.Cleanup(func() { deleteScaleLinks(context.Background(), t, cl) })
			links := scaleLinks(ctx, t, c, n)
			pod := anyClient(ctx, t, c)
			urlB := echoURL(ctx, t, lab.B)
			expectEcho(ctx, t, c, pod, urlB, "b", 30*time.Second)
			brokerIP := activeBrokerIP(ctx, t, c)
			sw := watchLinks(ctx, t, cl)
			// Link b Up and traffic to b over the whole test: checked
			// every second.
			stop := watchLinkB(ctx, t, c, pod, urlB)

			begin := time.Now()
			applyAll(ctx, t, cl, links)
			if _, err := Eventually(ctx, 10*time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
				return allStated(ctx, cl, links)
			}); err != nil {
				t.Fatalf("not every link got a state: %v", err)
			}
			stated := time.Since(begin)

			m0 := mustMetrics(ctx, t, c, brokerIP)
			w0 := sw.Writes.Load()
			const window = 30 * time.Second
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(window):
			}
			m1 := mustMetrics(ctx, t, c, brokerIP)
			perMin := float64(sw.Writes.Load()-w0) * float64(time.Minute) / float64(window)
			passes := m1["kubelink_sync_duration_seconds_count"] - m0["kubelink_sync_duration_seconds_count"]
			pass := time.Duration(0)
			if passes > 0 {
				pass = time.Duration((m1["kubelink_sync_duration_seconds_sum"] - m0["kubelink_sync_duration_seconds_sum"]) / passes * float64(time.Second))
			}
			rss := m1["process_resident_memory_bytes"] / (1 << 20)

			var changes []time.Duration
			for range 5 {
				// A second apart: each change is timed alone, not
				// behind the previous change's pass.
				time.Sleep(time.Second)
				changes = append(changes, timeLinkChange(ctx, t, sw, links[0].Name))
			}
			slices.Sort(changes)
			change := changes[len(changes)/2]

			deleted := time.Now()
			deleteScaleLinks(ctx, t, cl)
			if _, err := Eventually(ctx, 10*time.Minute, 250*time.Millisecond, func(ctx context.Context) error {
				m, err := brokerMetrics(ctx, c, brokerIP)
				if err != nil {
					return err
				}
				if left := m[`kubelink_link_up`]; left > 0 {
					return fmt.Errorf("the broker still has %v series of them", left)
				}
				return nil
			}); err != nil {
				t.Fatalf("the broker did not forget the deleted links: %v", err)
			}
			deleteAll := time.Since(deleted)
			stop()

			fmt.Printf("BENCH lab_scale_links_all_stated_seconds_%d %.2f s\n", n, stated.Seconds())
			fmt.Printf("BENCH lab_scale_full_pass_ms_%d %.0f ms\n", n, float64(pass.Microseconds())/1000)
			fmt.Printf("BENCH lab_scale_status_writes_per_min_%d %.0f\n", n, perMin)
			fmt.Printf("BENCH lab_scale_rss_mib_%d %.1f MiB\n", n, rss)
			fmt.Printf("BENCH lab_scale_one_change_ms_%d %.0f ms\n", n, float64(change.Microseconds())/1000)
			fmt.Printf("BENCH lab_scale_one_change_max_ms_%d %.0f ms\n", n, float64(changes[len(changes)-1].Microseconds())/1000)
			fmt.Printf("BENCH lab_scale_delete_all_seconds_%d %.2f s\n", n, deleteAll.Seconds())
			t.Logf("goals (issue #33): stated ≤ %s, one change ≤ %s, pass ≤ %s, RSS ≤ %d MiB", scaleStatedGoal, scaleChangeGoal, scalePassGoal, scaleRSSGoalMiB)
			// Regression bounds, far past the goals: the figures are the
			// result, these only catch a broker that scales as before
			// issue #33 (minutes per pass, a GiB of memory).
			if stated > 20*scaleStatedGoal || pass > 10*scalePassGoal || change > 50*scaleChangeGoal || rss > 4*scaleRSSGoalMiB {
				t.Errorf("past the regression bounds: stated %s, pass %s, one change %s, RSS %.0f MiB", stated, pass, change, rss)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// scaleLinks are n foreign links for cluster c: free addresses of c's
// mesh (the prefix of its local link), service CIDRs 100.100.i.0/24, fresh
// keys, endpoints 127.0.0.1:40000+i.
func scaleLinks(ctx context.Context, t *testing.T, c *Cluster, n int) []*v1alpha1.KubeLink {
	t.Helper()
	var list v1alpha1.KubeLinkList
	if err := c.Res.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	var mesh netip.Prefix
	used := map[netip.Addr]bool{}
	for _, kl := range list.Items {
		p, err := netip.ParsePrefix(kl.Spec.ClusterAddress)
		if err != nil {
			continue
		}
		used[p.Addr()] = true
		if kl.Spec.Endpoint == v1alpha1.EndpointLocalLink {
			mesh = p.Masked()
		}
	}
	if !mesh.IsValid() {
		t.Fatalf("cluster %s has no local link (endpoint %s) to take the mesh from", c.Name, v1alpha1.EndpointLocalLink)
	}
	var links []*v1alpha1.KubeLink
	for a := mesh.Addr().Next(); mesh.Contains(a) && len(links) < n; a = a.Next() {
		if used[a] || !mesh.Contains(a.Next()) { // not the broadcast address
			continue
		}
		i := len(links) + 1
		key, err := ecdh.X25519().GenerateKey(rand.Reader) // a WireGuard key pair
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, &v1alpha1.KubeLink{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale%03d", i), Labels: map[string]string{scaleLabel: "true"}},
			Spec: v1alpha1.KubeLinkSpec{ClusterAddress: netip.PrefixFrom(a, mesh.Bits()).String(),
				CIDR: fmt.Sprintf("100.100.%d.0/24", i), Endpoint: fmt.Sprintf("127.0.0.1:%d", 40000+i),
				PublicKey: base64.StdEncoding.EncodeToString(key.PublicKey().Bytes())}})
	}
	if len(links) < n {
		t.Fatalf("cluster %s's mesh %s has room for %d more links, not %d (LAB_SCALE_LINKS)", c.Name, mesh, len(links), n)
	}
	return links
}

// scaleClient is a client of c without client-go's default rate limit (5
// requests a second): the figures are the broker's, not the test's client's
// (lib/testenv's clients do the same).
func scaleClient(t *testing.T, c *Cluster) client.WithWatch {
	t.Helper()
	rc := rest.CopyConfig(c.rest)
	rc.QPS, rc.Burst = -1, 0
	cl, err := client.NewWithWatch(rc, client.Options{Scheme: c.Res.GetScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// applyAll creates the links, eight at a time, as kubectl apply of a
// directory would send them.
func applyAll(ctx context.Context, t *testing.T, cl client.Client, links []*v1alpha1.KubeLink) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(links))
	next := make(chan *v1alpha1.KubeLink)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for kl := range next {
				if err := cl.Create(ctx, kl.DeepCopy()); err != nil {
					errs <- fmt.Errorf("creating %s: %w", kl.Name, err)
				}
			}
		}()
	}
	for _, kl := range links {
		next <- kl
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func allStated(ctx context.Context, cl client.Client, links []*v1alpha1.KubeLink) error {
	var list v1alpha1.KubeLinkList
	if err := cl.List(ctx, &list); err != nil {
		return err
	}
	state := map[string]string{}
	for _, kl := range list.Items {
		state[kl.Name] = kl.Status.State
	}
	without := 0
	for _, kl := range links {
		if state[kl.Name] == "" {
			without++
		}
	}
	if without > 0 {
		return fmt.Errorf("%d of %d links without a state", without, len(links))
	}
	return nil
}

// deleteScaleLinks deletes every link with scaleLabel and waits until the
// API server has none left.
func deleteScaleLinks(ctx context.Context, t *testing.T, cl client.Client) {
	t.Helper()
	sel := client.MatchingLabels{scaleLabel: "true"}
	var list v1alpha1.KubeLinkList
	if err := cl.List(ctx, &list, sel); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if err := cl.Delete(ctx, &list.Items[i]); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", list.Items[i].Name, err)
		}
	}
	if _, err := Eventually(ctx, 2*time.Minute, 250*time.Millisecond, func(ctx context.Context) error {
		var left v1alpha1.KubeLinkList
		if err := cl.List(ctx, &left, sel); err != nil {
			return err
		}
		if len(left.Items) > 0 {
			return fmt.Errorf("%d links left", len(left.Items))
		}
		return nil
	}); err != nil {
		t.Errorf("deleting the scale links: %v", err)
	}
}

// mustMetrics is brokerMetrics, failing the test on an error.
func mustMetrics(ctx context.Context, t *testing.T, c *Cluster, ip string) map[string]float64 {
	t.Helper()
	m, err := brokerMetrics(ctx, c, ip)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// watchLinks watches the cluster's KubeLinks until the test ends.
func watchLinks(ctx context.Context, t *testing.T, cl client.WithWatch) *kltest.LinkWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	w, err := kltest.WatchLinks(ctx, cl)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-w.Done() })
	return w
}

// timeLinkChange moves the link's service CIDR (100.100.i.0/24 to
// 100.101.i.0/24, or back) and returns the time until the watch saw its
// status observe the change.
func timeLinkChange(ctx context.Context, t *testing.T, w *kltest.LinkWatch, name string) time.Duration {
	t.Helper()
	took, err := w.TimeChange(ctx, name, func(s *v1alpha1.KubeLinkSpec) {
		if strings.HasPrefix(s.CIDR, "100.100.") {
			s.CIDR = "100.101." + strings.TrimPrefix(s.CIDR, "100.100.")
		} else {
			s.CIDR = "100.100." + strings.TrimPrefix(s.CIDR, "100.101.")
		}
	}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return took
}

// watchLinkB checks, every second until the returned stop, that c's link b
// is Up and pod reaches url; a miss fails the test with its time.
func watchLinkB(ctx context.Context, t *testing.T, c *Cluster, pod, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel) // a test that failed before stop
	var fails []string
	var mu sync.Mutex
	done := make(chan struct{})
	checks := 0
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			checks++
			var miss string
			if kl, err := c.Link(ctx, "b"); err != nil || kl.Status.State != v1alpha1.StateUp {
				miss = fmt.Sprintf("link b not Up (%v)", err)
				if err == nil {
					miss = fmt.Sprintf("link b %s: %s", kl.Status.State, kl.Status.Message)
				}
			} else if _, err := c.Wget(ctx, pod, url); err != nil && ctx.Err() == nil {
				miss = fmt.Sprintf("%s: %v", url, err)
			}
			if miss != "" && ctx.Err() == nil {
				mu.Lock()
				fails = append(fails, time.Now().Format("15:04:05.000")+" "+miss)
				mu.Unlock()
			}
		}
	}()
	return func() {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if checks < 10 {
			t.Errorf("link b was checked %d times only", checks)
		}
		if len(fails) > 0 {
			t.Errorf("link b or the traffic to b failed %d of %d checks while the links came and went: %v", len(fails), checks, fails)
		}
	}
}
