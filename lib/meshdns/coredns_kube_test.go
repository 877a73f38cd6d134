package meshdns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/testenv"
)

// TestCoreDNSKubernetesMode runs the real CoreDNS with a rendered Corefile
// and kubeconfig (kubernetes mode) against a real API server standing in
// for the remote cluster b, reached with a service account token as an
// apiAccess Secret would carry it.
func TestCoreDNSKubernetesMode(t *testing.T) {
	cp := &testenv.ControlPlane{Name: t.Name(), ServiceCIDR: "100.64.16.0/20"}
	testenv.StartControlPlaneForTest(t, cp)
	kube, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token := remoteDNSToken(ctx, t, kube)
	echo := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"},
		Spec: corev1.ServiceSpec{ClusterIP: "100.64.16.20", Ports: []corev1.ServicePort{{Port: 80}}}}
	if err := kube.Create(ctx, echo); err != nil {
		t.Fatal(err)
	}

	port, health, ready := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	render := func(bState string) string {
		links := []v1alpha1.KubeLink{localA(nil), peerB(bState)}
		in, warnings := BuildInput(mesh.Build(links, mesh.ParseOptions{}), links, InputOptions{Mode: ModeKubernetes,
			Credentials: map[string]Credentials{"b": {Token: token, CA: cp.Config().CAData}}})
		if len(warnings) > 0 {
			t.Fatalf("warnings: %q", warnings)
		}
		// No in-cluster service account here, so no block for the local
		// cluster; the remote API server listens on loopback.
		in.Meshes[0].LocalCluster = ""
		for i := range in.Meshes[0].Clusters {
			in.Meshes[0].Clusters[i].APIServer = cp.Config().Host
		}
		in.Port, in.Bind, in.KubeconfigPath = port, "127.0.0.1", kubeconfig
		in.HealthAddr, in.ReadyAddr = fmt.Sprintf("127.0.0.1:%d", health), fmt.Sprintf("127.0.0.1:%d", ready)
		out, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kubeconfig, out.Kubeconfig, 0o600); err != nil {
			t.Fatal(err)
		}
		return out.Corefile
	}

	cd := startCoreDNS(t, render(v1alpha1.StateUp), port, fmt.Sprintf("127.0.0.1:%d", ready))
	const name = "echo.default.svc.b.kubelink."
	cd.waitFor(t, name, 5*time.Second, "resolved to 100.64.16.20", resolvesTo(name, "100.64.16.20"))
	if r, err := cd.query("nosuch.default.svc.b.kubelink."); err != nil || !gone(r) {
		t.Errorf("unknown service: err %v, answer %v; want NXDOMAIN", err, r)
	}

	cd.write(t, render(v1alpha1.StateDown))
	took := cd.waitFor(t, name, 5*time.Second, "gone (NXDOMAIN/REFUSED) after link Down", gone)
	t.Logf("name gone %s after the Corefile changed", took.Round(time.Millisecond))
}

// remoteDNSToken gives a service account the read access CoreDNS needs
// (like system:coredns) and returns a token for it.
func remoteDNSToken(ctx context.Context, t *testing.T, kube client.Client) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubelink-dns"}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "namespaces", "pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kubelink-dns"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: "kubelink-dns"}}}
	for _, obj := range []client.Object{sa, role, binding} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T: %v", obj, err)
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}
	if err := kube.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}
