package wireguard

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// tunnelEnd is one cluster of the tunnel test: a namespace with a veth
// towards the other and a WireGuard device.
type tunnelEnd struct {
	ns       *nstest.Namespace
	name     string
	priv     mesh.Key
	port     int
	underlay string // veth address
	inner    string // tunnel address
	dev      *Device
}

func (e *tunnelEnd) open(t *testing.T, log *slog.Logger) {
	t.Helper()
	err := e.ns.Do(func() error {
		d, err := Open(Options{Name: e.name, Mode: ModeAuto, ListenPort: e.port, Logger: log})
		e.dev = d
		return err
	})
	if err != nil {
		t.Fatalf("open WireGuard in %s: %v", e.ns.Name, err)
	}
	dev := e.dev
	t.Cleanup(func() { _ = dev.Close() })
	// replace: a reopened kernel device still has its address.
	e.ns.Run(t, "ip", "addr", "replace", e.inner+"/24", "dev", e.name)
	e.ns.Run(t, "ip", "link", "set", e.name, "up")
}

// openNew gives the end a unique device name and a new key and opens it.
func (e *tunnelEnd) openNew(t *testing.T, log *slog.Logger) {
	t.Helper()
	// Socket names are global (/var/run/wireguard): unique per process.
	e.name = nstest.UniqueName("wg")
	var err error
	if e.priv, err = GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	e.open(t, log)
}

// asPeer is how the other end sees this one.
func (e *tunnelEnd) asPeer() ResolvedPeer {
	return ResolvedPeer{
		Peer: mesh.Peer{
			PublicKey:  PublicKey(e.priv),
			Endpoint:   mesh.Endpoint{Kind: mesh.EndpointHost, Host: e.underlay, Port: uint16(e.port)},
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix(e.inner + "/32")},
			// Makes a (re)started end handshake at once instead of on demand.
			Keepalive: 5 * time.Second,
		},
		Addr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(e.underlay), uint16(e.port))),
	}
}

func (e *tunnelEnd) apply(t *testing.T, peers ...ResolvedPeer) {
	t.Helper()
	if err := e.dev.Apply(e.priv, e.port, peers); err != nil {
		t.Fatalf("apply on %s: %v", e.name, err)
	}
}

