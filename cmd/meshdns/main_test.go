package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/selfexec"
	"github.com/kubelink/kubelink/lib/testenv"
)

// runMainEnv makes the test binary act as the command (lib/selfexec), so
// the tests run the real main with real flags in a child process.
const runMainEnv = "KUBELINK_MESHDNS_RUN_MAIN"

func TestMain(m *testing.M) { selfexec.Main(m, runMainEnv, main) }

func runBinary(args ...string) *exec.Cmd { return selfexec.Command(runMainEnv, args...) }

func TestFlagErrorsAreReported(t *testing.T) {
	out, err := runBinary("--dns-propagation=bogus", "--kubeconfig=/nonexistent").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--dns-propagation="bogus": must be none, dns or kubernetes`) {
		t.Errorf("err %v, output:\n%s", err, out)
	}
	out, err = runBinary("--help").CombinedOutput()
	for _, flag := range []string{"--dns-propagation", "--cluster-name", "--cluster-domain", "--dns-service-ip", "--service-cidr",
		"--kubelink-dns-ip", "--namespace", "--coredns-secret", "--coredns-deployment", "--coredns-configure", "--kubeconfig", "--metrics-addr"} {
		if err != nil || !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s (err %v)", flag, err)
		}
	}
}

// The binary, started like in a cluster, writes the Secret for a link that
// is Up, serves /healthz and /metrics, and exits cleanly on SIGTERM.
func TestBinaryWritesCorefile(t *testing.T) {
	cp := testenv.StartForTest(t)
	kube, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kc, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}}))
	must(t, kube.Create(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24"}}))
	b := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: v1alpha1.KubeLinkSpec{Endpoint: "b.example.com", ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"}}
	must(t, kube.Create(ctx, b))
	b.Status.State = v1alpha1.StateUp
	must(t, kube.Status().Update(ctx, b))

	metricsAddr := selfexec.FreeAddr(t)
	proc := selfexec.Start(t, runMainEnv, "kubelink-meshdns", "--kubeconfig="+kcPath, "--dns-propagation=dns", "--service-cidr=100.64.0.0/20", "--namespace=kubelink",
		"--metrics-addr="+metricsAddr)

	var corefile string
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(100 * time.Millisecond) {
		var s corev1.Secret
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: "kubelink-coredns"}, &s); err == nil {
			corefile = string(s.Data["Corefile"])
			break
		}
	}
	for _, want := range []string{"b.kubelink:8053 {", "forward . 100.64.16.10", "a.kubelink:8053 {", "forward . 100.64.0.10"} {
		if !strings.Contains(corefile, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, corefile)
		}
	}
	if body := selfexec.Get(t, "http://"+metricsAddr+"/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	if body := selfexec.Get(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(body, "kubelink_meshdns_clusters 1") {
		t.Errorf("/metrics lacks kubelink_meshdns_clusters 1:\n%s", body)
	}
	proc.Terminate(t, 10*time.Second)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
