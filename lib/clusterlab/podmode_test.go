package clusterlab

import (
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
	if nat := pod.Run(t, "iptables-save", "-t", "nat"); !strings.Contains(nat, "-A KUBELINK-NAT -o eth0 -j MASQUERADE") {
		t.Errorf("pod mode needs the masquerade towards the cluster:\n%s", nat)
	}
}
