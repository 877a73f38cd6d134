package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kubelink/kubelink/lib/testenv"
)

// leaseCandidate is an elector whose API traffic goes through a proxy of
// its own, so that a test can cut one candidate or all of them off the
// API server (connections refused and reset, as for a stopped server).
type leaseCandidate struct {
	*elector
	proxy                    *testenv.Proxy
	unconfirmed, reconfirmed atomic.Int32
}

func newCandidate(t *testing.T, cp *testenv.ControlPlane, id string) *leaseCandidate {
	t.Helper()
	cfg := cp.Config()
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(ln, u.Host)
	t.Cleanup(p.Close)
	cfg.Host = "https://" + p.Addr().String()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &leaseCandidate{proxy: p}
	c.elector = &elector{
		lock: &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: "default", Name: "lease-test"},
			Client: cs.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: id}},
		id: id, leaseDuration: 2 * time.Second, renew: time.Second, retry: 100 * time.Millisecond,
		now: time.Now, log: slog.New(slog.DiscardHandler),
		onUnconfirmed: func(time.Time) { c.unconfirmed.Add(1) },
		onReconfirmed: func(time.Time) { c.reconfirmed.Add(1) },
	}
	return c
}

// holdInBackground runs hold until the test ends or it returns.
func holdInBackground(t *testing.T, c *leaseCandidate) (stop context.CancelFunc, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- c.hold(ctx) }()
	t.Cleanup(cancel)
	return cancel, ch
}

// renewTime is the renewTime of the test's Lease, read directly (not
// through a candidate's proxy).
func renewTime(t *testing.T, cp *testenv.ControlPlane) time.Time {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	l, err := cs.CoordinationV1().Leases("default").Get(context.Background(), "lease-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.RenewTime == nil {
		t.Fatal("the Lease has no renewTime")
	}
	return l.Spec.RenewTime.Time
}

// acquiredWithin reports whether c acquires the lease within d.
func acquiredWithin(c *leaseCandidate, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.acquire(ctx) == nil
}

