package clusterlab

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// A link without ingress gives the peer only what the mesh exports: B
// reaches A's services and A's cluster address, but not A's API server
// (the kubernetes Service, service CIDR + 1), which sits inside the routed
// service CIDR and is denied by the secure default — in both data planes.
// Allowing it explicitly opens it, so the drop is the policy, not routing.
func TestDefaultIngressWireGuard(t *testing.T) { defaultIngress(t, false) }

// TestDefaultIngressWireGuard with the TLS bridge (the policy in user space).
func TestDefaultIngressBridge(t *testing.T) { defaultIngress(t, true) }

func defaultIngress(t *testing.T, bridge bool) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	api := mesh.ServiceIP(a.ServiceCIDR, 1)
	// A stand-in for A's API server behind its kubernetes Service.
	for _, ns := range []*nstest.Namespace{a.GW, a.Node} {
		ns.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", api.String(), "-p", "tcp", "--dport", "443", "-j", "DNAT", "--to-destination", a.PodIP.String()+":8080")
	}
	a.StartRouter(lab)
	b.StartRouter(lab)
	if bridge {
		ca := NewBridgeCA(t)
		a.StartBroker(lab, a.GW, BridgeFlags(ca.CertDir(t, a))...)
		b.StartBroker(lab, b.GW, BridgeFlags(ca.CertDir(t, b))...)
		a.Apply(a.LocalLink(), BridgeLinkTo(b))
		b.Apply(b.LocalLink(), BridgeLinkTo(a))
	} else {
		a.StartBroker(lab, a.GW)
		b.StartBroker(lab, b.GW)
		Connect(a, b)
	}
	WaitGet(t, b.Pod, a.ServiceIP, 10*time.Second)
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)

	apiAddr := fmt.Sprintf("%s:443", api)
	// A's cluster address is on its gateway node (node mode) and closed to
	// B but for the probe and MeshService ports: a kubelet listening on all
	// addresses of the node is not reached, nor is port 80 (no listener:
	// dropped, not refused).
	kubelet, err := serveHTTP(a.GW, netip.MustParseAddrPort("0.0.0.0:10250"), "kubelet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kubelet.Close() })
	local80 := a.MeshAddress.Addr().String() + ":80"
	localKubelet := a.MeshAddress.Addr().String() + ":10250"
	for addr, want := range map[string]string{a.ServiceIP.String(): "ok", local80: "dropped", localKubelet: "dropped", apiAddr: "dropped"} {
		if got := dialResult(b.Pod, addr); got != want {
			t.Errorf("without ingress, B -> %s: %s, want %s", addr, got, want)
		}
	}
	// The drops at the cluster address are counted.
	WaitMetric(t, a.GW, "kubelink_cluster_address_dropped_packets", 3*time.Second, func(v float64) bool { return v >= 2 })
	// Control: an explicit allow list that covers the API server lets B
	// in, so the drop above was the default policy, not a missing route.
	updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) {
		kl.Spec.Ingress = []string{a.ServiceCIDR.String(), a.MeshAddress.Addr().String() + "/32"}
	})
	waitFor(t, "B to reach A's API server once allowed", 5*time.Second, func() bool { return dialResult(b.Pod, apiAddr) == "ok" })
	if got := dialResult(b.Pod, a.ServiceIP.String()); got != "ok" {
		t.Errorf("with ingress, B -> %s: %s, want ok", a.ServiceIP, got)
	}
	// The allow list names the cluster address: an operator opened it, so
	// B reaches it (refused: no listener, but not dropped).
	// The cluster address's rule is the kernel's and may be written a
	// moment after the per-link rule (the bridge's is in user space).
	waitFor(t, "B to reach A's cluster address once the allow list names it", 5*time.Second, func() bool {
		return dialResult(b.Pod, local80) == "refused" // reached: no listener on 80
	})
	if got := dialResult(b.Pod, localKubelet); got != "ok" {
		t.Errorf("with the cluster address allowed, B -> the node's kubelet %s: %s, want ok (the control: the drop was the rule)", localKubelet, got)
	}
}
