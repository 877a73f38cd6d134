package clusterlab

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// A broker in pod mode: the device lives in the broker pod; the broker
// publishes node and pod IP; the router of the gateway node routes the mesh
// to the pod, the other nodes route to the gateway node.
func TestPodModeBroker(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	pod, podIP := a.BrokerPod()
	a.StartRouter(lab)
	a.StartRouterOn(lab, a.GW)
	b.StartRouter(lab)
	a.StartBrokerInPod(lab, pod)
	b.StartBroker(lab, b.GW)
	Connect(a, b)

	if body, _ := WaitGet(t, a.Pod, b.ServiceIP, 8*time.Second); !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q", body)
	}
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
	_, local := a.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	if local.Status.Gateway != a.GWIP.String() || local.Status.GatewayPod != podIP.String() {
		t.Errorf("gateway %q / pod %q, want %s / %s", local.Status.Gateway, local.Status.GatewayPod, a.GWIP, podIP)
	}
	if routes := a.GW.Run(t, "ip", "route"); !strings.Contains(routes, "100.64.16.0/20 via "+podIP.String()+" dev vbroker") {
		t.Errorf("the gateway node does not route to the broker pod:\n%s", routes)
	}
	// Forwarding came from the broker, per device: the pod's namespace-wide
	// setting stays off (BrokerPod).
	// Every device of the pod but lo forwards (eth0 and the mesh device,
	// whose name the lab makes unique); "all" (ip_forward) and "default"
	// stay 0.
	devices := 0
	for _, l := range strings.Fields(pod.Run(t, "sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/forwarding")) {
		path, val, _ := strings.Cut(l, ":")
		dev := strings.TrimSuffix(strings.TrimPrefix(path, "/proc/sys/net/ipv4/conf/"), "/forwarding")
		want := "1"
		switch dev {
		case "all", "default", "lo":
			want = "0"
		default:
			devices++
		}
		if val != want {
			t.Errorf("in the broker pod, net.ipv4.conf.%s.forwarding = %s, want %s", dev, val, want)
		}
	}
	if devices < 2 {
		t.Errorf("the broker pod has %d devices besides lo, want eth0 and the mesh device", devices)
	}
	if nat := pod.Run(t, "iptables-save", "-t", "nat"); !strings.Contains(nat, "-A KUBELINK-NAT -o eth0 -j MASQUERADE") {
		t.Errorf("pod mode needs the masquerade towards the cluster:\n%s", nat)
	}
	// The cluster address is on the broker pod: a socket of the pod on
	// every address (a metrics port) is not the mesh's, and B's
	// connections to it are dropped.
	ln, err := serveHTTP(pod, netip.MustParseAddrPort("0.0.0.0:8080"), "broker pod metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	if got := dialResult(b.Pod, "192.168.0.11:8080"); got != "dropped" {
		t.Errorf("B -> the broker pod's port 8080 on A's cluster address: %s, want dropped", got)
	}
	// Control: an allow list naming the address opens it, so the drop was
	// the rule, not a missing route.
	updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) {
		kl.Spec.Ingress = []string{a.ServiceCIDR.String(), "192.168.0.11/32"}
	})
	waitFor(t, "B to reach the pod's port once the address is allowed", 5*time.Second, func() bool {
		return dialResult(b.Pod, "192.168.0.11:8080") == "ok"
	})
}
