//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A probe is one check run inside a pod, over and over for a bounded
// window, each result stamped with the pod's clock (a kind node shares the
// host's kernel clock, so the stamps compare with time.Now() here). Outage
// and withdrawal times come from the whole series, not from one check after
// a wait: a flap anywhere in the window shows.
type probe struct {
	at time.Time
	ok bool
}

// probeLoop runs check (a shell command; exit 0 = ok) in pod every pause,
// each bounded by perCheck, until window has passed, and returns the series.
func probeLoop(ctx context.Context, c *Cluster, pod, check string, perCheck, pause, window time.Duration) ([]probe, error) {
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d ))
while [ "$(date +%%s)" -lt "$end" ]; do
  t=$(date +%%s.%%N)
  if timeout %.2f sh -c %s >/dev/null 2>&1; then echo "ok $t"; else echo "fail $t"; fi
  sleep %.2f
done`, int(window.Seconds()+0.999), perCheck.Seconds(), shellQuote(check), pause.Seconds())
	ctx, cancel := context.WithTimeout(ctx, window+30*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, pod, "bash", "-c", script)
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

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

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

// recovered reads a series that passed before t0: the time from t0 until
// the first passing check after the last failing one (0 when nothing
// failed), the number of failed checks, and how long the series kept
// passing after that (the stable tail). A series that ends failing is an
// error.
func recovered(series []probe, t0 time.Time) (took, tail time.Duration, fails int, err error) {
	lastFail := -1
	for i, p := range series {
		if !p.at.Before(t0) && !p.ok {
			lastFail, fails = i, fails+1
		}
	}
	end := series[len(series)-1]
	if lastFail < 0 {
		return 0, end.at.Sub(t0), 0, nil
	}
	if lastFail == len(series)-1 {
		return 0, 0, fails, fmt.Errorf("still failing at the end of the window (%s after the event, %d failed checks)", end.at.Sub(t0).Round(time.Millisecond), fails)
	}
	back := series[lastFail+1]
	return back.at.Sub(t0), end.at.Sub(back.at), fails, nil
}

// distribution prints one BENCH line per run and the summary, and returns
// the worst value.
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
	fmt.Printf("BENCH %s_min %.2f\nBENCH %s_median %.2f\nBENCH %s_max %.2f\n", name, s[0], name, med, name, s[len(s)-1])
	t.Logf("%s over %d runs: min %.2f median %.2f max %.2f (runs %v)", name, len(runs), s[0], med, s[len(s)-1], runs)
	return s[len(s)-1]
}

// runs is how often a measured e2e scenario repeats (E2E_RUNS, default 5).
func runs(t *testing.T) int {
	t.Helper()
	if v := os.Getenv("E2E_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("E2E_RUNS=%q: want a positive number", v)
		}
		return n
	}
	return 5
}
