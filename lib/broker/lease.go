package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// elector holds the broker's Lease. It differs from client-go's leader
// election in what an unreachable API server means:
//
//   - The holder keeps the lease (and the data plane) while it cannot reach
//     the API: a renewal that fails for any reason but a conflict is no
//     reason to stop. It steps down only when it reads the Lease and finds
//     another holder — the one thing that proves someone else took over.
//   - A standby takes over only after it has read the same, unrenewed
//     record for a whole lease duration without a failed read in between:
//     a lease that went unrenewed during an outage the standby shared is
//     not expired when the API comes back, and the holder renews it first.
//
// So an API outage stops nothing and flips nothing; a broker that dies
// (without releasing) is replaced after the lease duration, one that shuts
// down (releasing) at once. A holder cut off alone is told to stop by the
// standby that takes over (fence.go).
type elector struct {
	lock                          resourcelock.Interface
	id                            string
	leaseDuration, renew, retry   time.Duration
	now                           func() time.Time
	log                           *slog.Logger
	onNewHolder                   func(holder string)
	onUnconfirmed, onReconfirmed  func(since time.Time)
	observed                      bool // observedRecord holds a successful read
	observedRecord                resourcelock.LeaderElectionRecord
	observedAt, lastRenew, warned time.Time
	// The holding period of this broker (set by a successful acquisition,
	// for the fence, fence.go): epoch is the Lease's leaderTransitions and
	// acquired its acquireTime (as the Lease stores it, in microseconds).
	// tookFrom is the holder whose expired lease it took and tookAcquired
	// that holder's acquireTime; "" and zero when the lease was free,
	// released or its own.
	epoch                  uint64
	acquired, tookAcquired time.Time
	tookFrom               string
	// confirmedAt is when the last successful acquisition or renewal was
	// sent (before the request: the server applied it no earlier), for
	// other goroutines; zero: never.
	mu          sync.Mutex
	confirmedAt time.Time
}

// confirm records a successful acquisition or renewal sent at sent.
func (e *elector) confirm(sent time.Time) {
	e.lastRenew = e.now()
	e.mu.Lock()
	e.confirmedAt = sent
	e.mu.Unlock()
}

// confirmedUntil is the last confirmation plus d, and whether that is
// still ahead: while it is, no other broker can have taken the lease (d
// below the lease duration).
func (e *elector) confirmedUntil(d time.Duration) (time.Time, bool) {
	e.mu.Lock()
	at := e.confirmedAt
	e.mu.Unlock()
	if at.IsZero() {
		return time.Time{}, false
	}
	until := at.Add(d)
	return until, e.now().Before(until)
}

// errLeaseTaken ends hold: another broker holds the lease.
var errLeaseTaken = errors.New("another broker holds the lease")

