package clusterlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// BenchmarkBrokerScale measures the broker's cost as the number of links
// grows (issue #33), on a real API server and real kernel state in the
// gateway's namespace: one cluster's broker (WireGuard, wireguard-go here)
// with its production timers (--resync and --health-status-interval 10 s),
// then foreign KubeLinks applied in two steps (25, then up to 250 by
// default; KUBELINK_SCALE_LINKS="25,250"). Every peer's endpoint is on the
// gateway namespace's loopback, so nothing leaves it; no peer answers, and
// the links settle Down. Per size it prints:
//
//	BENCH scale_links_all_stated_seconds_<n>  apply of the step until every link has a state
//	BENCH scale_full_pass_ms_<n>              average sync pass over a 30 s steady window
//	BENCH scale_status_writes_per_min_<n>     status writes in that window, per minute
//	BENCH scale_rss_mib_<n>                   the broker's resident memory after the window
//	BENCH scale_rss_peak_mib_<n>              its highest resident memory so far (VmHWM)
//	BENCH scale_rss_anon_mib_<n>, …_file_…    the resident memory of its heap and stacks
//	                                          (RssAnon) and of its binary (RssFile)
//	BENCH scale_one_change_ms_<n>             a changed spec until the status observes it
//	                                          (median of 5 changes, each timed by a watch)
//	BENCH scale_one_change_max_ms_<n>         the slowest of those 5
//
// then the deletion of every link (BENCH scale_delete_all_seconds, until
// the broker counts no foreign link) and RATIO scale_rss_<max>_vs_<min>,
// scale_pass_<max>_vs_<min>. Run it with make bench.
func BenchmarkBrokerScale(bm *testing.B) {
	if bm.N > 1 {
		bm.Skip("one measured run is enough; use -benchtime 1x")
	}
	sizes := scaleSizes(bm)
	lab := New(bm, 1)
	a := lab.Clusters[0]
	// The local link in a /16 mesh: room for 250 members.
	local := a.LocalLink()
	local.Spec.ClusterAddress = "192.168.0.11/16"
	a.Apply(local)
	args := []string{"--resync", "10s", "--health-status-interval", "10s", "--pprof-addr", scalePprofAddr.String()}
	profiles := os.Getenv("KUBELINK_SCALE_PPROF")
	if profiles != "" {
		// Each pass's phases are timed at debug level: the log is kept
		// with the profiles.
		args = append(args, "--log-level", "debug")
	}
	broker := a.StartBroker(lab, a.GW, args...)
	if profiles != "" {
		bm.Cleanup(func() {
			if err := os.WriteFile(filepath.Join(profiles, "broker.log"), []byte(broker.Output()), 0o644); err != nil {
				bm.Error(err)
			}
		})
	}
	a.WaitState(local.Name, v1alpha1.StateUp, 30*time.Second)

	sw := watchStatus(bm, a)
	type figures struct{ passMs, rssMiB float64 }
	got := map[int]figures{}
	applied := 0
	for _, n := range sizes {
		begin := time.Now()
		for i := applied + 1; i <= n; i++ {
			a.Apply(scaleLink(bm, i))
		}
		applied = n
		waitFor(bm, fmt.Sprintf("every one of %d links to have a state", n), 15*time.Minute, func() bool {
			return allStated(bm, a, n+1)
		})
		stated := time.Since(begin)

		// Steady state: passes and status writes over a window.
		sum0, count0 := syncFigures(bm, a)
		w0 := sw.Writes.Load()
		const window = 30 * time.Second
		windowEnd := time.Now().Add(window)
		saveProfile(bm, a, "cpu", n)
		time.Sleep(time.Until(windowEnd))
		sum1, count1 := syncFigures(bm, a)
		perMin := float64(sw.Writes.Load()-w0) * float64(time.Minute) / float64(window)
		passMs := 0.0
		if count1 > count0 {
			passMs = (sum1 - sum0) / (count1 - count0) * 1000
		}
		rss := rssMiB(bm, broker)
		saveProfile(bm, a, "heap", n)

		// One change, five times: link 1's service CIDR moves, until the
		// watch sees its status observe the new generation.
		var changes []time.Duration
		for range 5 {
			// A second apart, as an operator's changes come: each is
			// timed alone, not behind the previous change's pass.
			time.Sleep(time.Second)
			changes = append(changes, timeChange(bm, sw, 1, n))
		}
		slices.Sort(changes)
		change := changes[len(changes)/2]

		got[n] = figures{passMs, rss}
		fmt.Printf("BENCH scale_links_all_stated_seconds_%d %.2f s\n", n, stated.Seconds())
		fmt.Printf("BENCH scale_full_pass_ms_%d %.0f ms\n", n, passMs)
		fmt.Printf("BENCH scale_status_writes_per_min_%d %.0f\n", n, perMin)
		fmt.Printf("BENCH scale_rss_mib_%d %.1f MiB\n", n, rss)
		fmt.Printf("BENCH scale_rss_peak_mib_%d %.1f MiB\n", n, peakRSSMiB(bm, broker))
		fmt.Printf("BENCH scale_rss_anon_mib_%d %.1f MiB\n", n, procMiB(bm, broker, "RssAnon:"))
		fmt.Printf("BENCH scale_rss_file_mib_%d %.1f MiB\n", n, procMiB(bm, broker, "RssFile:"))
		fmt.Printf("BENCH scale_one_change_ms_%d %.0f ms\n", n, float64(change.Microseconds())/1000)
		fmt.Printf("BENCH scale_one_change_max_ms_%d %.0f ms\n", n, float64(changes[len(changes)-1].Microseconds())/1000)
	}

	deleted := time.Now()
	ctx := waitCtx(bm, time.Minute)
	for i := 1; i <= applied; i++ {
		kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: scaleLinkName(i)}}
		if err := a.Kube.Delete(ctx, kl); err != nil {
			bm.Fatal(err)
		}
	}
	waitFor(bm, "the broker to count no foreign link", 10*time.Minute, func() bool {
		return foreignLinksCounted(bm, a) == 0
	})
	fmt.Printf("BENCH scale_delete_all_seconds_%d %.2f s\n", applied, time.Since(deleted).Seconds())
	fmt.Printf("BENCH scale_rss_mib_after_delete %.1f MiB\n", rssMiB(bm, broker))

	lo, hi := sizes[0], sizes[len(sizes)-1]
	if lo != hi && got[lo].rssMiB > 0 && got[lo].passMs > 0 {
		fmt.Printf("RATIO scale_rss_%d_vs_%d %.2f\n", hi, lo, got[hi].rssMiB/got[lo].rssMiB)
		fmt.Printf("RATIO scale_pass_%d_vs_%d %.2f\n", hi, lo, got[hi].passMs/got[lo].passMs)
	}
}

