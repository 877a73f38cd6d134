package clusterlab

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
	"github.com/kubelink/kubelink/lib/wireguard"
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
	standalone := standaloneWireGuard(bm, a.GW, b.GW)
	var mesh, wg, veth []float64
	for range rounds() {
		mesh = append(mesh, iperf(bm, b.Pod, b.PodIP.String(), a.Pod, b.ServiceIP.Addr().String()))
		wg = append(wg, standalone())
		veth = append(veth, iperf(bm, b.GW, b.InetIP.String(), a.GW, b.InetIP.String()))
	}
	meshBps, wgBps, vethBps := median(mesh), median(wg), median(veth)

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

// iperf runs a 5 s TCP test from client to the server in server ns and
// returns the received bits per second.
func iperf(bm *testing.B, server *nstest.Namespace, bind string, client *nstest.Namespace, target string) float64 {
	bm.Helper()
	srv := server.Command("iperf3", "-s", "-1", "-B", bind, "-p", "5201")
	if err := srv.Start(); err != nil {
		bm.Fatalf("iperf3 server (apt install iperf3): %v", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	out, err := client.Command("iperf3", "-c", target, "-p", "5201", "-t", "5", "-J").Output()
	if err != nil {
		bm.Fatalf("iperf3 to %s: %v\n%s", target, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		bm.Fatalf("iperf3 result: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

func rounds() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// standaloneWireGuard runs the wireguard-go command (built from the same
// module version the broker embeds) in both gateways, joins them with a
// tunnel over the same "internet", and returns a function measuring it.
func standaloneWireGuard(bm *testing.B, nsA, nsB *nstest.Namespace) func() float64 {
	bInet := ""
	if out := nsB.Run(bm, "ip", "-4", "-o", "addr", "show", "dev", "inet0"); len(out) > 0 {
		f := strings.Fields(out)
		bInet = strings.Split(f[3], "/")[0]
	}
	bm.Helper()
	bin := filepath.Join(bm.TempDir(), "wireguard-go")
	build := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard")
	if out, err := build.CombinedOutput(); err != nil {
		bm.Fatalf("building wireguard-go: %v\n%s", err, out)
	}
	type end struct {
		ns   *nstest.Namespace
		name string
		ip   string
		key  wgtypes.Key
	}
	ends := []*end{{ns: nsA, ip: "10.77.0.1"}, {ns: nsB, ip: "10.77.0.2"}}
	for _, e := range ends {
		e.name = nstest.UniqueName("sa")
		k, err := wireguard.GeneratePrivateKey()
		if err != nil {
			bm.Fatal(err)
		}
		e.key = wgtypes.Key(k)
		cmd := e.ns.Command(bin, "-f", e.name)
		cmd.Env = append(os.Environ(), "LOG_LEVEL=error")
		if err := cmd.Start(); err != nil {
			bm.Fatal(err)
		}
		bm.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			_ = os.Remove("/var/run/wireguard/" + e.name + ".sock")
		})
	}
	wg, err := wgctrl.New()
	if err != nil {
		bm.Fatal(err)
	}
	defer wg.Close()
	port := 51820
	for i, e := range ends {
		other := ends[1-i]
		var endpoint *net.UDPAddr
		if i == 0 {
			endpoint = &net.UDPAddr{IP: net.ParseIP(bInet), Port: port}
		}
		_, allowed, _ := net.ParseCIDR(other.ip + "/32")
		cfg := wgtypes.Config{PrivateKey: &e.key, ListenPort: &port, ReplacePeers: true, Peers: []wgtypes.PeerConfig{{
			PublicKey: other.key.PublicKey(), Endpoint: endpoint, AllowedIPs: []net.IPNet{*allowed}, ReplaceAllowedIPs: true}}}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if err = wg.ConfigureDevice(e.name, cfg); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			bm.Fatalf("configuring %s: %v", e.name, err)
		}
		e.ns.Run(bm, "ip", "addr", "add", e.ip+"/24", "dev", e.name)
		e.ns.Run(bm, "ip", "link", "set", e.name, "up")
	}
	return func() float64 { return iperf(bm, nsB, "10.77.0.2", nsA, "10.77.0.2") }
}
