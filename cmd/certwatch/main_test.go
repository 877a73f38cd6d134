package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/certwatch"
	"github.com/kubelink/kubelink/lib/selfexec"
	"github.com/kubelink/kubelink/lib/testenv"
)

// runMainEnv makes the test binary act as the command (lib/selfexec), so
// the tests run the real main with real flags in a child process.
const runMainEnv = "KUBELINK_CERTWATCH_RUN_MAIN"

func TestMain(m *testing.M) { selfexec.Main(m, runMainEnv, main) }

func runBinary(args ...string) *exec.Cmd { return selfexec.Command(runMainEnv, args...) }

func TestFlagErrorsAreReported(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--secret-manage-mode=bogus"}, `--secret-manage-mode="bogus": must be none, self or csr`},
		{[]string{"--secret-manage-mode=csr", "--dns-name=b.example.com", "--identities=kubelink://m/b"}, "needs --authority-secret or --authority-kubeconfig"},
		{[]string{"--sign-requests"}, "--sign-requests needs --secret-manage-mode=self"},
		{[]string{"--secret-manage-mode=self"}, "--secret-manage-mode=self needs --dns-name"},
		{[]string{"--secret-manage-mode=self", "--dns-name=a.example.com", "--cert-validity=1s"}, "--cert-validity=1s: must be at least 3s"},
		{[]string{"--tls-secret=", "--wireguard-secret="}, "nothing to do"},
		{[]string{"--cert-validity=soon"}, "cert-validity"},
	} {
		out, err := runBinary(append(tc.args, "--kubeconfig=/nonexistent")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: err %v, want %q in output:\n%s", tc.args, err, tc.want, out)
		}
	}
	out, err := runBinary("--help").CombinedOutput()
	for _, flag := range []string{"--namespace", "--tls-secret", "--wireguard-secret", "--dir", "--secret-manage-mode", "--dns-name",
		"--cert-validity", "--resync", "--sign-requests", "--authority-kubeconfig", "--authority-secret", "--authority-namespace", "--metrics-addr", "--kubeconfig", "--log-level"} {
		if err != nil || !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s (err %v)", flag, err)
		}
	}
}

// The binary, started like in a cluster in self mode, creates the Secrets,
// writes the files, serves /healthz and /metrics and exits on SIGTERM.
func TestBinarySelfManaged(t *testing.T) {
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
	must(t, os.WriteFile(kcPath, kc, 0o600))
	must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}}))
	metricsAddr := selfexec.FreeAddr(t)
	dir := t.TempDir()
	proc := selfexec.Start(t, runMainEnv, "kubelink-certwatch", "--kubeconfig="+kcPath, "--namespace=kubelink", "--secret-manage-mode=self", "--dns-name=kubelink.a.example.com",
		"--dir="+dir, "--metrics-addr="+metricsAddr)

	var s corev1.Secret
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(100 * time.Millisecond) {
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: "kubelink-tls"}, &s); err == nil {
			if b, err := os.ReadFile(filepath.Join(dir, "tls", "tls.crt")); err == nil && bytes.Equal(b, s.Data["tls.crt"]) {
				break
			}
		}
	}
	if _, err := certwatch.CheckCert(s.Data["tls.crt"], s.Data["tls.key"], s.Data["ca.crt"], "kubelink.a.example.com", time.Now()); err != nil {
		t.Errorf("Secret kubelink/kubelink-tls: %v", err)
	}
	m, err := certwatch.ReadSnapshot(filepath.Join(dir, "tls"), "tls.crt", "tls.key", "ca.crt")
	if err != nil || !bytes.Equal(m["tls.crt"], s.Data["tls.crt"]) || !bytes.Equal(m["tls.key"], s.Data["tls.key"]) {
		t.Errorf("TLS files do not match the Secret (err %v)", err)
	}
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "wireguard", "privatekey")); err == nil {
			break
		}
	}
	var wg corev1.Secret
	must(t, kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: "wireguard"}, &wg))
	if b, err := os.ReadFile(filepath.Join(dir, "wireguard", "privatekey")); err != nil || string(b) != string(wg.Data["WireguardPrivateKey"])+"\n" {
		t.Errorf("privatekey %q (err %v), Secret %q", b, err, wg.Data["WireguardPrivateKey"])
	}
	if body := selfexec.Get(t, "http://"+metricsAddr+"/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	body := selfexec.Get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`kubelink_certwatch_writes_total{dir="tls"} 1`, `kubelink_certwatch_writes_total{dir="wireguard"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	// The default validity is 10 days.
	expiry := -1.0
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "kubelink_certwatch_cert_expiry_seconds "); ok {
			expiry, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if tenDays := (240 * time.Hour).Seconds(); expiry < tenDays-60 || expiry > tenDays {
		t.Errorf("kubelink_certwatch_cert_expiry_seconds %v, want about %v", expiry, tenDays)
	}
	proc.Terminate(t, 10*time.Second)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
