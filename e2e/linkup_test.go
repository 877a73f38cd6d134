//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// linkUpBudget is the regression bound on how long after the apply of a
// KubeLink pair both links are Up (once in `make e2e`; the figures are
// `make lab-bench`'s, docs/benchmarks.md). A link comes Up on its first
// answered probe, a second or two on this machine; a regression (a peer
// that waits for a resync, a handshake that never happens) takes the
// broker's resync (30 s) or forever.
const linkUpBudget = 25 * time.Second

// The lab's link pair a ↔ b is deleted, the traffic between the clusters
// stops, and the pair is applied again as it was: both links are Up within
// the bound and traffic flows both ways.
func TestLinkUpAfterApply(t *testing.T) {
	// A's link b and B's link a as lab-up applied them: the spec, and the
	// labels and annotations (kubectl's last-applied configuration, so
	// that the next `make lab-up` applies over them as before)
	var linkA, linkB v1alpha1.KubeLink
	pair := []linkRef{{lab.A, "b", &linkA}, {lab.B, "a", &linkB}}
	apply := func(ctx context.Context) error {
		for _, l := range pair {
			err := l.c.Res.Create(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{
				Name: l.name, Labels: l.saved.Labels, Annotations: l.saved.Annotations}, Spec: l.saved.Spec})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: creating link %s: %w", l.c.Name, l.name, err)
			}
		}
		return nil
	}
	f := features.New("link Up after the apply of a KubeLink pair").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, l := range pair {
				got, err := l.c.Link(ctx, l.name)
				if err != nil {
					t.Fatal(err)
				}
				*l.saved = *got
			}
			return ctx
		}).
		Assess("deleted and applied again: both links Up within the budget, traffic both ways", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			var took []float64
			for run := 1; run <= runs(t); run++ {
				took = append(took, linkUpOnce(ctx, t, run, pair, apply).Seconds())
			}
			if worst := distribution(t, "link_up_after_apply_seconds", took); worst > linkUpBudget.Seconds() {
				t.Errorf("worst link Up %.2fs after the apply, regression bound %s", worst, linkUpBudget)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			// a run that failed half-way leaves no cluster without its link
			if err := apply(ctx); err != nil {
				t.Errorf("restoring the link pair: %v", err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// linkRef is one link of a pair: cluster c's KubeLink name, and the object
// as it was before the test.
type linkRef struct {
	c     *Cluster
	name  string
	saved *v1alpha1.KubeLink
}

// linkUpOnce deletes the pair, waits until it is gone and traffic A → B
// stops, applies it again (apply) and returns how long until both links
// were Up; then traffic must flow both ways.
func linkUpOnce(ctx context.Context, t *testing.T, run int, pair []linkRef, apply func(context.Context) error) time.Duration {
	t.Helper()
	pod := anyClient(ctx, t, lab.A)
	urlB := echoURL(ctx, t, lab.B)
	expectEcho(ctx, t, lab.A, pod, urlB, "b", 30*time.Second)
	for _, l := range pair {
		if err := l.c.Res.Delete(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: l.name}}); err != nil {
			t.Fatalf("run %d: %s: deleting link %s: %v", run, l.c.Name, l.name, err)
		}
	}
	// gone from the API, and the data plane without them: A no longer
	// reaches B
	if _, err := Eventually(ctx, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		for _, l := range pair {
			if _, err := l.c.Link(ctx, l.name); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: link %s still there (%v)", l.c.Name, l.name, err)
			}
		}
		if _, err := lab.A.Wget(ctx, pod, urlB); err == nil {
			return fmt.Errorf("%s still answers without the links", urlB)
		}
		return nil
	}); err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	t0 := time.Now()
	if err := apply(ctx); err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	up := map[string]time.Duration{}
	if _, err := Eventually(ctx, 2*linkUpBudget, 100*time.Millisecond, func(ctx context.Context) error {
		for _, l := range pair {
			if _, ok := up[l.c.Name]; ok {
				continue
			}
			got, err := l.c.Link(ctx, l.name)
			if err != nil {
				return err
			}
			if got.Status.State != v1alpha1.StateUp {
				return fmt.Errorf("%s: link %s %s %s", l.c.Name, l.name, got.Status.State, got.Status.Message)
			}
			up[l.c.Name] = time.Since(t0)
		}
		return nil
	}); err != nil {
		t.Fatalf("run %d: the pair did not come Up: %v", run, err)
	}
	took := max(up["a"], up["b"])
	t.Logf("LINKUP run %d: A's link b Up after %s, B's link a after %s", run, up["a"].Round(10*time.Millisecond), up["b"].Round(10*time.Millisecond))
	expectEcho(ctx, t, lab.A, pod, urlB, "b", 30*time.Second)
	bClients, _ := clientsAndGateway(ctx, t, lab.B)
	for _, p := range bClients {
		expectEcho(ctx, t, lab.B, p, echoURL(ctx, t, lab.A), "a", 30*time.Second)
	}
	return took
}
