package broker

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubelink/kubelink/lib/testenv"
)

// The active broker's EndpointSlice against a real API server, written as
// the broker's ServiceAccount under the chart's RBAC and admission policy:
// the holder points the selector-less Service at its pod, a takeover moves
// it, a graceful stop clears only its own, nothing is written while the
// Lease is unconfirmed, a slice changed by someone else is put back, and
// the policy refuses every write that would steer another Service, open
// another port or name more than the one broker pod.
func TestActiveEndpointSlice(t *testing.T) {
	const ns = "kubelink"
	ctx := context.Background()
	env := testenv.ChartAccountForTest(t, nil, ns, "kubelink-broker")
	admin, rc := env.Admin, env.Config
	svc, err := admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-broker"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
			{Name: "wireguard", Port: 8777, Protocol: corev1.ProtocolUDP}, {Name: "bridge", Port: 8088, Protocol: corev1.ProtocolTCP}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	asBroker, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	var fresh atomic.Bool
	fresh.Store(true)
	publisher := func(pod, ip string) *endpointPublisher {
		return &endpointPublisher{slices: asBroker.DiscoveryV1().EndpointSlices(ns), namespace: ns,
			name: "kubelink-broker-active", service: "kubelink-broker",
			serviceUID: func(context.Context) (types.UID, error) { return svc.UID, nil },
			podIP:      netip.MustParseAddr(ip), podName: pod, podUID: types.UID("uid-" + pod), nodeName: "node-" + pod,
			ports: slicePorts(&cfg), leaseFresh: func() (time.Time, bool) { return time.Now().Add(time.Minute), fresh.Load() }, recheck: time.Hour, now: time.Now}
	}
	read := func() *discoveryv1.EndpointSlice {
		t.Helper()
		s, err := admin.DiscoveryV1().EndpointSlices(ns).Get(ctx, "kubelink-broker-active", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pointsAt := func(when, ip, pod string) {
		t.Helper()
		s := read()
		if len(s.Endpoints) != 1 || len(s.Endpoints[0].Addresses) != 1 || s.Endpoints[0].Addresses[0] != ip ||
			s.Endpoints[0].TargetRef == nil || s.Endpoints[0].TargetRef.Name != pod || deref(s.Endpoints[0].NodeName) != "node-"+pod ||
			!isTrue(s.Endpoints[0].Conditions.Ready) {
			t.Fatalf("%s: slice endpoints %+v, want %s (pod %s)", when, s.Endpoints, ip, pod)
		}
		if s.Labels[discoveryv1.LabelServiceName] != "kubelink-broker" || len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != svc.UID {
			t.Fatalf("%s: slice labels %v, owners %+v: want the Service kubelink-broker's", when, s.Labels, s.OwnerReferences)
		}
	}

	// The policy takes a moment to load after it is created: until then
	// a hostile create would pass, so wait until it refuses one.
	hostile := func(mutate func(*discoveryv1.EndpointSlice)) error {
		s := publisher("broker-x", "10.244.1.9").want(svc.UID)
		s.Name = "kubelink-broker-other"
		mutate(s)
		_, err := asBroker.DiscoveryV1().EndpointSlices(ns).Create(ctx, s, metav1.CreateOptions{})
		if err == nil {
			_ = admin.DiscoveryV1().EndpointSlices(ns).Delete(ctx, s.Name, metav1.DeleteOptions{})
		}
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for hostile(func(*discoveryv1.EndpointSlice) {}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the EndpointSlice admission policy is not in force after 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	a, b := publisher("broker-a", "10.244.1.5"), publisher("broker-b", "10.244.2.7")
	if err := a.ensure(ctx); err != nil {
		t.Fatalf("the first holder creating the slice: %v", err)
	}
	pointsAt("created by a", "10.244.1.5", "broker-a")
	if err := b.ensure(ctx); err != nil {
		t.Fatalf("b taking over: %v", err)
	}
	pointsAt("taken over by b", "10.244.2.7", "broker-b")
	rv := read().ResourceVersion
	if err := a.clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.ResourceVersion != rv {
		t.Fatalf("a's graceful stop changed b's slice: %+v", got.Endpoints)
	}

	// Not confirmed: no write, even when the slice is not this broker's.
	fresh.Store(false)
	a.published = time.Time{}
	if err := a.ensure(ctx); !errors.Is(err, errLeaseUnconfirmed) {
		t.Fatalf("ensure with an unconfirmed Lease: %v, want %v", err, errLeaseUnconfirmed)
	}
	pointsAt("after a's unconfirmed attempt", "10.244.2.7", "broker-b")
	fresh.Store(true)

	// Someone else changes it: put back at the next check.
	s := read()
	s.Endpoints[0].Addresses = []string{"10.244.9.9"}
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := read().Endpoints[0].Addresses[0]; got != "10.244.9.9" {
		t.Fatalf("ensure within the recheck period read the slice back (%s): it should cost nothing", got)
	}
	b.recheck = 0
	if err := b.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	pointsAt("put back by b", "10.244.2.7", "broker-b")
	rv = read().ResourceVersion
	if err := b.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if read().ResourceVersion != rv {
		t.Error("ensure rewrote a slice that was right")
	}

	if err := b.clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got := read(); len(got.Endpoints) != 1 || isTrue(got.Endpoints[0].Conditions.Ready) || isTrue(got.Endpoints[0].Conditions.Serving) ||
		!isTrue(got.Endpoints[0].Conditions.Terminating) {
		t.Fatalf("b's graceful stop left endpoints %+v, want its endpoint terminating and not ready", got.Endpoints)
	}

	// The admission policy and RBAC, as the broker.
	for _, c := range []struct {
		what   string
		mutate func(*discoveryv1.EndpointSlice)
		want   string
	}{
		{"another slice name", func(*discoveryv1.EndpointSlice) {}, "only the EndpointSlice kubelink-broker-active"},
		{"another Service", func(s *discoveryv1.EndpointSlice) {
			s.Name = "kubelink-broker-active"
			s.Labels[discoveryv1.LabelServiceName] = "kubelink-coredns"
		}, "belongs to the Service kubelink-broker"},
		{"another port", func(s *discoveryv1.EndpointSlice) {
			s.Name = "kubelink-broker-active"
			n, p, proto := "ssh", int32(22), corev1.ProtocolTCP
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &n, Port: &p, Protocol: &proto})
		}, "only the ports wireguard (UDP 8777) and bridge (TCP 8088)"},
		{"two endpoints", func(s *discoveryv1.EndpointSlice) {
			s.Name = "kubelink-broker-active"
			s.Endpoints = append(s.Endpoints, s.Endpoints[0])
		}, "at most one endpoint"},
		{"a node as the endpoint", func(s *discoveryv1.EndpointSlice) {
			s.Name = "kubelink-broker-active"
			s.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Node", Name: "node-a"}
		}, "one address of a broker Pod"},
	} {
		// The slice exists (cleared): a create of the same name would be
		// refused as a conflict, so these are updates of it.
		var err error
		if c.what == "another slice name" {
			err = hostile(c.mutate)
		} else {
			s := read()
			w := b.want(svc.UID)
			s.Labels, s.Endpoints, s.Ports = w.Labels, w.Endpoints, w.Ports
			c.mutate(s)
			_, err = asBroker.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{})
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("broker writing %s: %v, want a refusal containing %q", c.what, err, c.want)
		}
	}
	// RBAC: no other slice may be read or changed, and none listed.
	other := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-coredns-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "kubelink-coredns"}},
		AddressType: discoveryv1.AddressTypeIPv4}
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := asBroker.DiscoveryV1().EndpointSlices(ns).Get(ctx, other.Name, metav1.GetOptions{}); err == nil {
		t.Error("the broker read another EndpointSlice")
	}
	if err := asBroker.DiscoveryV1().EndpointSlices(ns).Delete(ctx, other.Name, metav1.DeleteOptions{}); err == nil {
		t.Error("the broker deleted another EndpointSlice")
	}
	if _, err := asBroker.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("the broker listed the EndpointSlices")
	}
}

// The Lease gate: fresh from a confirmation until the renew deadline after
// the request was sent, never before the first one.
func TestConfirmedUntil(t *testing.T) {
	now := time.Unix(1000, 0)
	e := &elector{now: func() time.Time { return now }}
	if _, ok := e.confirmedUntil(3 * time.Second); ok {
		t.Error("fresh before any confirmation")
	}
	e.confirm(now.Add(-time.Second)) // sent a second ago, answered now
	if until, ok := e.confirmedUntil(3 * time.Second); !ok || !until.Equal(now.Add(2*time.Second)) {
		t.Errorf("after a confirmation sent 1 s ago: until %v, fresh %v; want 2 s from now, fresh", until.Sub(now), ok)
	}
	now = now.Add(2 * time.Second)
	if _, ok := e.confirmedUntil(3 * time.Second); ok {
		t.Error("fresh 3 s after the request was sent, with a 3 s renew deadline")
	}
}
