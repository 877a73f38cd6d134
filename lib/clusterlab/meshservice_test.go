package clusterlab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func msvc(name string, spec v1alpha1.MeshServiceSpec) *v1alpha1.MeshService {
	return &v1alpha1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
}

func (c *Cluster) waitServiceState(t *testing.T, name, state string, limit time.Duration) *v1alpha1.MeshService {
	t.Helper()
	var ms v1alpha1.MeshService
	waitFor(t, "MeshService "+name+" "+state, limit, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Kube.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &ms) == nil && ms.Status.State == state
	})
	return &ms
}

// MeshServices of B (pod mode) reached from A: a virtual mesh address bound
// to a Service, a port of B's cluster address bound to a named Service port,
// and explicit endpoints without a Service; the rules follow a renamed port
// and vanish with the MeshService. In node mode MeshServices are Unsupported.
func TestMeshServices(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	pod, _ := b.BrokerPod()
	a.StartRouter(lab)
	b.StartRouter(lab)
	b.StartRouterOn(lab, b.GW)
	a.StartBroker(lab, a.GW)
	b.StartBrokerInPod(lab, pod)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: corev1.ServiceSpec{
		ClusterIP: b.ServiceIP.Addr().String(),
		Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	must(t, b.Kube.Create(ctx, svc))
	b.Apply(
		msvc("virtual", v1alpha1.MeshServiceSpec{Service: "echo", MeshAddress: "192.168.0.100"}),
		msvc("ported", v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
			Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{{Port: intstr.FromInt32(8800), TargetPort: intstr.FromString("http")}}}}}),
		msvc("direct", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.101", Ports: []v1alpha1.ServicePort{{Port: 80}},
			Endpoints: []v1alpha1.ServiceEndpoint{{Address: b.PodIP.String(), PortMappings: []v1alpha1.PortMapping{{Port: intstr.FromInt32(80), TargetPort: intstr.FromInt32(8080)}}}}}),
	)
	// A reaches the virtual addresses through its link to B (egress).
	toB := b.LinkTo()
	toB.Spec.Egress = []string{"192.168.0.100", "192.168.0.101", "192.168.0.102", "192.168.0.103", "192.168.0.104"}
	a.Apply(a.LocalLink(), toB)
	b.Apply(b.LocalLink(), a.LinkTo())

	for _, target := range []string{"192.168.0.100:80", "192.168.0.12:8800", "192.168.0.101:80"} {
		if body, _ := WaitGet(t, a.Pod, netip.MustParseAddrPort(target), 8*time.Second); !strings.Contains(body, "echo b") {
			t.Errorf("%s answered %q", target, body)
		}
	}
	for _, n := range []string{"virtual", "ported", "direct"} {
		ms := b.waitServiceState(t, n, v1alpha1.StateOk, 5*time.Second)
		if ms.Status.ObservedGeneration != ms.Generation || !strings.Contains(ms.Status.Targets, "192.168.0.1") || !strings.Contains(ms.Status.Targets, "->") && !strings.Contains(ms.Status.Targets, "forwards") {
			t.Errorf("%s status %+v", n, ms.Status)
		}
	}

	// MeshServices aimed past what a namespace may expose (a node's
	// kubelet, the instance metadata, the API server) are Invalid, naming
	// the field; a second binding of direct's address and port is Stale,
	// naming direct. None gets a rule, nothing answers through them, and
	// direct keeps answering.
	b.Apply(
		msvc("kubelet", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.102", Ports: []v1alpha1.ServicePort{{Port: 10250}},
			Endpoints: []v1alpha1.ServiceEndpoint{{Address: b.NodeIP.String()}}}),
		msvc("metadata", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.103", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "169.254.169.254"}}}),
		msvc("apiserver", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.104", Endpoints: []v1alpha1.ServiceEndpoint{{Address: b.ServiceAddr(1).String()}}}),
		msvc("twice", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.101", Ports: []v1alpha1.ServicePort{{Port: 80}},
			Endpoints: []v1alpha1.ServiceEndpoint{{Address: b.PodIP.String()}}}),
	)
	for n, want := range map[string]string{
		"kubelet":   "spec.endpoints[0].address: " + b.NodeIP.String() + " is neither a pod",
		"metadata":  "spec.endpoints[0].address: 169.254.169.254 is neither a pod",
		"apiserver": b.ServiceAddr(1).String() + " is the API server's Service",
	} {
		if ms := b.waitServiceState(t, n, v1alpha1.StateInvalid, 5*time.Second); !strings.Contains(ms.Status.Message, want) {
			t.Errorf("%s: message %q, want %q", n, ms.Status.Message, want)
		}
	}
	if ms := b.waitServiceState(t, "twice", v1alpha1.StateStale, 5*time.Second); !strings.Contains(ms.Status.Message, "192.168.0.101:80/tcp is bound by MeshService default/direct already") {
		t.Errorf("twice: message %q", ms.Status.Message)
	}
	if nat := pod.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, "192.168.0.102") || strings.Contains(nat, "192.168.0.103") ||
		strings.Contains(nat, "192.168.0.104") || strings.Contains(nat, "169.254.169.254") {
		t.Errorf("rules for a refused MeshService:\n%s", nat)
	}
	for _, target := range []string{"192.168.0.102:10250", "192.168.0.103:80", "192.168.0.104:443"} {
		if _, err := Get(a.Pod, netip.MustParseAddrPort(target), "/", 500*time.Millisecond); err == nil {
			t.Errorf("%s answers through a refused MeshService", target)
		}
	}
	b.waitServiceState(t, "direct", v1alpha1.StateOk, time.Second)
	if body, _ := WaitGet(t, a.Pod, netip.MustParseAddrPort("192.168.0.101:80"), 5*time.Second); !strings.Contains(body, "echo b") {
		t.Errorf("direct answered %q next to its duplicate", body)
	}
	for _, n := range []string{"kubelet", "metadata", "apiserver", "twice"} {
		must(t, b.Kube.Delete(ctx, msvc(n, v1alpha1.MeshServiceSpec{})))
	}

	// The Service port is renamed: the named mapping no longer resolves.
	must(t, b.Kube.Get(ctx, client.ObjectKeyFromObject(svc), svc))
	svc.Spec.Ports[0].Name = "web"
	must(t, b.Kube.Update(ctx, svc))
	ms := b.waitServiceState(t, "ported", v1alpha1.StateInvalid, 5*time.Second)
	if !strings.Contains(ms.Status.Message, `no port named "http" (it has web)`) {
		t.Errorf("message %q", ms.Status.Message)
	}
	// One Invalid MeshService breaks no other: both stay Ok and answer.
	for _, n := range []string{"virtual", "direct"} {
		b.waitServiceState(t, n, v1alpha1.StateOk, time.Second)
	}
	for _, target := range []string{"192.168.0.100:80", "192.168.0.101:80"} {
		if body, _ := WaitGet(t, a.Pod, netip.MustParseAddrPort(target), 5*time.Second); !strings.Contains(body, "echo b") {
			t.Errorf("%s answered %q while ported was Invalid", target, body)
		}
	}
	waitFor(t, "the stale binding to go", 5*time.Second, func() bool {
		_, err := Get(a.Pod, netip.MustParseAddrPort("192.168.0.12:8800"), "/", 500*time.Millisecond)
		return err != nil
	})
	ms.Spec.Endpoints[0].PortMappings[0].TargetPort = intstr.FromString("web")
	must(t, b.Kube.Update(ctx, ms))
	b.waitServiceState(t, "ported", v1alpha1.StateOk, 5*time.Second)
	WaitGet(t, a.Pod, netip.MustParseAddrPort("192.168.0.12:8800"), 5*time.Second)

	// Deleted MeshServices are unreachable and leave no chain.
	for _, n := range []string{"virtual", "ported", "direct"} {
		must(t, b.Kube.Delete(ctx, msvc(n, v1alpha1.MeshServiceSpec{})))
	}
	waitFor(t, "all MeshService chains to go", 5*time.Second, func() bool {
		nat := pod.Run(t, "iptables-save", "-t", "nat")
		return !strings.Contains(nat, "KUBELINK-MS-") && !strings.Contains(nat, "KUBELINK-EP-") && !strings.Contains(nat, "KUBELINK-SERVICES")
	})
	if _, err := Get(a.Pod, netip.MustParseAddrPort("192.168.0.100:80"), "/", 500*time.Millisecond); err == nil {
		t.Error("192.168.0.100 still answers after its MeshService was deleted")
	}

	// Node mode cannot serve MeshServices, and says so.
	a.Apply(msvc("here", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.110", Endpoints: []v1alpha1.ServiceEndpoint{{Address: a.PodIP.String()}}}))
	ms = a.waitServiceState(t, "here", v1alpha1.StateUnsupported, 5*time.Second)
	if !strings.Contains(ms.Status.Message, "pod mode") {
		t.Errorf("message %q", ms.Status.Message)
	}
}

// The same MeshServices through the TLS bridge: B's broker in pod mode with
// --mode=bridge binds a virtual address and a port of its cluster address;
// A reaches both, and they go with the MeshServices.
func TestMeshServicesBridge(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := NewBridgeCA(t)
	pod, _ := b.BrokerPod()
	a.StartRouter(lab)
	b.StartRouter(lab)
	b.StartRouterOn(lab, b.GW)
	a.StartBroker(lab, a.GW, BridgeFlags(ca.CertDir(t, a))...)
	b.StartBrokerInPod(lab, pod, BridgeFlags(ca.CertDir(t, b))...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	must(t, b.Kube.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: corev1.ServiceSpec{
		ClusterIP: b.ServiceIP.Addr().String(),
		Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}))
	b.Apply(
		msvc("virtual", v1alpha1.MeshServiceSpec{Service: "echo", MeshAddress: "192.168.0.100"}),
		msvc("ported", v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
			Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{{Port: intstr.FromInt32(8800), TargetPort: intstr.FromString("http")}}}}}),
	)
	toB := BridgeLinkTo(b)
	toB.Spec.Egress = []string{"192.168.0.100"}
	a.Apply(a.LocalLink(), toB)
	b.Apply(b.LocalLink(), BridgeLinkTo(a))

	for _, target := range []string{"192.168.0.100:80", "192.168.0.12:8800"} {
		if body, _ := WaitGet(t, a.Pod, netip.MustParseAddrPort(target), 10*time.Second); !strings.Contains(body, "echo b") {
			t.Errorf("%s answered %q", target, body)
		}
	}
	for _, n := range []string{"virtual", "ported"} {
		if ms := b.waitServiceState(t, n, v1alpha1.StateOk, 5*time.Second); ms.Status.Targets == "" {
			t.Errorf("%s: no targets in %+v", n, ms.Status)
		}
	}
	for _, n := range []string{"virtual", "ported"} {
		must(t, b.Kube.Delete(ctx, msvc(n, v1alpha1.MeshServiceSpec{})))
	}
	waitFor(t, "the MeshServices to become unreachable", 5*time.Second, func() bool {
		_, err1 := Get(a.Pod, netip.MustParseAddrPort("192.168.0.100:80"), "/", 500*time.Millisecond)
		_, err2 := Get(a.Pod, netip.MustParseAddrPort("192.168.0.12:8800"), "/", 500*time.Millisecond)
		return err1 != nil && err2 != nil
	})
}
