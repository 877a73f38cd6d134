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
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/mcs"
	"github.com/kubelink/kubelink/lib/selfexec"
	"github.com/kubelink/kubelink/lib/testenv"
)

// runMainEnv makes the test binary act as the command (lib/selfexec), so
// the tests run the real main with real flags in a child process.
const runMainEnv = "KUBELINK_MCS_RUN_MAIN"

func TestMain(m *testing.M) { selfexec.Main(m, runMainEnv, main) }

func runBinary(args ...string) *exec.Cmd { return selfexec.Command(runMainEnv, args...) }

func TestFlagErrorsAreReported(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--namespace=Not_A_Namespace"}, `--namespace="Not_A_Namespace"`},
		{[]string{"--resync=0s"}, "--resync=0s: must be positive"},
	} {
		out, err := runBinary(append(c.args, "--kubeconfig=/nonexistent")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: err %v, want %q in the output:\n%s", c.args, err, c.want, out)
		}
	}
	out, err := runBinary("--help").CombinedOutput()
	for _, flag := range []string{"--namespace", "--resync", "--metrics-addr", "--kubeconfig", "--log-level"} {
		if err != nil || !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s (err %v)", flag, err)
		}
	}
}

// The binary, started as in a cluster against a real API server with the
// upstream CRDs: a ServiceExport of an existing Service becomes Valid and
// lands in the record, one without a Service does not; it serves /readyz
// and /metrics and exits cleanly on SIGTERM.
func TestBinaryExports(t *testing.T) {
	cp := testenv.StartForTest(t)
	testenv.InstallCRDs(t, cp.Config(), "MCS", mcs.CRDs)
	scheme, err := mcs.NewScheme()
	must(t, err)
	kube, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	must(t, err)
	ctx := context.Background()
	kc, err := cp.KubeConfig()
	must(t, err)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kcPath, kc, 0o600))
	for _, ns := range []string{"kubelink", "shop"} {
		must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	must(t, kube.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}))
	for _, name := range []string{"cart", "gone"} {
		must(t, kube.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}))
	}

	metricsAddr := selfexec.FreeAddr(t)
	proc := selfexec.Start(t, runMainEnv, "kubelink-mcs", "--kubeconfig="+kcPath, "--namespace=kubelink", "--metrics-addr="+metricsAddr)

	valid := func(name string) string {
		var se mcsv1beta1.ServiceExport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &se); err != nil {
			return ""
		}
		for _, c := range se.Status.Conditions {
			if c.Type == string(mcsv1beta1.ServiceExportConditionValid) {
				return string(c.Status) + " " + c.Reason
			}
		}
		return ""
	}
	var record string
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(100 * time.Millisecond) {
		var cm corev1.ConfigMap
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: mcs.RecordConfigMap}, &cm); err == nil {
			record = cm.Data[mcs.RecordKey]
		}
		if valid("cart") != "" && valid("gone") != "" && record != "" {
			break
		}
	}
	if got := valid("cart"); got != "True Valid" {
		t.Errorf("ServiceExport shop/cart: Valid %q, want True Valid", got)
	}
	if got := valid("gone"); got != "False NoService" {
		t.Errorf("ServiceExport shop/gone: Valid %q, want False NoService", got)
	}
	rec, err := mcs.DecodeRecord([]byte(record))
	if err != nil || len(rec.Exports) != 1 || rec.Exports[0].Name != "cart" {
		t.Errorf("record %q (%v), want shop/cart alone", record, err)
	}
	if body := selfexec.Get(t, "http://"+metricsAddr+"/readyz"); body != "ok\n" {
		t.Errorf("/readyz: %q", body)
	}
	body := selfexec.Get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`kubelink_mcs_exports{valid="true"} 1`, `kubelink_mcs_exports{valid="false"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	proc.Terminate(t, 10*time.Second)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
