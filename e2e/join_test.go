//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// With LAB_CLUSTERS=3, lab-c joined the running mesh of a and b with a
// second kubelinkctl join: it reaches both by ClusterIP and DNS name and
// both reach it, and the join restarted no broker of a or b and changed
// none of their links to each other.
func TestThirdClusterJoinedTheRunningMesh(t *testing.T) {
	if lab.C == nil {
		t.Skip("the lab has two clusters (LAB_CLUSTERS=3 make lab-up adds lab-c)")
	}
	f := features.New("lab-c joined the running mesh of a and b").
		Assess("traffic both ways between c and a, and c and b", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, other := range []*Cluster{lab.A, lab.B} {
				expectEcho(ctx, t, lab.C, anyClient(ctx, t, lab.C), echoURL(ctx, t, other), other.Name, 30*time.Second)
				expectEcho(ctx, t, lab.C, anyClient(ctx, t, lab.C), "http://echo.default.svc."+other.Name+".kubelink/", other.Name, 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), echoURL(ctx, t, lab.C), "c", 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), "http://echo.default.svc.c.kubelink/", "c", 30*time.Second)
			}
			return ctx
		}).
		Assess("the join of c restarted no broker of a or b and left the a–b links alone", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, pair := range [][2]*Cluster{{lab.A, lab.B}, {lab.B, lab.A}} {
				c, peer := pair[0], pair[1]
				toC, err := c.Link(ctx, "c")
				if err != nil {
					t.Fatalf("%s: KubeLink c: %v", c.Name, err)
				}
				joined := toC.CreationTimestamp.Time
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pods {
					if !p.CreationTimestamp.Time.Before(joined) {
						t.Errorf("%s: broker pod %s was created at %s, not before c joined (%s)", c.Name, p.Name, p.CreationTimestamp.Time, joined)
					}
					for _, s := range p.Status.ContainerStatuses {
						if s.LastTerminationState.Terminated != nil && !s.LastTerminationState.Terminated.FinishedAt.Time.Before(joined) {
							t.Errorf("%s: container %s of broker pod %s restarted after c joined", c.Name, s.Name, p.Name)
						}
					}
				}
				l, err := c.Link(ctx, peer.Name)
				if err != nil {
					t.Fatal(err)
				}
				// Only the brokers (status) may have written the link since.
				for _, mf := range l.ManagedFields {
					if mf.Subresource == "" && mf.Time != nil && mf.Time.Time.After(joined) {
						t.Errorf("%s: KubeLink %s was changed at %s by %s, after c joined (%s)", c.Name, peer.Name, mf.Time.Time, mf.Manager, joined)
					}
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
