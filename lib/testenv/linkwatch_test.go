package testenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// LinkWatch times a spec change until a status observes it, counts the
// updates, and says so when no status ever does.
func TestLinkWatchTimesAChange(t *testing.T) {
	cp := testenv.SharedControlPlanesForTest(t, []string{"linkwatch"}, []string{"100.64.112.0/20"})[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wc, err := client.NewWithWatch(cp.Config(), client.Options{Scheme: cp.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20", Endpoint: "127.0.0.1:8777"}}
	if err := wc.Create(ctx, kl); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	w, err := testenv.WatchLinks(wctx, wc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stop(); <-w.Done() }()

	// No controller: no status observes the change.
	_, err = w.TimeChange(ctx, "b", func(s *v1alpha1.KubeLinkSpec) { s.CIDR = "100.64.32.0/20" }, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no status observing generation") {
		t.Fatalf("TimeChange without a status write: %v, want a timeout naming the generation", err)
	}

	// A controller that writes the observed generation 200 ms after a
	// spec change.
	go func() {
		var seen int64
		for ctx.Err() == nil {
			var cur v1alpha1.KubeLink
			if err := wc.Get(ctx, client.ObjectKey{Name: "b"}, &cur); err == nil && cur.Generation > seen && cur.Generation > cur.Status.ObservedGeneration {
				time.Sleep(200 * time.Millisecond)
				cur.Status.ObservedGeneration = cur.Generation
				if wc.Status().Update(ctx, &cur) == nil {
					seen = cur.Generation
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	writes := w.Writes.Load()
	took, err := w.TimeChange(ctx, "b", func(s *v1alpha1.KubeLinkSpec) { s.CIDR = "100.64.48.0/20" }, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took < 200*time.Millisecond || took > 10*time.Second {
		t.Errorf("TimeChange took %s, want the controller's 200 ms and more", took)
	}
	if got := w.Writes.Load() - writes; got < 2 {
		t.Errorf("%d updates counted for a spec patch and a status write, want at least 2", got)
	}
	var cur v1alpha1.KubeLink
	if err := wc.Get(ctx, client.ObjectKey{Name: "b"}, &cur); err != nil || cur.Spec.CIDR != "100.64.48.0/20" {
		t.Errorf("the link after TimeChange: %v, spec.cidr %q, want 100.64.48.0/20", err, cur.Spec.CIDR)
	}
}