func TestTunnelBetweenNamespaces(t *testing.T) {
	nstest.RequireRoot(t)
	a := &tunnelEnd{ns: nstest.New(t, "a"), port: 51820, underlay: "10.77.0.1", inner: "192.168.77.1"}
	b := &tunnelEnd{ns: nstest.New(t, "b"), port: 51821, underlay: "10.77.0.2", inner: "192.168.77.2"}
	// Registered before the devices, so it runs after they closed.
	t.Cleanup(func() { assertNothingLeft(t, a.name, b.name) })
	log := testLogger(t)
	nstest.Veth(t, a.ns, "eth0", a.underlay+"/24", b.ns, "eth0", b.underlay+"/24")
	a.openNew(t, log)
	b.openNew(t, log)
	for _, e := range []*tunnelEnd{a, b} {
		if e.dev.Kind() != expectedKind() {
			t.Errorf("auto mode picked %s for %s, want %s on this kernel (fallback reason: %s)", e.dev.Kind(), e.name, expectedKind(), e.dev.FallbackReason())
		}
	}
	if !kernelHasWireGuard() {
		if a.dev.Kind() != KindUserspace || !strings.Contains(a.dev.FallbackReason(), "not supported") {
			t.Errorf("auto mode without the kernel module: kind %q, reason %q; want %s with the reason", a.dev.Kind(), a.dev.FallbackReason(), KindUserspace)
		}
	}
	t.Logf("device kind %s (fallback reason: %s)", a.dev.Kind(), a.dev.FallbackReason())
	a.apply(t, b.asPeer())
	b.apply(t, a.asPeer())
	srv := startSink(t, b.ns)

	start := time.Now()
	if err := sendAndVerify(a.ns, b.inner, srv, 1<<20, 15*time.Second); err != nil {
		dumpTunnelState(t, a, b)
		t.Fatalf("1 MiB through the tunnel: %v", err)
	}
	elapsed := time.Since(start)
	t.Logf("1 MiB through the tunnel (with handshake) in %v: %.1f MiB/s", elapsed, 1/elapsed.Seconds())

	t.Run("sockets live in the device's namespace", func(t *testing.T) {
		for _, e := range []*tunnelEnd{a, b} {
			port, err := e.dev.ListenPort()
			if err != nil || port != e.port {
				t.Errorf("%s: ListenPort = %d, %v; want %d", e.name, port, err, e.port)
			}
			if out := e.ns.Run(t, "ss", "-Hlun", "sport = :"+strconv.Itoa(e.port)); strings.TrimSpace(out) == "" {
				t.Errorf("%s: nothing listens on UDP %d inside %s", e.name, e.port, e.ns.Name)
			}
		}
		if out := nstest.Run(t, "ss", "-Hlun", fmt.Sprintf("( sport = :%d or sport = :%d )", a.port, b.port)); strings.TrimSpace(out) != "" {
			t.Errorf("WireGuard sockets leaked into the root namespace:\n%s", out)
		}
	})
	t.Run("stats show the session", func(t *testing.T) {
		stats, err := a.dev.Stats()
		if err != nil {
			t.Fatal(err)
		}
		s, ok := stats[PublicKey(b.priv)]
		if !ok || len(stats) != 1 {
			t.Fatalf("stats %+v, want exactly peer b", stats)
		}
		if time.Since(s.LastHandshake) > time.Minute || s.RxBytes <= 0 || s.TxBytes < 1<<20 {
			t.Errorf("stats %+v: want a recent handshake, rx > 0 and tx >= 1 MiB", s)
		}
		if want := netip.MustParseAddrPort(b.underlay + ":" + strconv.Itoa(b.port)); s.Endpoint != want {
			t.Errorf("endpoint %v, want %v", s.Endpoint, want)
		}
	})
	t.Run("a peer with a session is not sessionless", func(t *testing.T) {
		// The embedded device checks every stagedTrimEvery; the prober
		// probes a sessionless peer only once per handshake attempt.
		deadline := time.Now().Add(10 * stagedTrimEvery)
		for a.dev.Sessionless(PublicKey(b.priv)) {
			if time.Now().After(deadline) {
				t.Fatalf("peer b still sessionless %s after the tunnel carried 1 MiB", 10*stagedTrimEvery)
			}
			time.Sleep(stagedTrimEvery / 5)
		}
	})
	t.Run("wgctrl and wg see the device", func(t *testing.T) {
		assertVisibleToWireGuardTools(t, a, b)
	})
	t.Run("unchanged peers are not reconfigured", func(t *testing.T) {
		counter := countConfigures(a.dev)
		a.apply(t, b.asPeer())
		if counter.n.Load() != 0 {
			t.Errorf("re-applying the same peer sent %d configurations, want none", counter.n.Load())
		}
		keepalive := b.asPeer()
		keepalive.Keepalive = 7 * time.Second
		a.apply(t, keepalive)
		if counter.n.Load() != 1 {
			t.Errorf("changing the keepalive sent %d configurations, want 1", counter.n.Load())
		}
		a.apply(t, b.asPeer())
	})
	t.Run("removing the peer stops traffic", func(t *testing.T) {
		a.apply(t)
		if stats, err := a.dev.Stats(); err != nil || len(stats) != 0 {
			t.Errorf("stats after removal %v, %v; want no peers", stats, err)
		}
		if err := sendAndVerify(a.ns, b.inner, srv, 1024, 2*time.Second); err == nil {
			t.Error("traffic still flows without the peer")
		}
		a.apply(t, b.asPeer())
		if err := retry(10*time.Second, func() error { return sendAndVerify(a.ns, b.inner, srv, 64<<10, 3*time.Second) }); err != nil {
			t.Errorf("traffic does not resume after re-adding the peer: %v", err)
		}
	})
	t.Run("a restarted end is reached again after re-apply", func(t *testing.T) {
		kind := b.dev.Kind()
		if err := b.dev.Close(); err != nil {
			t.Fatalf("close b: %v", err)
		}
		if _, err := os.Stat(socketPath(b.name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("UAPI socket of b still there after Close: %v", err)
		}
		out, err := b.ns.Command("ip", "link", "show", b.name).CombinedOutput()
		switch {
		case kind == KindUserspace && err == nil:
			t.Errorf("tun of b still there after Close:\n%s", out)
		case kind == KindKernel && err != nil:
			// The kernel device outlives the process, with its peers, so
			// that a restarted broker does not interrupt traffic.
			t.Errorf("kernel device of b gone after Close: %v\n%s", err, out)
		case kind == KindKernel:
			if err := sendAndVerify(a.ns, b.inner, srv, 64<<10, 5*time.Second); err != nil {
				t.Errorf("traffic through b's kernel device stopped when its process closed it: %v", err)
			}
		}
		b.open(t, log)
		if b.dev.Kind() != kind {
			t.Errorf("reopened b is %s, was %s", b.dev.Kind(), kind)
		}
		b.apply(t, a.asPeer())
		a.apply(t, b.asPeer())
		if err := retry(20*time.Second, func() error { return sendAndVerify(a.ns, b.inner, srv, 256<<10, 3*time.Second) }); err != nil {
			t.Fatalf("a does not reach the restarted b: %v", err)
		}
	})
}

// configureCounter counts configurations sent to a device.
type configureCounter struct {
	wgClient
	n atomic.Int32
}

func (c *configureCounter) ConfigureDevice(name string, cfg wgtypes.Config) error {
	c.n.Add(1)
	return c.wgClient.ConfigureDevice(name, cfg)
}

func countConfigures(d *Device) *configureCounter {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &configureCounter{wgClient: d.client}
	d.client = c
	return c
}

// assertVisibleToWireGuardTools reads a's device with a client of its own
// and with wg, both from inside a's namespace: a kernel device is reached by
// genetlink in its namespace, a wireguard-go one by its UAPI socket.
func assertVisibleToWireGuardTools(t *testing.T, a, b *tunnelEnd) {
	var d *wgtypes.Device
	if err := a.ns.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		d, err = c.Device(a.name)
		return err
	}); err != nil {
		t.Fatalf("wgctrl does not find %s in %s: %v", a.name, a.ns.Name, err)
	}
	want := map[string]wgtypes.DeviceType{KindUserspace: wgtypes.Userspace, KindKernel: wgtypes.LinuxKernel}[a.dev.Kind()]
	if d.Type != want {
		t.Errorf("wgctrl reports type %v for a %s device, want %v", d.Type, a.dev.Kind(), want)
	}
	if mesh.Key(d.PublicKey) != PublicKey(a.priv) || len(d.Peers) != 1 || mesh.Key(d.Peers[0].PublicKey) != PublicKey(b.priv) {
		t.Errorf("wgctrl sees key %s and peers %v", d.PublicKey, d.Peers)
	}
	if pub, err := a.dev.PublicKey(); err != nil || pub != PublicKey(a.priv) {
		t.Errorf("Device.PublicKey = %s, %v; want %s", pub, err, PublicKey(a.priv))
	}
	wg, err := exec.LookPath("wg")
	if err != nil {
		t.Logf("wg (wireguard-tools) not installed; checked with wgctrl only")
		return
	}
	out, err := a.ns.Command(wg, "show", a.name, "peers").CombinedOutput()
	if err != nil || !strings.Contains(string(out), PublicKey(b.priv).String()) {
		t.Errorf("wg show %s peers: %v\n%s", a.name, err, out)
	}
}

