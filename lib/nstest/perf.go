package nstest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Measurement helpers shared by the benchmarks (make bench): every figure of
// one run is taken the same way, so their ratios mean something.

// Iperf runs a 5 s, one-stream TCP test from client to an iperf3 server
// bound to bind in server, and returns the received bits per second.
func Iperf(tb testing.TB, server *Namespace, bind string, client *Namespace, target string) float64 {
	tb.Helper()
	srv := server.Command("iperf3", "-s", "-1", "-B", bind, "-p", "5201")
	if err := srv.Start(); err != nil {
		tb.Fatalf("iperf3 server (apt install iperf3): %v", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	out, err := client.Command("iperf3", "-c", target, "-p", "5201", "-t", "5", "-J").Output()
	if err != nil {
		tb.Fatalf("iperf3 to %s: %v\n%s", target, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		tb.Fatalf("iperf3 result: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

// RTT measures the mean round trip of 1-byte TCP request/response exchanges
// from client to server's address (like qperf's tcp_lat, times two).
func RTT(tb testing.TB, server *Namespace, bind string, client *Namespace, target string, n int) time.Duration {
	tb.Helper()
	var ln net.Listener
	if err := server.Do(func() (err error) { ln, err = net.Listen("tcp", net.JoinHostPort(bind, "0")); return }); err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var conn net.Conn
	if err := client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(target, port), 5*time.Second)
		return
	}); err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetNoDelay(true)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	b := []byte{1}
	start := time.Now()
	for range n {
		if _, err := conn.Write(b); err != nil {
			tb.Fatal(err)
		}
		if _, err := conn.Read(b); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(n)
}

// Rounds is how many times each throughput is measured ($BENCH_ROUNDS, 3).
func Rounds() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// Median of a non-empty sample.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// StandaloneWireGuard runs the wireguard-go command (built from the module
// version kubelink embeds) in a and b, joins them with a tunnel whose outer
// packets go to bUnderlay, and returns a function measuring it with Iperf and
// the tunnel address of b.
func StandaloneWireGuard(tb testing.TB, a, b *Namespace, bUnderlay string) (measure func() float64, bTunnel string) {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "wireguard-go")
	if out, err := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard").CombinedOutput(); err != nil {
		tb.Fatalf("building wireguard-go: %v\n%s", err, out)
	}
	type end struct {
		ns   *Namespace
		name string
		ip   string
		key  wgtypes.Key
	}
	ends := []*end{{ns: a, ip: "10.77.0.1"}, {ns: b, ip: "10.77.0.2"}}
	for _, e := range ends {
		e.name = UniqueName("sa")
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		e.key = k
		cmd := e.ns.Command(bin, "-f", e.name)
		cmd.Env = append(os.Environ(), "LOG_LEVEL=error")
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			_ = os.Remove("/var/run/wireguard/" + e.name + ".sock")
		})
	}
	wg, err := wgctrl.New()
	if err != nil {
		tb.Fatal(err)
	}
	defer wg.Close()
	port := 51820
	for i, e := range ends {
		other := ends[1-i]
		var endpoint *net.UDPAddr
		if i == 0 {
			endpoint = &net.UDPAddr{IP: net.ParseIP(bUnderlay), Port: port}
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
			tb.Fatalf("configuring %s: %v", e.name, err)
		}
		e.ns.Run(tb, "ip", "addr", "add", e.ip+"/24", "dev", e.name)
		e.ns.Run(tb, "ip", "link", "set", e.name, "up")
	}
	return func() float64 { return Iperf(tb, b, "10.77.0.2", a, "10.77.0.2") }, "10.77.0.2"
}

// Mbit formats bits per second for BENCH lines.
func Mbit(bps float64) string { return fmt.Sprintf("%.0f Mbit/s", bps/1e6) }
