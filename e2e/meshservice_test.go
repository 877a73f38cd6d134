//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The MeshService setup of docs/meshservices.md between the lab's clusters:
// B binds a virtual mesh address and a port of its own cluster address to its
// echo Service; A lists the virtual address in the egress of its link to B.
func TestMeshServiceAcrossClusters(t *testing.T) {
	const virtual = "192.168.0.100"
	msvcs := func() []*v1alpha1.MeshService {
		return []*v1alpha1.MeshService{
			{ObjectMeta: metav1.ObjectMeta{Name: "e2e-virtual", Namespace: "default"},
				Spec: v1alpha1.MeshServiceSpec{Service: "echo", MeshAddress: virtual}},
			{ObjectMeta: metav1.ObjectMeta{Name: "e2e-port", Namespace: "default"},
				Spec: v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
					Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{
						{Port: intstr.FromInt32(8800), TargetPort: intstr.FromString("http")}}}}}},
		}
	}
	setEgress := func(ctx context.Context, egress []string) error {
		return lab.A.UpdateLink(ctx, "b", func(s *v1alpha1.KubeLinkSpec) { s.Egress = egress })
	}
	var pod string
	f := features.New("MeshService across clusters").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				// one left by an interrupted earlier run is replaced
				if err := lab.B.Res.Delete(ctx, m); err != nil && !apierrors.IsNotFound(err) {
					t.Fatal(err)
				}
				if _, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
					err := lab.B.Res.Create(ctx, m)
					if apierrors.IsAlreadyExists(err) {
						return err // still being deleted
					}
					if err != nil {
						t.Fatal(err)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := setEgress(ctx, []string{virtual}); err != nil {
				t.Fatal(err)
			}
			clients, _ := clientsAndGateway(ctx, t, lab.A)
			for _, p := range clients {
				pod = p
				break
			}
			return ctx
		}).
		Assess("B's MeshServices are Ok; A reaches B's echo by the virtual address and by B's address + port", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				if _, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
					var got v1alpha1.MeshService
					if err := lab.B.Res.Get(ctx, m.Name, "default", &got); err != nil {
						return err
					}
					if got.Status.State != v1alpha1.StateOk {
						return fmt.Errorf("%s: %s %s", m.Name, got.Status.State, got.Status.Message)
					}
					t.Logf("%s: %s, targets %s", m.Name, got.Status.State, got.Status.Targets)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			expectEcho(ctx, t, lab.A, pod, "http://"+virtual+"/", "b", 30*time.Second)
			expectEcho(ctx, t, lab.A, pod, "http://192.168.0.12:8800/", "b", 30*time.Second)
			return ctx
		}).
		Assess("deleted: unreachable", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				if err := lab.B.Res.Delete(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				for _, url := range []string{"http://" + virtual + "/", "http://192.168.0.12:8800/"} {
					if _, err := lab.A.Wget(ctx, pod, url); err == nil {
						return fmt.Errorf("%s still answers", url)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				_ = lab.B.Res.Delete(ctx, m)
			}
			if err := setEgress(ctx, nil); err != nil {
				t.Errorf("restoring link b: %v", err)
			}
			l, err := lab.A.Link(ctx, "b")
			if err != nil || slices.Contains(l.Spec.Egress, virtual) {
				t.Errorf("link b still has egress %v: %v", l.Spec.Egress, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
