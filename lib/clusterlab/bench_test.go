package clusterlab

import (
	"fmt"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
)

// BenchmarkWireGuardMesh measures, in one run on the same namespaces:
// TCP throughput pod -> remote ClusterIP through the mesh, standalone
// wireguard-go between the two gateways, and the plain veth path between
// them; plus how long a link takes to come up and to be detected Down.
// It prints BENCH and RATIO lines (docs/benchmarks.md); run it with make bench.
func BenchmarkWireGuardMesh(bm *testing.B) {
	if bm.N > 1 {
		bm.Skip("one measured run is enough; use -benchtime 1x")
	}
	lab := New(bm, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	bBroker := b.StartBroker(lab, b.GW)

	applied := time.Now()
	Connect(a, b)
	for {
		if _, err := Get(a.Pod, b.ServiceIP, "/", 200*time.Millisecond); err == nil {
			break
		}
		if time.Since(applied) > 20*time.Second {
			bm.Fatal("the mesh did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	linkUp := time.Since(applied)

	// The three paths are measured in turn, several rounds, and the medians
	// compared: on two shared cores one sample varies by about 10%.
	standalone, _ := nstest.StandaloneWireGuard(bm, a.GW, b.GW, b.InetIP.String())
	var mesh, wg, veth []float64
	for range nstest.Rounds() {
		mesh = append(mesh, nstest.Iperf(bm, b.Pod, b.PodIP.String(), a.Pod, b.ServiceIP.Addr().String()))
		wg = append(wg, standalone())
		veth = append(veth, nstest.Iperf(bm, b.GW, b.InetIP.String(), a.GW, b.InetIP.String()))
	}
	meshBps, wgBps, vethBps := nstest.Median(mesh), nstest.Median(wg), nstest.Median(veth)

	bBroker.Kill()
	killed := time.Now()
	for {
		if kl, err := a.Link("b"); err == nil && kl.Status.State == v1alpha1.StateDown {
			break
		}
		if time.Since(killed) > 20*time.Second {
			bm.Fatal("Down not detected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	downDetect := time.Since(killed)

	fmt.Printf("BENCH wg_mesh_throughput %.0f Mbit/s\n", meshBps/1e6)
	fmt.Printf("BENCH wireguard_go_throughput %.0f Mbit/s\n", wgBps/1e6)
	fmt.Printf("BENCH veth_throughput %.0f Mbit/s\n", vethBps/1e6)
	fmt.Printf("BENCH link_up_seconds %.3f s\n", linkUp.Seconds())
	fmt.Printf("BENCH down_detect_seconds %.3f s\n", downDetect.Seconds())
	fmt.Printf("RATIO wg_mesh_vs_wireguard_go %.3f\n", meshBps/wgBps)
	fmt.Printf("RATIO wg_mesh_vs_veth %.3f\n", meshBps/vethBps)
}
