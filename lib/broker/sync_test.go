package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
	"github.com/kubelink/kubelink/lib/testenv"
)

// fakePlane is a DataPlane that records the plans it gets and reports what
// the test tells it: every link the plan carries is served unless the test
// sets its report.
type fakePlane struct {
	mu        sync.Mutex
	plans     []*mesh.GatewayPlan
	deviceErr error
	links     map[string]LinkReport // overrides per link
	bindings  [][]*mesh.ServiceBinding
	closed    bool
}

func (f *fakePlane) Kind() string              { return "fake" }
func (f *fakePlane) Transport() mesh.Transport { return mesh.TransportWireGuard }
func (f *fakePlane) DefaultPort() uint16       { return 8777 }
func (f *fakePlane) Drops(string) (uint64, bool) {
	return 0, false
}

func (f *fakePlane) Apply(_ context.Context, plan *mesh.GatewayPlan) Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plans = append(f.plans, plan)
	rep := Report{DeviceErr: f.deviceErr, PublicKey: testKey, Links: map[string]LinkReport{}}
	for n, err := range plan.LinkErrs {
		rep.Links[n] = LinkReport{Err: err}
	}
	for n := range plan.Carrier {
		rep.Links[n] = LinkReport{}
	}
	for n, lr := range f.links {
		rep.Links[n] = lr
	}
	return rep
}

func (f *fakePlane) ApplyServices(b []*mesh.ServiceBinding) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bindings = append(f.bindings, b)
	return nil
}

func (f *fakePlane) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fakePlane) set(fn func(f *fakePlane)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakePlane) lastPlan() *mesh.GatewayPlan {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.plans) == 0 {
		return nil
	}
	return f.plans[len(f.plans)-1]
}

// startAPI starts a real API server for the test and returns a client and a
// context that ends with the test.
func startAPI(t *testing.T) (*testenv.ControlPlane, client.Client, context.Context) {
	t.Helper()
	cp := testenv.StartForTest(t)
	kube, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return cp, kube, ctx
}

// runOnFake runs a broker with cfg on the fake data plane until ctx ends;
// the result of its Run arrives on the channel.
func runOnFake(t *testing.T, ctx context.Context, cfg Config, cp *testenv.ControlPlane, fake *fakePlane) (*Broker, <-chan error) {
	t.Helper()
	b, err := New(cfg, cp.Config(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.newPlane = func(context.Context, PlaneDeps) (DataPlane, error) { return fake, nil }
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, cp.Config()) }()
	return b, done
}

var testKey, _ = mesh.ParseKey("4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI/4ms=")

