package clusterlab

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// WireGuard plane: B may send only from what its link owns. B's gateway
// injects UDP to A's cluster address from the cluster address of another
// member of A's mesh (C, whose link in A exists but whose peer is gone),
// then from its own as the control. A's device drops every spoofed datagram
// (the source belongs to C's AllowedIPs, not B's) and delivers the control.
// The drop happens inside the WireGuard device, which counts nothing per
// peer; the bridge plane counts it (TestBridgeAntiSpoofingAndIngress).
func TestWireGuardDropsSourcesOfAnotherMember(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	// Member c of A's mesh: 192.168.0.13, services 100.64.32.0/20, its
	// endpoint an address of the lab's internet where nobody listens.
	cKey := b.PublicKey() // any valid key: no handshake is ever completed
	cKey[0] ^= 1
	a.Apply(&v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: "192.168.0.13/24", CIDR: "100.64.32.0/20", Endpoint: "172.30.0.99:8777", PublicKey: cKey.String()}})
	WaitGet(t, b.Pod, a.ServiceIP, 10*time.Second)
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)

	spoofed := netip.MustParseAddr("192.168.0.13")
	const n = 20
	if got := injectSpoofed(t, b, a, spoofed, netip.AddrPortFrom(a.MeshAddress.Addr(), 7777), n); len(got) != 1 || got[0] != "control" {
		t.Fatalf("A received %q; want only the control datagram (0 of %d spoofed delivered)", got, n)
	}
	t.Logf("0 of %d datagrams from member c's address delivered through B's tunnel; the control was", n)
}
