//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The lab is built as a user builds a mesh: the links between its clusters,
// and the member registrations at the authority a, were made by
// kubelinkctl join, not by a script.
func TestLabLinksMadeByJoin(t *testing.T) {
	f := features.New("every link of the lab and every member registration comes from kubelinkctl join").
		Assess("links and registrations carry join's label", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			members := lab.Members()
			for _, c := range members {
				for _, peer := range members {
					if c == peer {
						continue
					}
					l, err := c.Link(ctx, peer.Name)
					if err != nil {
						t.Fatalf("%s: KubeLink %s: %v", c.Name, peer.Name, err)
					}
					if l.Labels["app.kubernetes.io/managed-by"] != "kubelinkctl" {
						t.Errorf("%s: KubeLink %s has labels %v: not made by kubelinkctl join", c.Name, peer.Name, l.Labels)
					}
					if l.Status.State != v1alpha1.StateUp {
						t.Errorf("%s: KubeLink %s is %s: %s", c.Name, peer.Name, l.Status.State, l.Status.Message)
					}
				}
				if c == lab.A {
					continue
				}
				var sa corev1.ServiceAccount
				if err := lab.A.In("kubelink").Get(ctx, "member-"+c.Name, "kubelink", &sa); err != nil {
					t.Errorf("a: the ServiceAccount of member %s: %v", c.Name, err)
				} else if sa.Labels["app.kubernetes.io/managed-by"] != "kubelinkctl" || sa.Annotations["kubelink.mandelsoft.org/identities"] != "kubelink://default/"+c.Name {
					t.Errorf("a: ServiceAccount member-%s: labels %v, annotations %v", c.Name, sa.Labels, sa.Annotations)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// With LAB_CLUSTERS=3: lab-c leaves the mesh (kubelinkctl leave) and joins
// the running mesh of a and b again with one kubelinkctl join. The join
// restarts no broker of a or b and changes none of their links to each
// other, c's links are Up within a bound, and c reaches both by ClusterIP
// and DNS name and both reach it.
func TestThirdClusterJoinsTheRunningMesh(t *testing.T) {
	if lab.C == nil {
		t.Skip("the lab has two clusters (LAB_CLUSTERS=3 make lab-up adds lab-c)")
	}
	// joinBound is a regression bound, not the goal: the lab's join of c
	// takes 2–9 s (lab-up's log); a loaded 2-core machine stretches it.
	const joinBound = 30 * time.Second
	f := features.New("lab-c leaves and joins the running mesh of a and b").
		Assess("leave removes c from every side", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"leave", "c"}, labContexts()...)...)
			if err != nil || !strings.Contains(out, "c left the mesh") {
				t.Fatalf("leave c: %v\n%s%s", err, stderr, out)
			}
			for _, pair := range [][2]*Cluster{{lab.A, lab.C}, {lab.B, lab.C}, {lab.C, lab.A}, {lab.C, lab.B}} {
				if _, err := pair[0].Link(ctx, pair[1].Name); !apierrors.IsNotFound(err) {
					t.Errorf("%s: KubeLink %s after leave: %v, want it gone", pair[0].Name, pair[1].Name, err)
				}
			}
			var sa corev1.ServiceAccount
			if err := lab.A.In("kubelink").Get(ctx, "member-c", "kubelink", &sa); !apierrors.IsNotFound(err) {
				t.Errorf("a: ServiceAccount member-c after leave: %v, want it gone", err)
			}
			return ctx
		}).
		Assess("join brings c back without touching a and b", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			type state struct {
				pods map[string]bool
				gen  int64
			}
			before := map[string]state{}
			for _, pair := range [][2]*Cluster{{lab.A, lab.B}, {lab.B, lab.A}} {
				c, peer := pair[0], pair[1]
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st := state{pods: map[string]bool{}}
				for _, p := range pods {
					st.pods[string(p.UID)] = true
				}
				l, err := c.Link(ctx, peer.Name)
				if err != nil {
					t.Fatal(err)
				}
				st.gen = l.Generation
				before[c.Name] = st
			}
			start := time.Now()
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"join", "--timeout", "3m"}, labContexts()...)...)
			took := time.Since(start)
			t.Logf("join:\n%s%s", stderr, out)
			if err != nil {
				t.Fatalf("join of a, b and c: %v", err)
			}
			t.Logf("JOIN c: every link Up %.1f s after join started", took.Seconds())
			if took > joinBound {
				t.Errorf("join of c took %s, over the regression bound %s", took.Round(time.Millisecond), joinBound)
			}
			for _, pair := range [][2]*Cluster{{lab.A, lab.B}, {lab.B, lab.A}} {
				c, peer := pair[0], pair[1]
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pods {
					if !before[c.Name].pods[string(p.UID)] {
						t.Errorf("%s: broker pod %s is new: the join of c restarted a broker", c.Name, p.Name)
					}
					for _, s := range p.Status.ContainerStatuses {
						if s.LastTerminationState.Terminated != nil && !s.LastTerminationState.Terminated.FinishedAt.Time.Before(start) {
							t.Errorf("%s: container %s of broker pod %s restarted during the join of c", c.Name, s.Name, p.Name)
						}
					}
				}
				l, err := c.Link(ctx, peer.Name)
				if err != nil {
					t.Fatal(err)
				}
				if l.Generation != before[c.Name].gen {
					t.Errorf("%s: the spec of KubeLink %s changed during the join of c (generation %d → %d)", c.Name, peer.Name, before[c.Name].gen, l.Generation)
				}
			}
			return ctx
		}).
		Assess("traffic both ways between c and a, and c and b", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, other := range []*Cluster{lab.A, lab.B} {
				expectEcho(ctx, t, lab.C, anyClient(ctx, t, lab.C), echoURL(ctx, t, other), other.Name, 30*time.Second)
				expectEcho(ctx, t, lab.C, anyClient(ctx, t, lab.C), "http://echo.default.svc."+other.Name+".kubelink/", other.Name, 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), echoURL(ctx, t, lab.C), "c", 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), "http://echo.default.svc.c.kubelink/", "c", 30*time.Second)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