// Broker.sync against a real API server with a fake data plane: what the
// plane reports becomes each link's status and Events, the plan holds only
// accepted links, and the plane is closed when the broker stops. The
// cluster addresses are on loopback (127.0.10.0/24), so the health probes
// are real UDP probes on lo and never leave the machine.
func TestSyncWithFakePlane(t *testing.T) {
	cp, kube, ctx := startAPI(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	probePort := 20000 + os.Getpid()%20000
	cfg := Defaults()
	cfg.Namespace, cfg.LeaderElect, cfg.MetricsAddr, cfg.Identity = "default", false, "", "test-broker"
	cfg.NodeCIDR = netip.MustParsePrefix("127.0.0.0/8") // node mode on lo
	cfg.ProbePort, cfg.ProbeInterval, cfg.ProbeDownAfter = probePort, 100*time.Millisecond, 600*time.Millisecond
	cfg.Resync = 300 * time.Millisecond

	kl := func(name string, spec v1alpha1.KubeLinkSpec) {
		t.Helper()
		if err := kube.Create(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	kl("a", v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "127.0.10.1/24", CIDR: "100.64.0.0/20"})
	kl("b", v1alpha1.KubeLinkSpec{Endpoint: "127.0.0.1:1", ClusterAddress: "127.0.10.2/24", CIDR: "100.64.16.0/20", PublicKey: testKey.String()})
	kl("c", v1alpha1.KubeLinkSpec{Endpoint: "127.0.0.1:2", ClusterAddress: "127.0.10.3/24", CIDR: "100.64.32.0/20", PublicKey: "0hNZgTv4lV2YkRB3O7nUoQ8xh0xHkqOQp2G0kYQ3yFw="})
	// Claims a's service CIDR: never handed to the plane.
	kl("bad", v1alpha1.KubeLinkSpec{Endpoint: "127.0.0.1:3", ClusterAddress: "127.0.10.4/24", CIDR: "100.64.0.0/20", PublicKey: "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="})

	// b's side of the health probe: a real responder on its address.
	respB, err := probe.Listen(netip.MustParseAddr("127.0.10.2"), probePort)
	if err != nil {
		t.Fatal(err)
	}
	defer respB.Close()

	fake := &fakePlane{links: map[string]LinkReport{"c": {Err: errors.New("endpoint c.example: lookup c.example: no such host")}}}
	b, done := runOnFake(t, ctx, cfg, cp, fake)

	state := func(name string) (v1alpha1.KubeLinkStatus, error) {
		var l v1alpha1.KubeLink
		err := kube.Get(ctx, client.ObjectKey{Name: name}, &l)
		return l.Status, err
	}
	// waitStates waits until every named link has its state with a message
	// containing the given text.
	waitStates := func(what string, want map[string][2]string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var wrong []string
			for n, w := range want {
				st, err := state(n)
				if err != nil || st.State != w[0] || !strings.Contains(st.Message, w[1]) {
					wrong = append(wrong, fmt.Sprintf("%s: %s %q (want %s %q) %v", n, st.State, st.Message, w[0], w[1], err))
				}
			}
			if len(wrong) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", what, strings.Join(wrong, "; "))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	waitStates("first sync", map[string][2]string{
		"a":   {v1alpha1.StateUp, "local member"},
		"b":   {v1alpha1.StateUp, "the health probe answers"},
		"c":   {v1alpha1.StateError, "no such host"},
		"bad": {v1alpha1.StateStale, "100.64.0.0/20"},
	})
	if st, _ := state("a"); st.PublicKey != testKey.String() || st.DataPlane != "fake" {
		t.Errorf("a: public key %q data plane %q, want the plane's key and kind", st.PublicKey, st.DataPlane)
	}
	plan := fake.lastPlan()
	if _, ok := plan.Model.Link("bad"); ok {
		t.Error("the plan holds the stale link bad")
	}
	if plan.Options.Device != cfg.Interface || plan.Options.Transport != mesh.TransportWireGuard || plan.Options.ProbePort != probePort {
		t.Errorf("plan options %+v", plan.Options)
	}
	if plan.Carrier["b"] != "b" || plan.Carrier["c"] != "c" {
		t.Errorf("carriers %v", plan.Carrier)
	}

	// A device problem is every link's, the local one's too.
	fake.set(func(f *fakePlane) { f.deviceErr = errors.New("WireGuard device kubelink: operation not permitted") })
	b.kick()
	waitStates("device error", map[string][2]string{
		"a": {v1alpha1.StateError, "operation not permitted"},
		"b": {v1alpha1.StateError, "operation not permitted"},
		"c": {v1alpha1.StateError, "operation not permitted"},
	})

	// Repaired; b's connection is idle.
	fake.set(func(f *fakePlane) {
		f.deviceErr = nil
		f.links = map[string]LinkReport{"b": {Idle: "dial tcp 127.0.0.1:1: connection refused"}}
	})
	b.kick()
	waitStates("b idle", map[string][2]string{
		"a": {v1alpha1.StateUp, "local member"},
		"b": {v1alpha1.StateIdle, "connection refused"},
	})

	// b served again, but its probe responder is gone: Down after
	// ProbeDownAfter, not before it answered once more.
	fake.set(func(f *fakePlane) { f.links = nil })
	b.kick()
	waitStates("b up again", map[string][2]string{"b": {v1alpha1.StateUp, "the health probe answers"}, "c": {v1alpha1.StateDown, "no reply"}})
	_ = respB.Close()
	waitStates("b down", map[string][2]string{"b": {v1alpha1.StateDown, "no reply to the health probe since"}})

	// Every state change is an Event on the link (recorded asynchronously).
	wantEvents := []string{"a/Up", "a/Error", "b/Up", "b/Error", "b/Idle", "b/Down", "c/Error", "bad/Stale"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var events corev1.EventList
		if err := kube.List(ctx, &events, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "KubeLink" {
				seen[e.InvolvedObject.Name+"/"+e.Reason] = true
			}
		}
		var missing []string
		for _, w := range wantEvents {
			if !seen[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Events %v (have %v)", missing, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after its context")
	}
	fake.set(func(f *fakePlane) {
		if !f.closed {
			t.Error("the plane was not closed when the broker stopped")
		}
		if len(f.bindings) == 0 {
			t.Error("ApplyServices was never called")
		}
	})
}
