//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
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

// The lab's last cluster (b, or c with LAB_CLUSTERS=3) leaves the mesh
// (kubelinkctl leave) and joins the running mesh of the others again with
// one kubelinkctl join. The join restarts no broker of the others and
// changes none of their links to each other, the new links are Up within a
// bound, and the cluster reaches every other by ClusterIP and DNS name and
// each reaches it.
func TestMemberLeavesAndJoinsTheRunningMesh(t *testing.T) {
	members := lab.Members()
	last, others := members[len(members)-1], members[:len(members)-1]
	// joinBound is a regression bound, not the goal: the lab's joins take
	// 2–9 s (lab-up's log); a loaded 2-core machine stretches it.
	const joinBound = 30 * time.Second
	f := features.New(last.Name+" leaves and joins the running mesh").
		Assess("leave removes it from every side", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"leave", last.Name}, labContexts()...)...)
			if err != nil || !strings.Contains(out, last.Name+" left the mesh") {
				t.Fatalf("leave %s: %v\n%s%s", last.Name, err, stderr, out)
			}
			for _, o := range others {
				for _, pair := range [][2]*Cluster{{o, last}, {last, o}} {
					if _, err := pair[0].Link(ctx, pair[1].Name); !apierrors.IsNotFound(err) {
						t.Errorf("%s: KubeLink %s after leave: %v, want it gone", pair[0].Name, pair[1].Name, err)
					}
				}
			}
			var sa corev1.ServiceAccount
			if err := lab.A.In("kubelink").Get(ctx, "member-"+last.Name, "kubelink", &sa); !apierrors.IsNotFound(err) {
				t.Errorf("a: ServiceAccount member-%s after leave: %v, want it gone", last.Name, err)
			}
			return ctx
		}).
		Assess("join brings it back without touching the others", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			pods := map[string]bool{}  // the others' broker pods, by UID
			gens := map[string]int64{} // their links to each other: "c/peer" → generation
			for _, c := range others {
				ps, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ps {
					pods[string(p.UID)] = true
				}
				for _, peer := range others {
					if peer == c {
						continue
					}
					l, err := c.Link(ctx, peer.Name)
					if err != nil {
						t.Fatal(err)
					}
					gens[c.Name+"/"+peer.Name] = l.Generation
				}
			}
			// Back across teams first: a token from a (the mesh authority,
			// which the bridge needs), used in last's cluster with only its
			// own kubeconfig; then one join of every cluster for the pairs
			// with the others (none in a two-cluster lab).
			local, err := last.Link(ctx, last.Name)
			if err != nil {
				t.Fatal(err)
			}
			addr, _, _ := strings.Cut(local.Spec.ClusterAddress, "/")
			tok := filepath.Join(t.TempDir(), last.Name+".token")
			create := []string{"token", "create", "--context", "kind-lab-a", "--name", last.Name, "--address", addr, "--cidr", local.Spec.CIDR, "-f", tok}
			if lab.Mode == "bridge" {
				create = append(create, "--endpoint", local.Annotations["kubelink.mandelsoft.org/endpoint"])
			}
			start := time.Now()
			if out, stderr, err := kubelinkctl(ctx, t, create...); err != nil {
				t.Fatalf("token create: %v\n%s%s", err, stderr, out)
			}
			out, stderr, err := kubelinkctl(ctx, t, "join", "--token", tok, "--context", "kind-lab-"+last.Name, "--timeout", "3m")
			t.Logf("join --token:\n%s%s", stderr, out)
			if err != nil || !strings.Contains(out, "now used up") {
				t.Fatalf("join --token: %v", err)
			}
			t.Logf("JOIN %s with a token from a: the link Up %.1f s after token create started", last.Name, time.Since(start).Seconds())
			if _, stderr, err := kubelinkctl(ctx, t, "join", "--token", tok, "--context", "kind-lab-"+last.Name, "--timeout", "1m"); err == nil || !strings.Contains(err.Error()+stderr, "already used") {
				t.Errorf("a second use of the token: %v\n%s", err, stderr)
			}
			out, stderr, err = kubelinkctl(ctx, t, append([]string{"join", "--timeout", "3m"}, labContexts()...)...)
			took := time.Since(start)
			t.Logf("join:\n%s%s", stderr, out)
			if err != nil {
				t.Fatalf("join of every cluster: %v", err)
			}
			t.Logf("JOIN %s: every link Up %.1f s after token create started", last.Name, took.Seconds())
			if took > joinBound {
				t.Errorf("join of %s took %s, over the regression bound %s", last.Name, took.Round(time.Millisecond), joinBound)
			}
			for _, c := range others {
				ps, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ps {
					if !pods[string(p.UID)] {
						t.Errorf("%s: broker pod %s is new: the join of %s restarted a broker", c.Name, p.Name, last.Name)
					}
					for _, s := range p.Status.ContainerStatuses {
						if s.LastTerminationState.Terminated != nil && !s.LastTerminationState.Terminated.FinishedAt.Time.Before(start) {
							t.Errorf("%s: container %s of broker pod %s restarted during the join of %s", c.Name, s.Name, p.Name, last.Name)
						}
					}
				}
				for _, peer := range others {
					if peer == c {
						continue
					}
					l, err := c.Link(ctx, peer.Name)
					if err != nil {
						t.Fatal(err)
					}
					if before := gens[c.Name+"/"+peer.Name]; l.Generation != before {
						t.Errorf("%s: the spec of KubeLink %s changed during the join of %s (generation %d → %d)", c.Name, peer.Name, last.Name, before, l.Generation)
					}
				}
			}
			return ctx
		}).
		Assess("traffic both ways between it and every other cluster", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, other := range others {
				expectEcho(ctx, t, last, anyClient(ctx, t, last), echoURL(ctx, t, other), other.Name, 30*time.Second)
				expectEcho(ctx, t, last, anyClient(ctx, t, last), "http://echo.default.svc."+other.Name+".kubelink/", other.Name, 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), echoURL(ctx, t, last), last.Name, 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), "http://echo.default.svc."+last.Name+".kubelink/", last.Name, 30*time.Second)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
