package kubeflags

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoopSyncsAtOnceOnKickOnResyncAndWhenAsked(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := NewLoop()
	var n atomic.Int32
	syncs := make(chan int32, 100)
	var next atomic.Int64
	// While hold is set, a sync waits for release, so the test can kick
	// during one sync for certain rather than racing the loop.
	var hold atomic.Bool
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, time.Hour, func(context.Context) time.Duration {
			syncs <- n.Add(1)
			if hold.Load() {
				<-release
			}
			return time.Duration(next.Load())
		})
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-syncs:
		case <-time.After(2 * time.Second):
			t.Fatalf("no sync %s", what)
		}
	}
	wait("at start")
	l.Kick()
	wait("after a kick")
	// Kicks during one sync coalesce into exactly one more sync.
	hold.Store(true)
	l.Kick()
	wait("for the held sync")
	l.Kick()
	l.Kick()
	l.Kick()
	hold.Store(false)
	release <- struct{}{}
	wait("after three kicks during one sync")
	select {
	case <-syncs:
		t.Error("three kicks during one sync gave more than one sync; they must coalesce")
	case <-time.After(300 * time.Millisecond):
	}
	// A sync that asks for an early run gets one without a kick.
	next.Store(int64(50 * time.Millisecond))
	l.Kick()
	wait("after the kick that sets the early wake-up")
	wait("at the early wake-up")
	next.Store(0)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestLoopResyncs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := NewLoop()
	var n atomic.Int32
	l.Run(ctx, 20*time.Millisecond, func(context.Context) time.Duration {
		if n.Add(1) == 4 {
			cancel()
		}
		return 0
	})
	if n.Load() != 4 {
		t.Errorf("%d syncs before cancel, want 4 (one at once, three resyncs)", n.Load())
	}
}

// Periodic tells the first sync and the resync period's from a kicked one.
func TestLoopTellsPeriodicSyncsFromKickedOnes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLoop()
	var got []bool
	l.Run(ctx, 300*time.Millisecond, func(context.Context) time.Duration {
		got = append(got, l.Periodic())
		switch len(got) {
		case 1:
			l.Kick() // the second sync is a kicked one
		case 3:
			cancel()
		}
		return 0
	})
	if len(got) != 3 || !got[0] || got[1] || !got[2] {
		t.Errorf("Periodic in the first, a kicked and a resync sync: %v, want [true false true]", got)
	}
}