// sink accepts TCP connections in a namespace, reads everything and answers
// with the SHA-256 of what it got.
type sink struct{ port int }

func startSink(t *testing.T, ns *nstest.Namespace) sink {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		acceptSink(l, &wg)
	}()
	return sink{port: l.Addr().(*net.TCPAddr).Port}
}

func acceptSink(l net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			h := sha256.New()
			if _, err := io.Copy(h, c); err == nil {
				_, _ = c.Write(h.Sum(nil))
			}
		}()
	}
}

// sendAndVerify sends n random bytes from ns to the sink at host and checks
// the digest it returns, all within timeout.
func sendAndVerify(ns *nstest.Namespace, host string, s sink, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var c net.Conn
	if err := ns.Do(func() (err error) {
		d := net.Dialer{Deadline: deadline}
		for {
			c, err = d.Dial("tcp4", net.JoinHostPort(host, strconv.Itoa(s.port)))
			// A kernel device answers a packet for which it has no peer
			// yet (a peer held back for its first handshake, crossing.go)
			// with "no route to host" at once, where wireguard-go drops
			// it and TCP retransmits its SYN: dial again, as the
			// retransmission would, until the deadline.
			if !errors.Is(err, syscall.EHOSTUNREACH) || time.Until(deadline) < 100*time.Millisecond {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}); err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	data := make([]byte, n)
	_, _ = rand.Read(data)
	if _, err := c.Write(data); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("close send side: %w", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read digest: %w", err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		return fmt.Errorf("digest %x, want %x", got, want)
	}
	return nil
}

// dumpTunnelState logs what tells a lost handshake from a misplaced socket:
// each device's view of its peer and where the UDP sockets are.
func dumpTunnelState(t *testing.T, ends ...*tunnelEnd) {
	t.Helper()
	for _, e := range ends {
		stats, err := e.dev.Stats()
		t.Logf("%s in %s: stats %+v, %v", e.name, e.ns.Name, stats, err)
		out, _ := e.ns.Command("ss", "-uanp").CombinedOutput()
		t.Logf("UDP sockets in %s:\n%s", e.ns.Name, out)
		out, _ = e.ns.Command("ip", "-s", "link", "show").CombinedOutput()
		t.Logf("links in %s:\n%s", e.ns.Name, out)
	}
	out, _ := exec.Command("ss", "-uanp").CombinedOutput()
	t.Logf("UDP sockets in the root namespace:\n%s", out)
}

func retry(total time.Duration, fn func() error) error {
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func socketPath(name string) string { return "/var/run/wireguard/" + name + ".sock" }

// assertNothingLeft checks that closed devices left no socket and no
// interface in the root namespace.
func assertNothingLeft(t *testing.T, names ...string) {
	for _, name := range names {
		if name == "" {
			continue
		}
		if _, err := os.Stat(socketPath(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind: %v", socketPath(name), err)
		}
		if out, err := exec.Command("ip", "link", "show", name).CombinedOutput(); err == nil {
			t.Errorf("interface %s left in the root namespace:\n%s", name, out)
		}
	}
}

// testLogger shows wireguard-go's errors in the test log and stops writing
// once the test is over (its goroutines may still be winding down).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
