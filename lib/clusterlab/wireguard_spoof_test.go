package clusterlab

import (
	"fmt"
	"net"
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
	// Untracked, so that B's SNAT leaves the spoofed source alone.
	b.GW.Run(t, "ip", "addr", "add", spoofed.String()+"/32", "dev", "lo")
	b.GW.Run(t, "iptables", "-t", "raw", "-A", "OUTPUT", "-s", spoofed.String(), "-j", "NOTRACK")
	var pc net.PacketConn
	target := netip.AddrPortFrom(a.MeshAddress.Addr(), 7777)
	must(t, a.GW.Do(func() (err error) { pc, err = net.ListenPacket("udp4", target.String()); return }))
	defer pc.Close()
	const n = 20
	for i := range n {
		b.GW.SendRawUDP(t, spoofed, target, fmt.Sprintf("spoofed %d", i))
	}
	b.GW.SendRawUDP(t, b.MeshAddress.Addr(), target, "control")
	var got []string
	buf := make([]byte, 2048)
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:k]))
		if string(buf[:k]) == "control" {
			break
		}
	}
	if len(got) != 1 || got[0] != "control" {
		t.Fatalf("A received %q; want only the control datagram (0 of %d spoofed delivered)", got, n)
	}
	t.Logf("0 of %d datagrams from member c's address delivered through B's tunnel; the control was", n)
}
