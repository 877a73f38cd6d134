//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The MeshService setup of docs/meshservices.md between the lab's clusters,
// each way in turn: the exporter binds a virtual mesh address and a port of
// its own cluster address to its echo Service; the consumer lists the
// virtual address in the egress of its link to the exporter.
func TestMeshServiceAcrossClusters(t *testing.T) {
	for _, d := range []struct {
		exporter, consumer *Cluster
		virtual            string
	}{{lab.B, lab.A, "192.168.0.100"}, {lab.A, lab.B, "192.168.0.101"}} {
		t.Run(d.exporter.Name+"-exports-to-"+d.consumer.Name, func(t *testing.T) {
			meshServiceBetween(t, d.exporter, d.consumer, d.virtual)
		})
	}
}

func meshServiceBetween(t *testing.T, exporter, consumer *Cluster, virtual string) {
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
		return consumer.UpdateLink(ctx, exporter.Name, func(s *v1alpha1.KubeLinkSpec) { s.Egress = egress })
	}
	var pod, portURL string
	f := features.New("MeshService across clusters: "+exporter.Name+" exports, "+consumer.Name+" consumes").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			// Everything that can fail before a change comes first: a Fatal
			// in Setup skips the Teardown.
			ll, err := exporter.Link(ctx, exporter.Name)
			if err != nil {
				t.Fatal(err)
			}
			addr, _, ok := strings.Cut(ll.Spec.ClusterAddress, "/")
			if !ok {
				t.Fatalf("LocalLink %s: clusterAddress %q", exporter.Name, ll.Spec.ClusterAddress)
			}
			portURL = "http://" + addr + ":8800/"
			pod = anyClient(ctx, t, consumer)
			for _, m := range msvcs() {
				// one left by an interrupted earlier run is replaced
				if err := exporter.Res.Delete(ctx, m); err != nil && !apierrors.IsNotFound(err) {
					t.Fatal(err)
				}
				if _, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
					err := exporter.Res.Create(ctx, m)
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
			return ctx
		}).
		Assess("the exporter's MeshServices are Ok; the consumer reaches its echo by the virtual address and by its cluster address + port", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				if _, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
					var got v1alpha1.MeshService
					if err := exporter.Res.Get(ctx, m.Name, "default", &got); err != nil {
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
			expectEcho(ctx, t, consumer, pod, "http://"+virtual+"/", exporter.Name, 30*time.Second)
			expectEcho(ctx, t, consumer, pod, portURL, exporter.Name, 30*time.Second)
			return ctx
		}).
		Assess("deleted: unreachable", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, m := range msvcs() {
				if err := exporter.Res.Delete(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				for _, url := range []string{"http://" + virtual + "/", portURL} {
					if _, err := consumer.Wget(ctx, pod, url); err == nil {
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
				_ = exporter.Res.Delete(ctx, m)
			}
			if err := setEgress(ctx, nil); err != nil {
				t.Errorf("restoring %s's link %s: %v", consumer.Name, exporter.Name, err)
			}
			l, err := consumer.Link(ctx, exporter.Name)
			if err != nil || slices.Contains(l.Spec.Egress, virtual) {
				t.Errorf("%s's link %s still has egress %v: %v", consumer.Name, exporter.Name, l.Spec.Egress, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