var scalePprofAddr = netip.MustParseAddrPort("127.0.0.1:6060")

// saveProfile writes the broker's profile at n links (kind "heap": the heap
// after a GC; "cpu": 10 s of CPU) to $KUBELINK_SCALE_PPROF/<kind>-<n>.pb.gz
// when that variable names a directory (go tool pprof -top reads them).
func saveProfile(bm *testing.B, c *Cluster, kind string, n int) {
	dir := os.Getenv("KUBELINK_SCALE_PPROF")
	if dir == "" {
		return
	}
	path := map[string]string{"heap": "/debug/pprof/heap?gc=1", "cpu": "/debug/pprof/profile?seconds=10"}[kind]
	body, err := Get(c.GW, scalePprofAddr, path, 30*time.Second)
	if err != nil {
		bm.Fatalf("%s profile: %v", kind, err)
	}
	file := filepath.Join(dir, fmt.Sprintf("%s-%d.pb.gz", kind, n))
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		bm.Fatal(err)
	}
	bm.Logf("%s profile at %d links: %s", kind, n, file)
}

// scaleSizes reads KUBELINK_SCALE_LINKS (default "25,250"): increasing
// link counts, each at most 250 (service CIDRs 100.100.<i>.0/24).
func scaleSizes(bm *testing.B) []int {
	spec := os.Getenv("KUBELINK_SCALE_LINKS")
	if spec == "" {
		spec = "25,250"
	}
	var sizes []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 250 || (len(sizes) > 0 && n <= sizes[len(sizes)-1]) {
			bm.Fatalf("KUBELINK_SCALE_LINKS=%q: want increasing counts between 1 and 250, e.g. 25,250", spec)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

func scaleLinkName(i int) string { return fmt.Sprintf("peer%03d", i) }

// scaleLink is foreign link i: cluster address 192.168.1.i, service CIDR
// 100.100.i.0/24, a fresh key, its endpoint on the gateway's loopback.
func scaleLink(bm *testing.B, i int) *v1alpha1.KubeLink {
	key, err := wireguard.GeneratePrivateKey()
	if err != nil {
		bm.Fatal(err)
	}
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: scaleLinkName(i)}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: fmt.Sprintf("192.168.1.%d/16", i), CIDR: fmt.Sprintf("100.100.%d.0/24", i),
		Endpoint: fmt.Sprintf("127.0.0.1:%d", 40000+i), PublicKey: wireguard.PublicKey(key).String()}}
}

