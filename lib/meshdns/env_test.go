package meshdns

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// env is a real API server with the objects the kubelink CoreDNS setup has:
// namespace kubelink, the kubelink CoreDNS deployment and the cluster DNS
// deployment (no controller-manager runs, so they stay plain objects).
type env struct {
	t    *testing.T
	cp   *testenv.ControlPlane
	kube client.Client
	ctx  context.Context
}

func startEnv(t *testing.T) *env {
	t.Helper()
	cp := testenv.StartForTest(t)
	kube, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, cp: cp, kube: kube, ctx: ctx}
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}})
	e.create(deployment("kubelink", "kubelink-coredns"))
	e.create(deployment(HookNamespace, ClusterDNSDeployment))
	return e
}

func deployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "coredns", Image: "coredns"}}},
			},
		},
	}
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.kube.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// createLink creates a KubeLink and writes its status through the status
// subresource, as the broker does in production.
func (e *env) createLink(kl v1alpha1.KubeLink) {
	e.t.Helper()
	state := kl.Status.State
	kl.CreationTimestamp, kl.Status = metav1.Time{}, v1alpha1.KubeLinkStatus{}
	e.create(&kl)
	if state != "" {
		e.setState(kl.Name, state)
	}
}

func (e *env) setState(name, state string) {
	e.t.Helper()
	var kl v1alpha1.KubeLink
	if err := e.kube.Get(e.ctx, client.ObjectKey{Name: name}, &kl); err != nil {
		e.t.Fatal(err)
	}
	kl.Status.State = state
	if err := e.kube.Status().Update(e.ctx, &kl); err != nil {
		e.t.Fatalf("status of %s: %v", name, err)
	}
}

// touch changes a label of a KubeLink: an event that changes nothing DNS
// cares about.
func (e *env) touch(name string) {
	e.t.Helper()
	var kl v1alpha1.KubeLink
	if err := e.kube.Get(e.ctx, client.ObjectKey{Name: name}, &kl); err != nil {
		e.t.Fatal(err)
	}
	kl.Labels = map[string]string{"touched": fmt.Sprint(time.Now().UnixNano())}
	if err := e.kube.Update(e.ctx, &kl); err != nil {
		e.t.Fatal(err)
	}
}

// run starts a controller in-process and stops it when the test ends.
func (e *env) run(cfg Config) *Controller {
	e.t.Helper()
	return e.runWith(cfg, e.cp.Config())
}

// runAsMeshDNS runs the controller as ServiceAccount kubelink-meshdns with
// the chart's RBAC (with its defaults) and nothing else.
func (e *env) runAsMeshDNS(cfg Config) *Controller {
	e.t.Helper()
	if err := testenv.CreateObjects(e.ctx, e.kube, testenv.ChartRBAC(e.t, nil)...); err != nil {
		e.t.Fatal(err)
	}
	rc, err := e.cp.ServiceAccountConfig(e.ctx, "kubelink", "kubelink-meshdns")
	if err != nil {
		e.t.Fatal(err)
	}
	return e.runWith(cfg, rc)
}

func (e *env) runWith(cfg Config, rc *rest.Config) *Controller {
	e.t.Helper()
	cfg.MetricsAddr = ""
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(cfg, rc, log)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Run did not return within 10s of cancel")
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitSynced waits until the controller has completed a sync that started
// after this call (so it saw every change made before).
func (e *env) waitSynced(c *Controller) {
	e.t.Helper()
	target := c.syncs.Load() + 2
	eventually(e.t, 10*time.Second, "two more syncs", func() (bool, string) {
		n := c.syncs.Load()
		return n >= target, fmt.Sprintf("syncs %d, want %d", n, target)
	})
}

// eventually polls cond until it holds or timeout passes; it returns how
// long that took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s: %s", what, timeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) secret() (*corev1.Secret, error) {
	var s corev1.Secret
	err := e.kube.Get(e.ctx, client.ObjectKey{Namespace: "kubelink", Name: "kubelink-coredns"}, &s)
	return &s, err
}

func (e *env) hook() (*corev1.ConfigMap, error) {
	var cm corev1.ConfigMap
	err := e.kube.Get(e.ctx, client.ObjectKey{Namespace: HookNamespace, Name: HookConfigMap}, &cm)
	return &cm, err
}

// restartedAt is the restart annotation of a deployment's pod template.
func (e *env) restartedAt(ns, name string) string {
	e.t.Helper()
	var d appsv1.Deployment
	if err := e.kube.Get(e.ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		e.t.Fatal(err)
	}
	return d.Spec.Template.Annotations[RestartAnnotation]
}

func notFound(err error) bool { return apierrors.IsNotFound(err) }

func clientKey(name string) client.ObjectKey { return client.ObjectKey{Name: name} }
