//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A probe is one check run inside a pod by e2e/prober, over and over for a
// bounded window, each result stamped with the pod's clock (a kind node shares the
// host's kernel clock, so the stamps compare with time.Now() here). Outage
// and withdrawal times come from the whole series, not from one check after
// a wait: a flap anywhere in the window shows.
type probe struct {
	at time.Time
	ok bool
}

// probeLoopReady runs the prober (e2e/prober) in pod with args (e.g.
// "http", URL, WANT) every pause, each check bounded by perCheck, until
// window has passed (creating the file ready after its first check, when
// not empty), and returns the series.
func probeLoopReady(ctx context.Context, c *Cluster, pod, ready string, args []string, perCheck, pause, window time.Duration, flags ...string) ([]probe, error) {
	bin, err := installProber(ctx, c, pod)
	if err != nil {
		return nil, err
	}
	cmd := []string{bin, "-window", window.String(), "-every", pause.String(), "-timeout", perCheck.String()}
	if ready != "" {
		cmd = append(cmd, "-ready", ready)
	}
	cmd = append(cmd, flags...)
	cmd = append(cmd, args...)
	ctx, cancel := context.WithTimeout(ctx, window+30*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, pod, cmd...)
	if err != nil {
		return nil, err
	}
	var series []probe
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		sec, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("probe output %q: %w", line, err)
		}
		series = append(series, probe{at: time.Unix(0, int64(sec*1e9)), ok: f[0] == "ok"})
	}
	if len(series) == 0 {
		return nil, fmt.Errorf("probe in %s/%s printed nothing: %q", c.Name, pod, out)
	}
	return series, nil
}

// settleFlags make a prober stop once every check of settle passed after
// the test created the file over in the pod (with endEvent), rather than
// at the end of its window; the window still bounds it.
func settleFlags(over string, settle time.Duration) []string {
	return []string{"-over", over, "-settle", settle.String()}
}

// endEvent tells a prober started with settleFlags that the event is over.
func endEvent(ctx context.Context, c *Cluster, pod, over string) error {
	_, err := c.Exec(ctx, pod, "touch", over)
	return err
}

// probeSeries is the result of a prober started by startProbe.
type probeSeries struct {
	series []probe
	err    error
}

// startProbe runs probeLoopReady in the background and returns once the prober
// has made its first checks (it waits for the prober's -ready file, not for
// a fixed time: a loaded node can take seconds to start an exec), so that
// an event after it has checks before it. The channel gets the series.
func startProbe(ctx context.Context, c *Cluster, pod string, args []string, perCheck, pause, window time.Duration, flags ...string) (<-chan probeSeries, error) {
	ready := fmt.Sprintf("/tmp/kubelink-prober-ready-%d", time.Now().UnixNano())
	done := make(chan probeSeries, 1)
	go func() {
		s, err := probeLoopReady(ctx, c, pod, ready, args, perCheck, pause, window, flags...)
		done <- probeSeries{s, err}
	}()
	_, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		select {
		case r := <-done:
			done <- r
			return nil // ended already: the caller reads why
		default:
		}
		_, err := c.Exec(ctx, pod, "test", "-e", ready)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("the prober in %s/%s did not start its checks: %w", c.Name, pod, err)
	}
	// a few checks more before the event
	time.Sleep(3*pause + perCheck/2)
	return done, nil
}

var (
	proberOnce sync.Once
	proberBin  string
	proberErr  error
	installed  sync.Map // cluster/pod → true
)

// installProber builds e2e/prober once (static, linux/amd64) and copies it
// into pod with the lab's kubectl (kubectl cp: the toolbox image has tar).
func installProber(ctx context.Context, c *Cluster, pod string) (string, error) {
	const target = "/tmp/kubelink-prober"
	proberOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kubelink-prober")
		if err != nil {
			proberErr = err
			return
		}
		proberBin = filepath.Join(dir, "prober")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", proberBin, "./prober")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			proberErr = fmt.Errorf("building the prober: %v\n%s", err, out)
		}
	})
	if proberErr != nil {
		return "", proberErr
	}
	key := c.Name + "/" + pod
	if _, ok := installed.Load(key); ok {
		return target, nil
	}
	out, err := exec.CommandContext(ctx, kubectlPath(), "--kubeconfig", c.Kubeconfig, "cp", proberBin, "default/"+pod+":"+target).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl cp prober to %s/%s: %v\n%s", c.Name, pod, err, out)
	}
	if _, err := c.Exec(ctx, pod, "chmod", "0755", target); err != nil {
		return "", err
	}
	installed.Store(key, true)
	return target, nil
}

// kubectlPath is the lab's kubectl (lab/scripts/k8s-bins.sh).
func kubectlPath() string {
	cache := os.Getenv("KUBELINK_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "kubelink")
	}
	return filepath.Join(cache, "bin", "v1.34.4", "kubectl")
}

