package meshdns

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/testenv"
)

// meshdns restarts the kubelink CoreDNS by patching two annotations of its
// pod template; under the chart's RBAC and its admission policy
// kubelink-meshdns-restarts, against a real API server, that is all it may
// change: not the ServiceAccount, a volume, the image, the replicas, the
// template's labels or its other annotations. The restart itself (the
// controller's own patch) passes.
func TestMeshDNSMayOnlyRestartCoreDNS(t *testing.T) {
	const ns = "kubelink"
	ctx := context.Background()
	env := testenv.ChartAccountForTest(t, nil, ns, "kubelink-meshdns")
	admin, rc, cp := env.Admin, env.Config, env.ControlPlane
	labels := map[string]string{"app.kubernetes.io/name": "kubelink-coredns"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-coredns", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: int32Ptr(2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"prometheus.io/scrape": "true"}},
				Spec: corev1.PodSpec{ServiceAccountName: "kubelink-coredns",
					Containers: []corev1.Container{{Name: "coredns", Image: "registry.example/kubelink/coredns:v1"}}}}}}
	if _, err := admin.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	asMeshDNS, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(p map[string]any) error {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = asMeshDNS.AppsV1().Deployments(ns).Patch(ctx, "kubelink-coredns", types.MergePatchType, b, metav1.PatchOptions{})
		return err
	}
	template := func(m map[string]any) map[string]any { return map[string]any{"spec": map[string]any{"template": m}} }
	hostile := template(map[string]any{"spec": map[string]any{"serviceAccountName": "kubelink-certwatch"}})

	// The binding takes a moment to be enforced: wait until the hostile
	// patch is refused, putting the Deployment back as admin meanwhile.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := patch(hostile)
		if err != nil && strings.Contains(err.Error(), "meshdns may not change the pod spec") {
			break
		}
		if err == nil {
			if _, err := admin.AppsV1().Deployments(ns).Patch(ctx, "kubelink-coredns", types.MergePatchType,
				[]byte(`{"spec":{"template":{"spec":{"serviceAccountName":"kubelink-coredns"}}}}`), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshdns giving the CoreDNS pods another ServiceAccount: %v, want the admission policy's refusal", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, c := range []struct {
		what  string
		patch map[string]any
		want  string
	}{
		{"a Secret volume", template(map[string]any{"spec": map[string]any{"volumes": []any{map[string]any{"name": "ca", "secret": map[string]any{"secretName": "kubelink-tls"}}}}}), "may not change the pod spec"},
		{"another image", template(map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "coredns", "image": "evil.example/coredns"}}}}), "may not change the pod spec"},
		{"the replicas", map[string]any{"spec": map[string]any{"replicas": 0}}, "may not change a Deployment's replicas"},
		{"the template's labels", template(map[string]any{"metadata": map[string]any{"labels": map[string]any{"app.kubernetes.io/name": "kubelink-coredns", "x": "y"}}}), "may not change the labels"},
		{"another annotation", template(map[string]any{"metadata": map[string]any{"annotations": map[string]any{"prometheus.io/scrape": "false"}}}), "may change only the annotations"},
		{"a new annotation", template(map[string]any{"metadata": map[string]any{"annotations": map[string]any{"kubectl.kubernetes.io/default-container": "x"}}}), "may change only the annotations"},
		{"an owner reference (the garbage collector would delete it)", map[string]any{"metadata": map[string]any{"ownerReferences": []any{map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"}}}}, "owner references, finalizers, labels or annotations"},
		{"a finalizer", map[string]any{"metadata": map[string]any{"finalizers": []any{"example.com/hold"}}}, "owner references, finalizers, labels or annotations"},
		{"the Deployment's labels", map[string]any{"metadata": map[string]any{"labels": map[string]any{"x": "y"}}}, "owner references, finalizers, labels or annotations"},
		{"the revision history", map[string]any{"spec": map[string]any{"revisionHistoryLimit": 0}}, "revisionHistoryLimit"},
		{"an annotation removed", template(map[string]any{"metadata": map[string]any{"annotations": map[string]any{"prometheus.io/scrape": nil}}}), "may change only the annotations"},
	} {
		if err := patch(c.patch); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("meshdns changing %s: %v, want a refusal containing %q", c.what, err, c.want)
		}
	}

	// What meshdns does: a restart with the Corefile's hash.
	api, err := client.New(rc, client.Options{Scheme: cp.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := &Controller{api: api, metrics: newMetrics(), log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	if err := ctrl.restart(ctx, client.ObjectKey{Namespace: ns, Name: "kubelink-coredns"}, map[string]string{ConfigHashAnnotation: "abc"}); err != nil {
		t.Fatalf("meshdns's restart: %v", err)
	}
	got, err := admin.AppsV1().Deployments(ns).Get(ctx, "kubelink-coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Spec.Template.Annotations; a[ConfigHashAnnotation] != "abc" || a[RestartAnnotation] == "" || a["prometheus.io/scrape"] != "true" ||
		got.Spec.Template.Spec.ServiceAccountName != "kubelink-coredns" {
		t.Errorf("after the restart: annotations %v, ServiceAccount %s", a, got.Spec.Template.Spec.ServiceAccountName)
	}
}

func int32Ptr(v int32) *int32 { return &v }