// timeChange moves link i's service CIDR to one no other link uses
// (100.101.i.0/24, or back) and returns the time until the watch saw its
// status observe the change.
func timeChange(bm *testing.B, w *testenv.LinkWatch, i, n int) time.Duration {
	took, err := w.TimeChange(waitCtx(bm, 6*time.Minute), scaleLinkName(i), func(s *v1alpha1.KubeLinkSpec) {
		if strings.HasPrefix(s.CIDR, "100.100.") {
			s.CIDR = fmt.Sprintf("100.101.%d.0/24", i)
		} else {
			s.CIDR = fmt.Sprintf("100.100.%d.0/24", i)
		}
	}, 5*time.Minute)
	if err != nil {
		bm.Fatalf("link %d of %d: %v", i, n, err)
	}
	return took
}

// allStated reports whether want KubeLinks exist and each has a state.
func allStated(bm *testing.B, c *Cluster, want int) bool {
	var list v1alpha1.KubeLinkList
	if err := c.Kube.List(waitCtx(bm, 30*time.Second), &list); err != nil {
		return false
	}
	if len(list.Items) < want {
		return false
	}
	for _, kl := range list.Items {
		if kl.Status.State == "" {
			return false
		}
	}
	return true
}

// watchStatus watches the cluster's KubeLinks until the benchmark ends.
func watchStatus(bm *testing.B, c *Cluster) *testenv.LinkWatch {
	wc, err := client.NewWithWatch(c.Plane.Config(), client.Options{Scheme: c.Plane.Scheme()})
	if err != nil {
		bm.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := testenv.WatchLinks(ctx, wc)
	if err != nil {
		cancel()
		bm.Fatal(err)
	}
	bm.Cleanup(func() { cancel(); <-w.Done() })
	return w
}

// syncFigures reads the broker's kubelink_sync_duration_seconds sum and
// count from its metrics.
func syncFigures(bm *testing.B, c *Cluster) (sum, count float64) {
	body, err := Get(c.GW, metricsAddr, "/metrics", 10*time.Second)
	if err != nil {
		bm.Fatal(err)
	}
	return metricValue(body, "kubelink_sync_duration_seconds_sum"), metricValue(body, "kubelink_sync_duration_seconds_count")
}

// foreignLinksCounted is the number of links the broker's kubelink_links
// gauge counts, less the local one.
func foreignLinksCounted(bm *testing.B, c *Cluster) int {
	body, err := Get(c.GW, metricsAddr, "/metrics", 10*time.Second)
	if err != nil {
		return -1
	}
	total := 0.0
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "kubelink_links{") {
			if f := strings.Fields(l); len(f) == 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				total += v
			}
		}
	}
	return int(total) - 1
}

// metricValue is the value of the unlabelled series name in a Prometheus
// text exposition (0 when absent).
func metricValue(body, name string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// rssMiB is the process's resident memory (VmRSS).
func rssMiB(bm *testing.B, p *Process) float64 { return procMiB(bm, p, "VmRSS:") }

// peakRSSMiB is the broker's highest resident memory so far (VmHWM): what
// a memory limit must allow.
func peakRSSMiB(bm *testing.B, p *Process) float64 { return procMiB(bm, p, "VmHWM:") }

// procMiB reads one memory field of the broker's /proc/<pid>/status.
func procMiB(bm *testing.B, p *Process, field string) float64 {
	pid := p.cmd.Process.Pid
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if !strings.HasPrefix(strings.TrimSpace(string(comm)), "kubelink-broker") {
		bm.Fatalf("pid %d is %q, not the broker (ip netns exec is expected to exec it in place)", pid, strings.TrimSpace(string(comm)))
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		bm.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == field {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				bm.Fatal(err)
			}
			return kb / 1024
		}
	}
	bm.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
