package kubeflags

import (
	"context"
	"time"
)

// Loop is the level-triggered controller loop every kubelink binary runs:
// one sync at once, then one after every Kick (kicks that arrive during a
// sync coalesce into one more), every resync period, and at the time a sync
// asks for. Syncs never overlap.
type Loop struct {
	trigger chan struct{}
	// periodic: the running sync is the first or was started by the
	// resync period (read only from within sync, on Run's goroutine).
	periodic bool
}

// Periodic reports, from within a sync, whether that sync is the first or
// was started by the resync period rather than by a Kick or its own
// request: the pass that re-checks what nothing announces (state changed
// behind the controller's back).
func (l *Loop) Periodic() bool { return l.periodic }

// NewLoop returns a loop that has not run yet; Kick may be called before Run.
func NewLoop() *Loop { return &Loop{trigger: make(chan struct{}, 1)} }

// Kick asks for another sync; it never blocks.
func (l *Loop) Kick() {
	select {
	case l.trigger <- struct{}{}:
	default:
	}
}

// Run calls sync until ctx ends. sync returns how soon it wants to run
// again; 0 (or anything not shorter than resync) means the resync period.
func (l *Loop) Run(ctx context.Context, resync time.Duration, sync func(context.Context) time.Duration) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	l.periodic = true
	for {
		next := sync(ctx)
		if ctx.Err() != nil {
			return
		}
		var early *time.Timer
		var earlyC <-chan time.Time
		if next > 0 && next < resync {
			early = time.NewTimer(next)
			earlyC = early.C
		}
		l.periodic = false
		select {
		case <-ctx.Done():
		case <-l.trigger:
		case <-tick.C:
			l.periodic = true
		case <-earlyC:
		}
		if early != nil {
			early.Stop()
		}
	}
}
