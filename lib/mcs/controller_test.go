package mcs

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/testenv"
)

// The export side against a real API server with the upstream CRDs: every
// ServiceExport's Valid condition says the truth about its Service (none,
// ExternalName, exported as ClusterSetIP or Headless) and follows it as it
// comes and goes; Ready says the export is in no other cluster yet; the
// record holds exactly the valid exports; and a steady state writes
// nothing.
func TestExportConditionsAndRecord(t *testing.T) {
	cp := &testenv.ControlPlane{Name: "mcs"}
	testenv.StartControlPlaneForTest(t, cp)
	testenv.InstallCRDs(t, cp.Config(), "MCS", CRDs)
	scheme, err := NewScheme()
	must(t, err)
	kube, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"kubelink", "shop"} {
		must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	ctrl, err := New(Config{Namespace: "kubelink", Resync: time.Second}, cp.Config(), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	svc := func(name string, mod func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
		if mod != nil {
			mod(s)
		}
		return s
	}
	export := func(name string) {
		must(t, kube.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}))
	}
	must(t, kube.Create(ctx, svc("web", nil)))
	must(t, kube.Create(ctx, svc("db", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })))
	must(t, kube.Create(ctx, svc("ext", func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalName, s.Spec.Ports = corev1.ServiceTypeExternalName, "example.org", nil
	})))
	for _, n := range []string{"web", "db", "ext", "ghost"} {
		export(n)
	}

	condition := func(name string, typ mcsv1beta1.ServiceExportConditionType) *metav1.Condition {
		var se mcsv1beta1.ServiceExport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &se); err != nil {
			return nil
		}
		for _, c := range se.Status.Conditions {
			if c.Type == string(typ) {
				return &c
			}
		}
		return nil
	}
	validIs := func(name string, status metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) func() bool {
		return func() bool {
			c := condition(name, mcsv1beta1.ServiceExportConditionValid)
			return c != nil && c.Status == status && c.Reason == string(reason) && strings.Contains(c.Message, msg)
		}
	}
	record := func() map[string]Export {
		var cm corev1.ConfigMap
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: RecordConfigMap}, &cm); apierrors.IsNotFound(err) {
			return nil // not written yet
		} else if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeRecord([]byte(cm.Data[RecordKey]))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Export{}
		for _, e := range r.Exports {
			out[e.Key()] = e
		}
		return out
	}
	eventually(t, "web exported", validIs("web", metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid, "exported as ClusterSetIP"))
	eventually(t, "db exported as Headless", validIs("db", metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid, "exported as Headless"))
	eventually(t, "ext refused", validIs("ext", metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonInvalidServiceType, "ExternalName"))
	eventually(t, "ghost without a Service", validIs("ghost", metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoService, "no Service shop/ghost"))
	if c := condition("web", mcsv1beta1.ServiceExportConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(mcsv1beta1.ServiceExportReasonPending) {
		t.Errorf("web's Ready condition %+v, want False/Pending (no other cluster has it yet)", c)
	}
	if c := condition("ghost", mcsv1beta1.ServiceExportConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(mcsv1beta1.ServiceExportReasonFailed) ||
		!strings.Contains(c.Message, "no Service shop/ghost") {
		t.Errorf("ghost's Ready condition %+v, want False/Failed naming the missing Service", c)
	}
	var web corev1.Service
	must(t, kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &web))
	eventually(t, "the record with web and db only", func() bool {
		r := record()
		return len(r) == 2 && r["shop/web"].ClusterIP == web.Spec.ClusterIP && r["shop/db"].Type == mcsv1beta1.Headless
	})
	r := record()
	w := r["shop/web"]
	if w.Type != mcsv1beta1.ClusterSetIP || len(w.Ports) != 2 || w.Ports[0] != (Port{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}) ||
		w.Ports[1] != (Port{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}) || w.SessionAffinity != corev1.ServiceAffinityNone || w.Exported.IsZero() {
		t.Errorf("web's export %+v", w)
	}
	if r["shop/db"].ClusterIP != "" {
		t.Errorf("a headless export with a ClusterIP: %+v", r["shop/db"])
	}

	// A steady state writes nothing: over 3 s (three resyncs) no
	// ServiceExport and not the record changes.
	versions := func() string {
		var list mcsv1beta1.ServiceExportList
		must(t, kube.List(ctx, &list))
		var cm corev1.ConfigMap
		must(t, kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: RecordConfigMap}, &cm))
		v := cm.ResourceVersion
		for _, se := range list.Items {
			v += "," + se.ResourceVersion
		}
		return v
	}
	before := versions()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if now := versions(); now != before {
			t.Fatalf("a steady state was written: resource versions %s, then %s", before, now)
		}
	}

	// The Service comes and goes: the condition and the record follow.
	must(t, kube.Create(ctx, svc("ghost", nil)))
	eventually(t, "ghost exported once its Service exists", validIs("ghost", metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid, ""))
	eventually(t, "ghost in the record", func() bool { _, ok := record()["shop/ghost"]; return ok })
	must(t, kube.Delete(ctx, &web))
	eventually(t, "web no longer exported after its Service went", validIs("web", metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoService, ""))
	eventually(t, "web out of the record", func() bool { r := record(); _, ok := r["shop/web"]; return r != nil && !ok })
	must(t, kube.Delete(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ghost"}}))
	eventually(t, "ghost out of the record after its ServiceExport went", func() bool {
		r := record()
		_, ok := r["shop/ghost"]
		return r != nil && !ok
	})
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "ghost"}, &corev1.Service{}); apierrors.IsNotFound(err) {
		t.Error("unexporting deleted the Service")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
