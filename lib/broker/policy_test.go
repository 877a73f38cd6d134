package broker

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// What the API itself lets the broker's account create, under the chart's
// RBAC (with autoConnect) and its admission policy kubelink-broker-creates,
// against a real API server: its own Lease and nothing else of the
// namespace's Leases; KubeLinks only as unapproved auto-connect proposals
// without apiAccess. A compromised broker gets no further than its code
// would go.
func TestBrokerCreatesOnlyWhatItOwns(t *testing.T) {
	const ns = "kubelink"
	ctx := context.Background()
	env := testenv.ChartAccountForTest(t, map[string]string{"autoConnect.enabled": "true", "dataPlane": "bridge"}, ns, "kubelink-broker")
	admin, ac, rc, cp := env.Admin, env.AdminClient, env.Config, env.ControlPlane
	asBroker, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	brokerClient, err := client.New(rc, client.Options{Scheme: cp.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// A policy binding takes a moment to be enforced: wait until the
	// broker's create of another Lease is refused by it (for at most 30 s:
	// a policy that never refuses fails here).
	lease := func(name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("broker-a")}}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := asBroker.CoordinationV1().Leases(ns).Create(ctx, lease("other-controller"), metav1.CreateOptions{})
		if err != nil && strings.Contains(err.Error(), "the broker creates only the Lease kubelink-broker, not other-controller") {
			break
		}
		if err == nil {
			// admitted before the policy took effect: removed, tried again
			if err := admin.CoordinationV1().Leases(ns).Delete(ctx, "other-controller", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker creating the Lease other-controller: %v, want the admission policy's refusal", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("its own Lease only", func(t *testing.T) {
		leases := asBroker.CoordinationV1().Leases(ns)
		if _, err := leases.Create(ctx, lease("kubelink-broker"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("the broker creating its Lease: %v", err)
		}
		own, err := leases.Get(ctx, "kubelink-broker", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the broker reading its Lease: %v", err)
		}
		own.Spec.HolderIdentity = ptr.To("broker-b")
		if _, err := leases.Update(ctx, own, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("the broker renewing its Lease: %v", err)
		}
		other, err := admin.CoordinationV1().Leases(ns).Create(ctx, lease("other-controller"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leases.Get(ctx, other.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the broker reading another Lease: %v, want Forbidden", err)
		}
		other.Spec.HolderIdentity = ptr.To("broker-a")
		if _, err := leases.Update(ctx, other, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the broker taking another Lease: %v, want Forbidden", err)
		}
		if _, err := leases.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the broker listing the Leases: %v, want Forbidden", err)
		}
		if err := leases.Delete(ctx, "kubelink-broker", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the broker deleting its Lease: %v, want Forbidden", err)
		}
	})

	t.Run("KubeLinks only as proposals", func(t *testing.T) {
		link := func(name string, annotations map[string]string, apiAccess bool) *v1alpha1.KubeLink {
			kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
				Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.9/24", CIDR: "100.64.144.0/20", Endpoint: "127.0.0.1:8088"}}
			if apiAccess {
				kl.Spec.APIAccess = &v1alpha1.SecretReference{Name: "kubeconfig-of-b", Namespace: ns}
			}
			return kl
		}
		proposed := map[string]string{v1alpha1.AnnotationAutoConnected: "kubelink://default/b"}
		for _, c := range []struct {
			what string
			kl   *v1alpha1.KubeLink
			want string // "" to be admitted
		}{
			{"a proposal", link("b", proposed, false), ""},
			{"a link that is no proposal", link("c", nil, false), "only auto-connect proposals"},
			{"a proposal with an empty identity", link("d", map[string]string{v1alpha1.AnnotationAutoConnected: ""}, false), "only auto-connect proposals"},
			{"an approved proposal", link("e", map[string]string{v1alpha1.AnnotationAutoConnected: "kubelink://default/e", v1alpha1.AnnotationApproved: "true"}, false), "cannot approve its own proposal"},
			{"a proposal with apiAccess", link("f", proposed, true), "carries no spec.apiAccess"},
		} {
			err := brokerClient.Create(ctx, c.kl)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("the broker creating %s: %v", c.what, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("the broker creating %s: %v, want a refusal containing %q", c.what, err, c.want)
			}
		}
		// The proposal stays one: the broker cannot approve it afterwards.
		var b v1alpha1.KubeLink
		if err := brokerClient.Get(ctx, client.ObjectKey{Name: "b"}, &b); err != nil {
			t.Fatal(err)
		}
		b.Annotations[v1alpha1.AnnotationApproved] = "true"
		if err := brokerClient.Update(ctx, &b); !apierrors.IsForbidden(err) {
			t.Errorf("the broker approving its proposal: %v, want Forbidden", err)
		}
		// The admin is not matched: it creates links of any kind.
		if err := ac.Create(ctx, link("g", nil, true)); err != nil {
			t.Errorf("the admin creating a link: %v", err)
		}
	})
}
