package testenv_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// A shared control plane comes back to the next test empty: what a test
// made is gone (finalizers or not), the API server's own objects and the
// namespaces stay. One whose CRD a test changed is not handed out again.
func TestSharedControlPlaneIsResetBetweenTests(t *testing.T) {
	t.Cleanup(func() {
		if err := testenv.StopSharedControlPlanes(); err != nil {
			t.Error(err)
		}
	})
	const cidr = "100.64.96.0/20"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var host string
	t.Run("a test fills it", func(t *testing.T) {
		cp := testenv.SharedControlPlanesForTest(t, []string{"shared"}, []string{cidr})[0]
		host = cp.Config().Host
		c, err := cp.Client()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "kubelink", Finalizers: []string{"example.com/hold"}}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: corev1.ServiceSpec{ClusterIP: "100.64.96.20", Ports: []corev1.ServicePort{{Port: 80}}}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-test"}},
			&v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b", Finalizers: []string{"kubelink.mandelsoft.org/test"}},
				Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20", Endpoint: "10.0.0.2:8777"}},
		} {
			if err := c.Create(ctx, o); err != nil {
				t.Fatalf("%T: %v", o, err)
			}
		}
	})
	t.Run("the next test gets it empty", func(t *testing.T) {
		cp := testenv.SharedControlPlanesForTest(t, []string{"shared-again"}, []string{cidr})[0]
		if cp.Config().Host != host {
			t.Fatalf("a new control plane at %s, want the reset one at %s", cp.Config().Host, host)
		}
		c, _ := cp.Client()
		for _, o := range []client.Object{
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "kubelink"}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-test"}},
			&v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b"}},
		} {
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
				t.Errorf("%T %s after the reset: %v, want gone", o, o.GetName(), err)
			}
		}
		for _, k := range []client.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin"}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}},
		} {
			if err := c.Get(ctx, client.ObjectKeyFromObject(k), k); err != nil {
				t.Errorf("%T %s after the reset: %v, want kept", k, k.GetName(), err)
			}
		}
		// The freed ClusterIP can be taken again.
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo2", Namespace: "default"}, Spec: corev1.ServiceSpec{ClusterIP: "100.64.96.20", Ports: []corev1.ServicePort{{Port: 80}}}}
		if err := c.Create(ctx, svc); err != nil {
			t.Errorf("the reset Service's ClusterIP again: %v", err)
		}
		// This test changes a CRD: the plane must not come back.
		var crd apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: "kubelinks.kubelink.mandelsoft.org"}, &crd); err != nil {
			t.Fatal(err)
		}
		crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "changed by a test"
		if err := c.Update(ctx, &crd); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a changed CRD is not handed out again", func(t *testing.T) {
		cp := testenv.SharedControlPlanesForTest(t, []string{"shared-third"}, []string{cidr})[0]
		if cp.Config().Host == host {
			t.Errorf("the control plane with a changed CRD was handed out again (%s)", host)
		}
	})
}