// The lease against a real API server: an outage of the API server (for
// both candidates) stops and flips nothing, before and after it comes back;
// a holder cut off alone is replaced after the lease duration and steps
// down once it reads the new holder; a dead holder is replaced after the
// lease duration, a released lease at once.
func TestLeaseSurvivesAPIOutage(t *testing.T) {
	cp := testenv.StartForTest(t)
	a, b := newCandidate(t, cp, "a"), newCandidate(t, cp, "b")
	if !acquiredWithin(a, 5*time.Second) {
		t.Fatal("a did not acquire the free lease")
	}
	checkEpoch(t, a, 0, "")
	stopA, heldA := holdInBackground(t, a)
	if acquiredWithin(b, 3*a.leaseDuration) {
		t.Fatal("b acquired the lease a holds and renews")
	}

	// The API server unreachable for both, 4 lease durations: a keeps it
	// (hold does not return), b cannot take it — during the outage and
	// for 3 lease durations after it.
	a.proxy.SetDown(true)
	b.proxy.SetDown(true)
	outage := 4 * a.leaseDuration
	bDuring := make(chan bool, 1)
	go func() { bDuring <- acquiredWithin(b, outage) }()
	select {
	case err := <-heldA:
		t.Fatalf("a stopped holding during the API outage: %v", err)
	case <-time.After(outage):
	}
	if <-bDuring {
		t.Fatal("b acquired the lease during the API outage")
	}
	if a.unconfirmed.Load() != 1 {
		t.Errorf("a reported the unrenewed lease %d times, want once", a.unconfirmed.Load())
	}
	a.proxy.SetDown(false)
	b.proxy.SetDown(false)
	bAfter := make(chan bool, 1)
	go func() { bAfter <- acquiredWithin(b, 3*a.leaseDuration) }()
	select {
	case err := <-heldA:
		t.Fatalf("a stopped holding after the API came back: %v", err)
	case took := <-bAfter:
		if took {
			t.Fatal("b took the lease over when the API came back (the holder renews first)")
		}
	}
	if a.reconfirmed.Load() != 1 {
		t.Errorf("a reported the renewed lease %d times, want once", a.reconfirmed.Load())
	}

	// a alone cut off: b takes over after the lease duration; a keeps
	// holding while it cannot read the lease, then steps down.
	a.proxy.SetDown(true)
	// The bound counts from a's last renewal, not from the cut: a renews
	// every second, so the record b watches may have stood still for up to
	// that long already (the first run of make flake failed on measuring
	// from the cut: b took over 1.5 s after it, 2 s after the renewal).
	lastRenew := renewTime(t, cp)
	if !acquiredWithin(b, 4*a.leaseDuration) {
		t.Fatal("b did not take over the lease of a holder cut off from the API")
	}
	checkEpoch(t, b, 1, "a") // a is fenced (fence.go)
	if took := time.Since(lastRenew); took < a.leaseDuration {
		t.Errorf("b took over %s after a's last renewal, before the lease duration %s", took, a.leaseDuration)
	}
	select {
	case err := <-heldA:
		t.Fatalf("a stopped holding while it could not read the lease: %v", err)
	default:
	}
	a.proxy.SetDown(false)
	select {
	case err := <-heldA:
		if !errors.Is(err, errLeaseTaken) {
			t.Fatalf("a stopped holding with %v, want %v", err, errLeaseTaken)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a did not step down after reading that b holds the lease")
	}
	stopA()

	// b dies without releasing: a takes over after the lease duration.
	stopB, heldB := holdInBackground(t, b)
	time.Sleep(300 * time.Millisecond)
	stopB()
	if err := <-heldB; err != nil {
		t.Fatalf("b's hold ended with %v on cancellation", err)
	}
	lastRenew = renewTime(t, cp) // b's last renewal, as above
	if !acquiredWithin(a, 4*a.leaseDuration) {
		t.Fatal("a did not take over after b died")
	}
	checkEpoch(t, a, 2, "b")
	if took := time.Since(lastRenew); took < a.leaseDuration {
		t.Errorf("a took over %s after b's last renewal, before the lease duration %s", took, a.leaseDuration)
	}

	// a releases: b takes over at once.
	a.release(context.Background())
	released := time.Now()
	if !acquiredWithin(b, time.Second) {
		t.Fatal("b did not take over a released lease within a second")
	}
	checkEpoch(t, b, 3, "") // released: nobody to fence
	t.Logf("released lease taken over after %s", time.Since(released).Round(time.Millisecond))
}

// checkEpoch: c's holding period is the Lease's epoch, and it took the
// lease from tookFrom (whose expired lease it took; "" when free or
// released).
func checkEpoch(t *testing.T, c *leaseCandidate, epoch uint64, tookFrom string) {
	t.Helper()
	if c.epoch != epoch || c.tookFrom != tookFrom {
		t.Errorf("%s holds epoch %d taken from %q, want epoch %d from %q", c.id, c.epoch, c.tookFrom, epoch, tookFrom)
	}
}

// Two renewals within one second are two records: a standby that took them
// for one would start its expiry clock up to a second too early.
func TestSameRecordSeesSubSecondRenewals(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 13, 0, 0, 100_000_000, time.UTC)
	rec := func(renew time.Time) resourcelock.LeaderElectionRecord {
		return resourcelock.LeaderElectionRecord{HolderIdentity: "a", LeaseDurationSeconds: 4,
			AcquireTime: metav1.NewTime(t0), RenewTime: metav1.NewTime(renew), LeaderTransitions: 1}
	}
	if !sameRecord(rec(t0), rec(t0)) {
		t.Error("the same record read twice differs")
	}
	if sameRecord(rec(t0), rec(t0.Add(300*time.Millisecond))) {
		t.Error("a renewal 300 ms later, in the same second, looks like the same record")
	}
	other := rec(t0)
	other.HolderIdentity = "b"
	if sameRecord(rec(t0), other) {
		t.Error("another holder looks like the same record")
	}
}
