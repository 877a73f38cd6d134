package broker

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// A status-only update of a KubeLink (the broker's own writes, or anyone's)
// starts no pass; a change of its spec does, at once. With a pass per status
// write, 250 links kept the broker in passes back to back (issue #33). The
// resync is an hour, so every pass in the test comes from a kick.
func TestStatusOnlyUpdatesStartNoPass(t *testing.T) {
	cp, kube, ctx := startAPI(t)
	ctx, cancel := context.WithCancel(ctx)
	cfg := Defaults()
	cfg.Namespace, cfg.LeaderElect, cfg.MetricsAddr, cfg.Identity = "default", false, "", "test-broker"
	cfg.NodeCIDR = netip.MustParsePrefix("127.0.0.0/8")
	cfg.ProbePort, cfg.ProbeInterval, cfg.ProbeDownAfter = 20000+(os.Getpid()+7)%20000, 100*time.Millisecond, 300*time.Millisecond
	cfg.Resync, cfg.HealthEvery = time.Hour, time.Hour
	for _, kl := range []*v1alpha1.KubeLink{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "127.0.11.1/24", CIDR: "100.64.0.0/20"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1alpha1.KubeLinkSpec{Endpoint: "127.0.0.1:1", ClusterAddress: "127.0.11.2/24", CIDR: "100.64.16.0/20", PublicKey: testKey.String()}},
	} {
		if err := kube.Create(ctx, kl); err != nil {
			t.Fatal(err)
		}
	}
	fake := &fakePlane{}
	_, done := runOnFake(t, ctx, cfg, cp, fake)
	defer func() { cancel(); <-done }()

	passes := func() int {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return len(fake.plans)
	}
	link := func() *v1alpha1.KubeLink {
		var kl v1alpha1.KubeLink
		if err := kube.Get(ctx, client.ObjectKey{Name: "b"}, &kl); err != nil {
			t.Fatal(err)
		}
		return &kl
	}
	// b has no responder: it settles Down (the prober's change kicks one
	// more pass, which writes Down).
	deadline := time.Now().Add(20 * time.Second)
	for link().Status.State != v1alpha1.StateDown {
		if time.Now().After(deadline) {
			t.Fatalf("b not Down within 20s: %+v", link().Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// quiet for 1 s: the passes of the start are over
	settle := time.Now().Add(10 * time.Second)
	for n := passes(); ; {
		time.Sleep(time.Second)
		if m := passes(); m == n {
			break
		} else {
			n = m
		}
		if time.Now().After(settle) {
			t.Fatalf("passes did not stop (%d) without any change", passes())
		}
	}

	before := passes()
	for i := range 5 {
		kl := link()
		orig := kl.DeepCopy()
		kl.Status.Health = &v1alpha1.LinkHealth{RxBytes: int64(1000 + i)}
		kl.Status.Message = "written by the test"
		if err := kube.Status().Patch(ctx, kl, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	// every check for 2 s: no pass
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if n := passes(); n != before {
			t.Fatalf("%d passes after 5 status-only updates, want none", n-before)
		}
	}

	kl := link()
	orig := kl.DeepCopy()
	kl.Spec.CIDR = "100.64.32.0/20"
	if err := kube.Patch(ctx, kl, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for passes() == before {
		if time.Now().After(deadline) {
			t.Fatal("a spec change started no pass within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