// acquire blocks until this elector holds the lease or ctx ends.
func (e *elector) acquire(ctx context.Context) error {
	t := time.NewTicker(e.retry)
	defer t.Stop()
	for {
		if e.tryAcquire(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (e *elector) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.renew)
}

// observe reads the Lease; a failed read forgets what was observed, so the
// expiry clock of a standby starts again with the next successful one.
func (e *elector) observe(ctx context.Context) (*resourcelock.LeaderElectionRecord, error) {
	cctx, cancel := e.call(ctx)
	defer cancel()
	rec, _, err := e.lock.Get(cctx)
	if err != nil {
		e.observed = false
		return nil, err
	}
	// Compared field by field at the Lease's own (microsecond) precision,
	// not as the raw record Get returns: that one is serialised with
	// metav1.Time, in whole seconds, so renewals within one second looked
	// unchanged and a standby's clock could start up to a second before
	// the holder's last renewal (found by make flake: a takeover 1.28 s
	// after the last renewal with a 2 s lease).
	if !e.observed || !sameRecord(*rec, e.observedRecord) {
		if rec.HolderIdentity != e.observedRecord.HolderIdentity && rec.HolderIdentity != "" && e.onNewHolder != nil {
			e.onNewHolder(rec.HolderIdentity)
		}
		e.observed, e.observedRecord, e.observedAt = true, *rec, e.now()
	}
	return rec, nil
}

// sameRecord reports whether two reads of the Lease show the same record.
func sameRecord(a, b resourcelock.LeaderElectionRecord) bool {
	return a.HolderIdentity == b.HolderIdentity && a.LeaseDurationSeconds == b.LeaseDurationSeconds &&
		a.AcquireTime.Time.Equal(b.AcquireTime.Time) && a.RenewTime.Time.Equal(b.RenewTime.Time) &&
		a.LeaderTransitions == b.LeaderTransitions
}

func (e *elector) record(acquired time.Time, transitions int) resourcelock.LeaderElectionRecord {
	now := metav1.NewTime(e.now())
	return resourcelock.LeaderElectionRecord{
		HolderIdentity: e.id, LeaseDurationSeconds: int(e.leaseDuration / time.Second),
		AcquireTime: metav1.NewTime(acquired), RenewTime: now, LeaderTransitions: transitions,
	}
}

// tryAcquire takes the lease when it is free, released, expired (as
// observed) or already ours.
func (e *elector) tryAcquire(ctx context.Context) bool {
	rec, err := e.observe(ctx)
	if apierrors.IsNotFound(err) {
		cctx, cancel := e.call(ctx)
		defer cancel()
		sent := e.now()
		if err := e.lock.Create(cctx, e.record(sent, 0)); err != nil {
			return false
		}
		e.confirm(sent)
		e.epoch, e.acquired, e.tookFrom, e.tookAcquired = 0, sent.Truncate(time.Microsecond), "", time.Time{}
		return true
	}
	if err != nil {
		return false
	}
	held := rec.HolderIdentity != "" && rec.HolderIdentity != e.id
	if held && e.now().Before(e.observedAt.Add(leaseDurationOf(rec, e.leaseDuration))) {
		return false
	}
	acquired, transitions := e.now(), rec.LeaderTransitions
	if rec.HolderIdentity == e.id {
		acquired = rec.AcquireTime.Time
	} else {
		transitions++
	}
	cctx, cancel := e.call(ctx)
	defer cancel()
	sent := e.now()
	if err := e.lock.Update(cctx, e.record(acquired, transitions)); err != nil {
		return false
	}
	e.confirm(sent)
	e.epoch, e.acquired, e.tookFrom, e.tookAcquired = uint64(max(transitions, 0)), acquired.Truncate(time.Microsecond), "", time.Time{}
	if held {
		e.tookFrom, e.tookAcquired = rec.HolderIdentity, rec.AcquireTime.Time
	}
	return true
}

// hold renews the lease every retry period until ctx ends (nil) or another
// holder is seen (errLeaseTaken). Failed renewals are logged once they span
// the lease duration, and the lease is kept.
func (e *elector) hold(ctx context.Context) error {
	t := time.NewTicker(e.retry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := e.renewOnce(ctx)
		switch {
		case errors.Is(err, errLeaseTaken):
			return err
		case err == nil:
			if !e.warned.IsZero() && e.onReconfirmed != nil {
				e.onReconfirmed(e.warned)
			}
			e.warned = time.Time{}
		case ctx.Err() != nil:
			return nil
		case e.warned.IsZero() && e.now().Sub(e.lastRenew) >= e.leaseDuration:
			e.warned = e.lastRenew
			if e.onUnconfirmed != nil {
				e.onUnconfirmed(e.lastRenew)
			}
		}
	}
}

func (e *elector) renewOnce(ctx context.Context) error {
	rec, err := e.observe(ctx)
	if err != nil {
		return err
	}
	if rec.HolderIdentity != "" && rec.HolderIdentity != e.id {
		return fmt.Errorf("%w: %s", errLeaseTaken, rec.HolderIdentity)
	}
	cctx, cancel := e.call(ctx)
	defer cancel()
	sent := e.now()
	if err := e.lock.Update(cctx, e.record(rec.AcquireTime.Time, rec.LeaderTransitions)); err != nil {
		return err // a conflict: the next read tells who holds it
	}
	e.confirm(sent)
	return nil
}

// release hands the lease over at shutdown: no holder and a one-second
// duration, so a standby takes over at once.
func (e *elector) release(ctx context.Context) {
	rec, err := e.observe(ctx)
	if err != nil || rec.HolderIdentity != e.id {
		return
	}
	cctx, cancel := e.call(ctx)
	defer cancel()
	r := resourcelock.LeaderElectionRecord{LeaseDurationSeconds: 1, RenewTime: metav1.NewTime(e.now()),
		AcquireTime: metav1.NewTime(e.now()), LeaderTransitions: rec.LeaderTransitions}
	if err := e.lock.Update(cctx, r); err != nil {
		e.log.Warn("releasing the lease", "err", err)
	}
}

// leaseDurationOf is the record's duration, or def when it has none.
func leaseDurationOf(rec *resourcelock.LeaderElectionRecord, def time.Duration) time.Duration {
	if rec.LeaseDurationSeconds > 0 {
		return time.Duration(rec.LeaseDurationSeconds) * time.Second
	}
	return def
}
