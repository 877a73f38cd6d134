package testenv

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// LinkWatch watches a cluster's KubeLinks until its context ends, for the
// scale measurements (lib/clusterlab's benchmark, the lab's make
// lab-scale): it counts their updates (each status write is one) and times
// a change until a link's status observes it. A watch the API server ends
// (its request timeout) is opened again.
type LinkWatch struct {
	// Writes counts the KubeLink updates seen.
	Writes atomic.Int64
	cl     client.WithWatch
	done   chan struct{}

	mu   sync.Mutex
	name string
	gen  int64
	seen chan time.Time
}

// WatchLinks starts a LinkWatch with cl; it stops when ctx ends (Done).
func WatchLinks(ctx context.Context, cl client.WithWatch) (*LinkWatch, error) {
	w, err := cl.Watch(ctx, &v1alpha1.KubeLinkList{})
	if err != nil {
		return nil, err
	}
	lw := &LinkWatch{cl: cl, done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		for {
			for ev := range w.ResultChan() {
				if ev.Type != watch.Modified {
					continue
				}
				lw.Writes.Add(1)
				if kl, ok := ev.Object.(*v1alpha1.KubeLink); ok {
					lw.observe(kl)
				}
			}
			for {
				if ctx.Err() != nil {
					return
				}
				var err error
				if w, err = cl.Watch(ctx, &v1alpha1.KubeLinkList{}); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return lw, nil
}

// Done is closed once the watch stopped (its context ended).
func (lw *LinkWatch) Done() <-chan struct{} { return lw.done }

func (lw *LinkWatch) observe(kl *v1alpha1.KubeLink) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.seen != nil && kl.Name == lw.name && kl.Status.ObservedGeneration >= lw.gen {
		lw.seen <- time.Now()
		lw.seen = nil
	}
}

// TimeChange applies edit to link name's spec (a merge patch, so a status
// write in between does not conflict) and returns the time from the patch
// until the watch delivered a status of the link that observes the new
// generation; an error after limit.
func (lw *LinkWatch) TimeChange(ctx context.Context, name string, edit func(*v1alpha1.KubeLinkSpec), limit time.Duration) (time.Duration, error) {
	kl := &v1alpha1.KubeLink{}
	if err := lw.cl.Get(ctx, client.ObjectKey{Name: name}, kl); err != nil {
		return 0, err
	}
	// Expected before the patch: the broker may write the status before
	// the patch call returns.
	lw.mu.Lock()
	lw.name, lw.gen, lw.seen = name, kl.Generation+1, make(chan time.Time, 1)
	seen := lw.seen
	lw.mu.Unlock()
	orig := kl.DeepCopy()
	edit(&kl.Spec)
	patched := time.Now()
	if err := lw.cl.Patch(ctx, kl, client.MergeFrom(orig)); err != nil {
		return 0, fmt.Errorf("changing %s: %w", name, err)
	}
	select {
	case at := <-seen:
		return at.Sub(patched), nil
	case <-time.After(limit):
		return 0, fmt.Errorf("%s: no status observing generation %d within %s", name, kl.Generation, limit)
	}
}
