package bridge

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/kubelink/kubelink/lib/nstest"
)

// BenchmarkBridge measures, in one run on the same two namespaces: TCP
// throughput through the bridge (tun + pumps + mutual TLS), through a
// standalone wireguard-go tunnel, and over the plain veth, plus
// request/response round trips through the bridge and the veth. It prints
// BENCH and RATIO lines; run it with make bench.
func BenchmarkBridge(bm *testing.B) {
	if bm.N > 1 {
		bm.Skip("one measured run is enough; use -benchtime 1x")
	}
	nstest.RequireRoot(bm)
	ca := newTestCA(bm)
	a, b := newEnd(bm, "a", "b", 1), newEnd(bm, "b", "a", 2)
	a.cert, b.cert = ca.issue(bm, "a.kubelink.test"), ca.issue(bm, "b.kubelink.test")
	nstest.Veth(bm, a.ns, "eth0", netip.PrefixFrom(a.underlay, 24).String(), b.ns, "eth0", netip.PrefixFrom(b.underlay, 24).String())
	a.open(bm)
	b.open(bm)
	connect(bm, ca, a, b)
	wireguard, _ := nstest.StandaloneWireGuard(bm, a.ns, b.ns, b.underlay.String())

	bridgeIP, vethIP := b.cluster4.Addr().String(), b.underlay.String()
	var br, wg, veth []float64
	for range nstest.Rounds() {
		br = append(br, nstest.Iperf(bm, b.ns, bridgeIP, a.ns, bridgeIP))
		wg = append(wg, wireguard())
		veth = append(veth, nstest.Iperf(bm, b.ns, vethIP, a.ns, vethIP))
	}
	brBps, wgBps, vethBps := nstest.Median(br), nstest.Median(wg), nstest.Median(veth)
	brRTT := nstest.RTT(bm, b.ns, bridgeIP, a.ns, bridgeIP, 2000)
	vethRTT := nstest.RTT(bm, b.ns, vethIP, a.ns, vethIP, 2000)

	fmt.Printf("BENCH bridge_throughput %s\n", nstest.Mbit(brBps))
	fmt.Printf("BENCH bridge_wireguard_go_throughput %s\n", nstest.Mbit(wgBps))
	fmt.Printf("BENCH bridge_veth_throughput %s\n", nstest.Mbit(vethBps))
	fmt.Printf("BENCH bridge_rtt_us %.1f us\n", float64(brRTT.Nanoseconds())/1e3)
	fmt.Printf("BENCH veth_rtt_us %.1f us\n", float64(vethRTT.Nanoseconds())/1e3)
	fmt.Printf("RATIO bridge_vs_wireguard_go %.3f\n", brBps/wgBps)
	fmt.Printf("RATIO bridge_vs_veth %.3f\n", brBps/vethBps)
}
