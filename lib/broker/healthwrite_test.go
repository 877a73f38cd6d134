package broker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The health writer writes only the figures: a state written after the
// figures were queued stays; the latest queued figures of a link win; a
// dropped link is not written; a link deleted meanwhile is no error.
func TestHealthWriterWritesOnlyTheFigures(t *testing.T) {
	_, kube, ctx := startAPI(t)
	get := func(name string) *v1alpha1.KubeLink {
		t.Helper()
		var kl v1alpha1.KubeLink
		if err := kube.Get(ctx, client.ObjectKey{Name: name}, &kl); err != nil {
			t.Fatal(err)
		}
		return &kl
	}
	for _, n := range []string{"b", "c", "d"} {
		kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1alpha1.KubeLinkSpec{Endpoint: "127.0.0.1:1", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20", PublicKey: testKey.String()}}
		if err := kube.Create(ctx, kl); err != nil {
			t.Fatal(err)
		}
		orig := kl.DeepCopy()
		kl.Status.State = v1alpha1.StateUp
		if err := kube.Status().Patch(ctx, kl, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	h := newHealthWriter(kube, slog.New(slog.NewTextHandler(io.Discard, nil)))
	figures := func(kl *v1alpha1.KubeLink, rx int64) v1alpha1.KubeLinkStatus {
		st := *kl.Status.DeepCopy()
		st.Health = &v1alpha1.LinkHealth{RxBytes: rx}
		return st
	}
	b, c, d := get("b"), get("c"), get("d")
	h.enqueue(b, figures(b, 1))
	h.enqueue(b, figures(b, 2)) // replaces the first
	h.enqueue(c, figures(c, 3))
	h.enqueue(d, figures(d, 4))
	h.drop("c")
	if h.queued() != 2 {
		t.Fatalf("%d links queued, want 2 (b, d)", h.queued())
	}
	// Meanwhile the pass writes b Down, and d is deleted.
	orig := b.DeepCopy()
	b.Status.State = v1alpha1.StateDown
	if err := kube.Status().Patch(ctx, b, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	if err := kube.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}

	go h.run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := get("b")
		if got.Status.Health != nil && got.Status.Health.RxBytes == 2 {
			if got.Status.State != v1alpha1.StateDown {
				t.Errorf("b's state = %q after the figures were written, want Down (written after they were queued)", got.Status.State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's figures not written within 10s: %+v", got.Status.Health)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// d (deleted meanwhile) may be taken after b: it leaves the queue
	// without a write, not kept for a retry.
	for h.queued() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d still queued after 10s: the deleted link d is kept for retries", h.queued())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := get("c"); got.Status.Health != nil {
		t.Errorf("c's dropped figures were written: %+v", got.Status.Health)
	}
}
