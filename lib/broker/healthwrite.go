package broker

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// healthWriter writes status updates that change nothing but the health
// figures (RTT, traffic, last handshake) outside the sync pass. A pass at
// 250 links had about 170 such writes due every --health-status-interval,
// one API request after another under the client's rate limit: seconds in
// which no change, Down or failover was handled (issue #33). A state change
// is still written by the pass at once; the figures follow within a second
// or two. The writer keeps only the latest figures per link, in the order
// they became due, and a link the pass writes (or that is deleted) is
// dropped from it.
type healthWriter struct {
	kube client.Client
	log  *slog.Logger

	mu      sync.Mutex
	pending map[string]healthWrite
	order   []string
	wake    chan struct{}
}

type healthWrite struct {
	orig   *v1alpha1.KubeLink
	health *v1alpha1.LinkHealth
}

func newHealthWriter(kube client.Client, log *slog.Logger) *healthWriter {
	return &healthWriter{kube: kube, log: log, pending: map[string]healthWrite{}, wake: make(chan struct{}, 1)}
}

// enqueue queues kl's new status (whose difference from kl.Status is only
// the health figures); a queued older one for the same link is replaced.
func (h *healthWriter) enqueue(kl *v1alpha1.KubeLink, st v1alpha1.KubeLinkStatus) {
	h.mu.Lock()
	if _, ok := h.pending[kl.Name]; !ok {
		h.order = append(h.order, kl.Name)
	}
	h.pending[kl.Name] = healthWrite{orig: kl.DeepCopy(), health: st.Health}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// drop forgets a queued write (the pass wrote the link, or it is gone).
func (h *healthWriter) drop(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.pending[name]; ok {
		delete(h.pending, name)
		h.order = slices.DeleteFunc(h.order, func(n string) bool { return n == name })
	}
}

func (h *healthWriter) next() (healthWrite, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.order) > 0 {
		n := h.order[0]
		h.order = h.order[1:]
		if w, ok := h.pending[n]; ok {
			delete(h.pending, n)
			return w, true
		}
	}
	return healthWrite{}, false
}

// run writes queued figures, one request at a time (the client's rate
// limit paces them), until ctx ends.
func (h *healthWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		for ctx.Err() == nil {
			w, ok := h.next()
			if !ok {
				break
			}
			kl := w.orig.DeepCopy()
			kl.Status.Health = w.health
			// A merge patch of the figures only: whatever the pass wrote
			// since (a new state) is not touched.
			err := h.kube.Status().Patch(ctx, kl, client.MergeFrom(w.orig))
			if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
				h.log.Warn("writing health figures", "link", kl.Name, "err", err)
			}
		}
	}
}

// queued is the number of links with figures waiting (tests).
func (h *healthWriter) queued() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pending)
}
