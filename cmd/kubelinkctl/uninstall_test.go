package main

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// uninstall removes every kubelink API object and leaves the others; the
// node clean-up needs kubelets and is tested against the lab (e2e).
func TestUninstallRemovesKubelinkAndNothingElse(t *testing.T) {
	kubeconfig, cs, c := fakeCluster(t)
	ctx := context.Background()
	if _, stderr, err := run(t, "install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "eu", "--mesh-cidr", "192.168.0.0/24",
		"--skip-image-check", "--mesh-authority", "--timeout", "6s"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("install: %v\n%s", err, stderr)
	}
	if err := c.Create(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "us"},
		Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.2/24", CIDR: "100.64.48.0/20", Endpoint: "10.0.0.1:30777"}}); err != nil {
		t.Fatal(err)
	}
	// A member's registration, as join makes it, and state of others.
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-member-us",
		Labels: map[string]string{managedByLabel: managedBy}}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kubelink-member"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "member-us", Namespace: "kubelink"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-lookalike"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherCM, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No kube-controller-manager runs: the test finalizes the namespace
	// once it is empty, as its namespace controller would.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			ns, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink", metav1.GetOptions{})
			if err != nil || ns.DeletionTimestamp == nil {
				continue
			}
			ns.Spec.Finalizers = nil
			cs.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
		}
	}()
	out, stderr, err := run(t, "uninstall", "--kubeconfig", kubeconfig, "--node-cleanup=false", "--timeout", "60s")
	if err != nil || !strings.Contains(out, `kubelink's API objects removed from "kubelinkctl"; its nodes were not cleaned or checked (--node-cleanup=false)`) {
		t.Fatalf("uninstall: %v\n%s%s", err, stderr, out)
	}
	for _, w := range []string{"helm uninstall kubelink in namespace kubelink", "removed zones kubelink, clusterset.local from kube-system/coredns"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("progress lacks %q:\n%s", w, stderr)
		}
	}
	for _, name := range kubelinkCRDs {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &apiextensionsv1.CustomResourceDefinition{}); !apierrors.IsNotFound(err) {
			t.Errorf("CRD %s: %v, want it gone", name, err)
		}
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace kubelink: %v, want it gone", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "kubelink-member-us", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the member registration: %v, want it gone", err)
	}
	if crs, _ := cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=kubelink"}); len(crs.Items) != 0 {
		t.Errorf("%d ClusterRoles of kubelink left", len(crs.Items))
	}
	cm, _ := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if strings.Contains(cm.Data["Corefile"], "kubelink") || strings.Contains(cm.Data["Corefile"], "clusterset") || !strings.Contains(cm.Data["Corefile"], "kubernetes cluster.local") {
		t.Errorf("Corefile after uninstall:\n%s", cm.Data["Corefile"])
	}
	// The state of others is unchanged.
	if r, err := cs.RbacV1().ClusterRoles().Get(ctx, "kubelink-lookalike", metav1.GetOptions{}); err != nil || r.ResourceVersion != other.ResourceVersion {
		t.Errorf("ClusterRole kubelink-lookalike: %v", err)
	}
	if m, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "other", metav1.GetOptions{}); err != nil || m.ResourceVersion != otherCM.ResourceVersion {
		t.Errorf("ConfigMap kube-system/other: %v", err)
	}
	// Again: nothing to remove, and it says so.
	if out, _, err := run(t, "uninstall", "--kubeconfig", kubeconfig, "--node-cleanup=false", "--timeout", "30s"); err != nil || !strings.Contains(out, "API objects removed from") {
		t.Errorf("second uninstall: %v\n%s", err, out)
	}
	// Without the release, the node clean-up needs its image: refused
	// before anything changes.
	if _, _, err := run(t, "uninstall", "--kubeconfig", kubeconfig, "--timeout", "30s"); err == nil || !strings.Contains(err.Error(), "give it with --router-image") {
		t.Errorf("uninstall without a release and without --router-image: %v", err)
	}
}