// settled reads the series from t0 on: the time from t0 until the check
// started to give want and kept giving it to the end of the series, and
// how long it kept it (the stable tail). A series that never settles, or
// has no check before t0 that gave !want (the state before the event must
// be the opposite), is an error.
func settled(series []probe, t0 time.Time, want bool) (took, tail time.Duration, flaps int, err error) {
	before := -1
	for i, p := range series {
		if p.at.Before(t0) {
			before = i
		}
	}
	if before < 0 {
		return 0, 0, 0, fmt.Errorf("no check before the event (series starts %s after it)", series[0].at.Sub(t0))
	}
	if series[before].ok == want {
		return 0, 0, 0, fmt.Errorf("the last check before the event already gave %v", want)
	}
	last := series[len(series)-1]
	if last.ok != want {
		return 0, 0, 0, fmt.Errorf("the last check (%s after the event) still gave %v", last.at.Sub(t0).Round(time.Millisecond), !want)
	}
	from := len(series) - 1
	for from > before+1 && series[from-1].ok == want {
		from--
	}
	// changes of result between the event and the settling point
	for i := before + 1; i < from; i++ {
		if series[i].ok != series[i-1].ok {
			flaps++
		}
	}
	if from == before+1 {
		// the first check after the event already gave want: it ended
		// somewhere between the last opposite check and this one
		return series[from].at.Sub(t0), last.at.Sub(series[from].at), 0, nil
	}
	return series[from].at.Sub(t0), last.at.Sub(series[from].at), flaps, nil
}

// outageRun is how many failed checks in a row make an outage; a shorter
// run of failures after traffic came back is a flap, counted apart.
const outageRun = 3

// recovered reads a series that passed before t0: the time from t0 until
// the first passing check after the last outage (outageRun or more failed
// checks in a row; 0 when there was none), the failed checks, the flaps
// (shorter runs of failures after that), and how long the series went on
// after traffic was back (the tail). A series that ends in an outage is an
// error.
func recovered(series []probe, t0 time.Time) (took, tail time.Duration, fails, flaps int, err error) {
	if !series[0].at.Before(t0) {
		return 0, 0, 0, 0, fmt.Errorf("no check before the event (series starts %s after it)", series[0].at.Sub(t0))
	}
	if !series[0].ok {
		return 0, 0, 0, 0, fmt.Errorf("the first check before the event failed already")
	}
	end := series[len(series)-1]
	backAt := -1 // index of the first pass after the last outage
	run := 0
	for i, p := range series {
		if p.at.Before(t0) {
			continue
		}
		if !p.ok {
			fails++
			run++
			continue
		}
		if run >= outageRun {
			backAt = i
		} else if run > 0 && backAt >= 0 {
			flaps++
		}
		run = 0
	}
	if run >= outageRun {
		return 0, 0, fails, flaps, fmt.Errorf("still failing at the end of the window (%s after the event, %d failed checks)", end.at.Sub(t0).Round(time.Millisecond), fails)
	}
	if backAt < 0 {
		return 0, end.at.Sub(t0), fails, flaps, nil // no outage at all
	}
	back := series[backAt]
	return back.at.Sub(t0), end.at.Sub(back.at), fails, flaps, nil
}

// disrupted reads a series from t0 on: the time until the first passing
// check after the last failed one (0 when no check failed). Unlike
// recovered, it counts every failed check, also one too short to be an
// outage.
func disrupted(series []probe, t0 time.Time) time.Duration {
	var took time.Duration
	failed := false
	for _, p := range series {
		if p.at.Before(t0) {
			continue
		}
		if !p.ok {
			failed = true
			continue
		}
		if failed {
			took, failed = p.at.Sub(t0), false
		}
	}
	return took
}

// distribution prints the BENCH lines of a measured scenario (min, median
// and max over its runs, named after the lab's data plane) and returns the
// worst value. `make lab-bench` repeats the scenarios (E2E_RUNS) for these
// figures; `make e2e` runs each once and checks its regression bound.
func distribution(t *testing.T, name string, runs []float64) float64 {
	t.Helper()
	if len(runs) == 0 {
		t.Errorf("%s: no runs", name)
		return 0
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	full := "lab_" + lab.Mode + "_" + name
	fmt.Printf("BENCH %s_min %.2f s\nBENCH %s_median %.2f s\nBENCH %s_max %.2f s\nBENCH %s_runs %d runs\n",
		full, s[0], full, med, full, s[len(s)-1], full, len(s))
	t.Logf("%s over %d runs: min %.2f median %.2f max %.2f (runs %v)", full, len(runs), s[0], med, s[len(s)-1], runs)
	return s[len(s)-1]
}

// runs is how often a measured e2e scenario repeats: once in `make e2e`
// (a correctness check with a regression bound), E2E_RUNS times (default 5)
// in `make lab-bench`, which sets it.
func runs(t *testing.T) int {
	t.Helper()
	if v := os.Getenv("E2E_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("E2E_RUNS=%q: want a positive number", v)
		}
		return n
	}
	return 1
}
