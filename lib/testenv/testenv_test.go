package testenv_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// TestTwoControlPlanesAreIndependent starts two control planes concurrently
// (with the helper the two-cluster harness uses) and checks that each has its own
// etcd: an object created in one is invisible in the other, and each API
// server allocates ClusterIPs from its own service CIDR.
func TestTwoControlPlanesAreIndependent(t *testing.T) {
	planes := []*testenv.ControlPlane{
		{Name: "cluster-a", ServiceCIDR: "100.64.0.0/20"},
		{Name: "cluster-b", ServiceCIDR: "100.64.16.0/20"},
	}
	testenv.StartControlPlanesForTest(t, planes...)
	if a, b := planes[0].Config().Host, planes[1].Config().Host; a == b {
		t.Fatalf("both control planes serve on %s", a)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]client.Client, len(planes))
	for i, cp := range planes {
		c, err := cp.Client()
		if err != nil {
			t.Fatalf("%s: client: %v", cp.Name, err)
		}
		clients[i] = c
	}

	link := &v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"},
		Spec: v1alpha1.KubeLinkSpec{
			ClusterAddress: "192.168.0.11/24",
			CIDR:           "100.64.0.0/20",
			Endpoint:       v1alpha1.EndpointLocalLink,
		},
	}
	if err := clients[0].Create(ctx, link); err != nil {
		t.Fatalf("create KubeLink in cluster-a: %v", err)
	}
	if err := clients[0].Get(ctx, client.ObjectKeyFromObject(link), &v1alpha1.KubeLink{}); err != nil {
		t.Fatalf("KubeLink not readable in cluster-a: %v", err)
	}
	err := clients[1].Get(ctx, client.ObjectKeyFromObject(link), &v1alpha1.KubeLink{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("KubeLink created in cluster-a must not exist in cluster-b, got err=%v", err)
	}

	for i, cp := range planes {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
				{Port: 80, TargetPort: intstr.FromInt32(8080)},
			}},
		}
		if err := clients[i].Create(ctx, svc); err != nil {
			t.Fatalf("%s: create service: %v", cp.Name, err)
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			t.Fatalf("%s: service got no ClusterIP: %q", cp.Name, svc.Spec.ClusterIP)
		}
		if !netip.MustParsePrefix(cp.ServiceCIDR).Contains(ip) {
			t.Errorf("%s: ClusterIP %s outside the configured service CIDR %s", cp.Name, ip, cp.ServiceCIDR)
		}
	}

	// Stopping one control plane must leave the other usable.
	if err := planes[0].Stop(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := clients[1].List(ctx, &v1alpha1.KubeLinkList{}); err != nil {
		t.Fatalf("cluster-b unusable after cluster-a stopped: %v", err)
	}
}

// TestMissingBinaryNamesFile checks the failure a developer without built
// binaries sees: an error naming the missing file and the make target.
func TestMissingBinaryNamesFile(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(testenv.CacheEnv, cache)
	want := filepath.Join(cache, "bin", testenv.KubernetesVersion, testenv.BinEtcd)
	if got := testenv.BinPath(testenv.BinEtcd); got != want {
		t.Fatalf("BinPath = %s, want %s", got, want)
	}

	cp := &testenv.ControlPlane{Name: "no-binaries"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cp.Start(ctx)
	if err == nil {
		_ = cp.Stop()
		t.Fatal("Start succeeded without binaries")
	}
	var missing *testenv.MissingBinaryError
	if !errors.As(err, &missing) {
		t.Fatalf("want a MissingBinaryError, got %T: %v", err, err)
	}
	for _, s := range []string{want, "make test-bins"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}

	// A present but non-executable file is reported as well.
	if err := os.MkdirAll(filepath.Dir(want), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(want, []byte("not a binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = testenv.CheckBinaries(testenv.BinEtcd)
	if !errors.As(err, &missing) || missing.Path != want {
		t.Fatalf("want MissingBinaryError for %s, got %v", want, err)
	}
}

// TestStartForTestWithKubectl covers the test helper and the kubeconfig that
// out-of-process clients (kubectl, kubelink components) will use.
func TestStartForTestWithKubectl(t *testing.T) {
	if err := testenv.CheckBinaries(testenv.BinKubectl); err != nil {
		t.Fatalf("%v", err)
	}
	cp := testenv.StartForTest(t)
	kubeconfig, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, testenv.BinPath(testenv.BinKubectl), "--kubeconfig", path,
		"api-resources", "--api-group", "kubelink.mandelsoft.org", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl api-resources: %v\n%s", err, out)
	}
	for _, want := range []string{"kubelinks.kubelink.mandelsoft.org", "meshservices.kubelink.mandelsoft.org"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubectl api-resources does not list %s:\n%s", want, out)
		}
	}
}
