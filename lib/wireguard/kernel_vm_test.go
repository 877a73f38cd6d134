//go:build kernelwg

// The kernel WireGuard device, end to end. This machine's kernel has no
// WireGuard module, so these tests are built with -tags kernelwg and run by
// `make test-kernel` inside a VM that boots a Debian kernel which has it
// (e2e/kernelvm). They fail, never skip, where the module is missing.

package wireguard

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

func requireKernelWireGuard(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	if !kernelHasWireGuard() {
		t.Fatal("this test needs a kernel with the wireguard module (/sys/module/wireguard); run it with `make test-kernel`, which boots one in a VM")
	}
}

// readDevice reads a device with a wgctrl client opened inside ns, as an
// operator's `wg show` would: independent of the Device under test.
func readDevice(t *testing.T, ns *nstest.Namespace, name string) *wgtypes.Device {
	t.Helper()
	var d *wgtypes.Device
	if err := ns.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		d, err = c.Device(name)
		return err
	}); err != nil {
		t.Fatalf("read %s in %s: %v", name, ns.Name, err)
	}
	return d
}

// configureBehindOurBack changes a device the way another tool (or an admin
// with `wg set`) would.
func configureBehindOurBack(t *testing.T, ns *nstest.Namespace, name string, cfg wgtypes.Config) {
	t.Helper()
	if err := ns.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.ConfigureDevice(name, cfg)
	}); err != nil {
		t.Fatalf("configure %s in %s: %v", name, ns.Name, err)
	}
}

// assertConfigured compares what the kernel holds with what was applied:
// key, port and each peer's key, endpoint, allowed IPs and keepalive.
func assertConfigured(t *testing.T, e *tunnelEnd, peers ...ResolvedPeer) {
	t.Helper()
	d := readDevice(t, e.ns, e.name)
	if d.Type != wgtypes.LinuxKernel {
		t.Errorf("%s: type %v, want the kernel's", e.name, d.Type)
	}
	if mesh.Key(d.PrivateKey) != e.priv || d.ListenPort != e.port {
		t.Errorf("%s: key %s port %d, want %s port %d", e.name, mesh.Key(d.PublicKey), d.ListenPort, PublicKey(e.priv), e.port)
	}
	if len(d.Peers) != len(peers) {
		t.Fatalf("%s: %d peers, want %d: %+v", e.name, len(d.Peers), len(peers), d.Peers)
	}
	for _, want := range peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return mesh.Key(p.PublicKey) == want.PublicKey })
		if i < 0 {
			t.Errorf("%s: peer %s missing", e.name, want.PublicKey)
			continue
		}
		got := d.Peers[i]
		if got.Endpoint == nil || addrPort(got.Endpoint) != addrPort(want.Addr) {
			t.Errorf("%s: peer %s endpoint %v, want %v", e.name, want.PublicKey, got.Endpoint, want.Addr)
		}
		wantIPs := slices.Clone(want.AllowedIPs)
		slices.SortFunc(wantIPs, netip.Prefix.Compare)
		gotIPs := prefixSet(got.AllowedIPs)
		slices.SortFunc(gotIPs, netip.Prefix.Compare)
		if !slices.Equal(gotIPs, wantIPs) {
			t.Errorf("%s: peer %s allowed IPs %v, want %v", e.name, want.PublicKey, gotIPs, want.AllowedIPs)
		}
		if got.PersistentKeepaliveInterval != want.Keepalive {
			t.Errorf("%s: peer %s keepalive %v, want %v", e.name, want.PublicKey, got.PersistentKeepaliveInterval, want.Keepalive)
		}
	}
}

// TestKernelDeviceEndToEnd walks the kernel device through what a broker
// does with it: auto mode picks the kernel, the interface is created by
// netlink, Apply configures it (read back independently), drift made by
// another tool is repaired, traffic flows between two namespaces and goes
// on while no process holds the device, a reopen reuses it, and Delete
// removes it.
func TestKernelDeviceEndToEnd(t *testing.T) {
	requireKernelWireGuard(t)
	a := &tunnelEnd{ns: nstest.New(t, "ka"), port: 51850, underlay: "10.80.0.1", inner: "192.168.80.1"}
	b := &tunnelEnd{ns: nstest.New(t, "kb"), port: 51851, underlay: "10.80.0.2", inner: "192.168.80.2"}
	log := testLogger(t)
	nstest.Veth(t, a.ns, "eth0", a.underlay+"/24", b.ns, "eth0", b.underlay+"/24")
	a.openNew(t, log)
	b.openNew(t, log)

	for _, e := range []*tunnelEnd{a, b} {
		if e.dev.Kind() != KindKernel || e.dev.FallbackReason() != "" {
			t.Fatalf("auto mode on a kernel with WireGuard: kind %s (fallback reason %q), want %s", e.dev.Kind(), e.dev.FallbackReason(), KindKernel)
		}
		var l netlink.Link
		if err := e.ns.Do(func() (err error) { l, err = netlink.LinkByName(e.name); return err }); err != nil {
			t.Fatalf("%s: no interface in %s: %v", e.name, e.ns.Name, err)
		}
		if l.Type() != "wireguard" || l.Attrs().MTU != DefaultMTU {
			t.Errorf("%s: link type %s MTU %d, want wireguard MTU %d", e.name, l.Type(), l.Attrs().MTU, DefaultMTU)
		}
	}
	t.Logf("dataPlane: %s (device test)", a.dev.Kind())

	// Apply: b is known by a literal endpoint and two prefixes, with a
	// keepalive; a is known to b the same way.
	bPeer := b.asPeer()
	bPeer.AllowedIPs = []netip.Prefix{netip.MustParsePrefix(b.inner + "/32"), netip.MustParsePrefix("10.96.80.0/24")}
	bPeer.Keepalive = 7 * time.Second
	aPeer := a.asPeer()
	a.apply(t, bPeer)
	b.apply(t, aPeer)
	// The end that does not lead holds its peer back (no allowed IPs, no
	// keepalive) until the first handshake or holdOff (crossing.go).
	released := time.Now().Add(holdOff + 10*crossingTick)
	for _, e := range []*tunnelEnd{a, b} {
		for d := readDevice(t, e.ns, e.name); len(d.Peers) == 1 && len(d.Peers[0].AllowedIPs) == 0 && time.Now().Before(released); d = readDevice(t, e.ns, e.name) {
			time.Sleep(crossingTick / 2)
		}
	}
	assertConfigured(t, a, bPeer)
	assertConfigured(t, b, aPeer)

	srv := startSink(t, b.ns)
	if err := retry(10*time.Second, func() error { return sendAndVerify(a.ns, b.inner, srv, 1<<20, 5*time.Second) }); err != nil {
		dumpTunnelState(t, a, b)
		t.Fatalf("1 MiB a→b through the kernel device: %v", err)
	}
	back := startSink(t, a.ns)
	if err := sendAndVerify(b.ns, a.inner, back, 256<<10, 5*time.Second); err != nil {
		t.Fatalf("b→a through the kernel device: %v", err)
	}
	stats, err := a.dev.Stats()
	if s := stats[bPeer.PublicKey]; err != nil || s.LastHandshake.IsZero() || s.TxBytes < 1<<20 {
		t.Errorf("stats of a: %+v, %v; want a handshake and ≥ 1 MiB sent to b", stats, err)
	}

	t.Run("an unchanged apply sends nothing", func(t *testing.T) {
		counter := countConfigures(a.dev)
		a.apply(t, bPeer)
		if n := counter.n.Load(); n != 0 {
			t.Errorf("re-applying the same peers sent %d configurations to the kernel, want none", n)
		}
	})

	t.Run("drift made by another tool is repaired", func(t *testing.T) {
		stranger, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		other := 51999
		var keepalive time.Duration // off
		configureBehindOurBack(t, a.ns, a.name, wgtypes.Config{
			ListenPort: &other,
			Peers: []wgtypes.PeerConfig{
				// b's allowed IPs narrowed and keepalive off. (Not the
				// endpoint: the kernel roams it back with b's next packet,
				// and Apply keeps a roamed endpoint on purpose, config.go.)
				{PublicKey: wgtypes.Key(bPeer.PublicKey), UpdateOnly: true, ReplaceAllowedIPs: true,
					AllowedIPs:                  []net.IPNet{{IP: net.IPv4(192, 168, 80, 99), Mask: net.CIDRMask(32, 32)}},
					PersistentKeepaliveInterval: &keepalive},
				// A peer nobody asked for.
				{PublicKey: stranger.PublicKey(), AllowedIPs: []net.IPNet{{IP: net.IPv4(10, 96, 81, 0), Mask: net.CIDRMask(24, 32)}}},
			},
		})
		if d := readDevice(t, a.ns, a.name); len(d.Peers) != 2 || d.ListenPort != other {
			t.Fatalf("the drift did not take: %+v", d)
		}
		a.apply(t, bPeer)
		assertConfigured(t, a, bPeer)
		if err := retry(10*time.Second, func() error { return sendAndVerify(a.ns, b.inner, srv, 256<<10, 3*time.Second) }); err != nil {
			t.Errorf("traffic after the repair: %v", err)
		}
	})

	outer := t
	t.Run("the device outlives its process and is reused", func(t *testing.T) {
		if err := a.dev.Close(); err != nil {
			t.Fatalf("close a: %v", err)
		}
		// No process holds a's device now; the kernel keeps forwarding.
		assertConfigured(t, a, bPeer)
		if err := sendAndVerify(a.ns, b.inner, srv, 256<<10, 5*time.Second); err != nil {
			t.Errorf("traffic while no process holds the kernel device: %v", err)
		}
		a.open(outer, log) // closed when the whole test ends
		if a.dev.Kind() != KindKernel {
			t.Fatalf("reopened a is %s", a.dev.Kind())
		}
		counter := countConfigures(a.dev)
		a.apply(t, bPeer)
		if n := counter.n.Load(); n != 0 {
			t.Errorf("the first apply after a reopen sent %d configurations, want none (the kernel kept them)", n)
		}
	})

	t.Run("removing the peer stops traffic", func(t *testing.T) {
		a.apply(t)
		assertConfigured(t, a)
		if err := sendAndVerify(a.ns, b.inner, srv, 1024, 2*time.Second); err == nil {
			t.Error("traffic still flows without the peer")
		}
		a.apply(t, bPeer)
		if err := retry(10*time.Second, func() error { return sendAndVerify(a.ns, b.inner, srv, 64<<10, 3*time.Second) }); err != nil {
			t.Errorf("traffic does not resume after re-adding the peer: %v", err)
		}
	})

	t.Run("delete removes the interface", func(t *testing.T) {
		if err := a.dev.Delete(); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if out, err := a.ns.Command("ip", "link", "show", a.name).CombinedOutput(); err == nil {
			t.Errorf("%s still there after Delete:\n%s", a.name, out)
		}
	})
}

// TestKernelModeOpensOnlyRoutingNetlink is the regression test of the first
// boot: Open in kernel mode opened XFRM and netfilter netlink sockets too,
// and where xfrm_user is not loaded (as in this VM, which loads only what
// the tests name) it failed with EPROTONOSUPPORT, so auto mode fell back to
// wireguard-go on a kernel that has WireGuard.
func TestKernelModeOpensOnlyRoutingNetlink(t *testing.T) {
	requireKernelWireGuard(t)
	if h, err := netlink.NewHandle(); err == nil {
		h.Close()
		t.Fatal("the condition this test reproduces is absent: a netlink handle of every family opens here (is xfrm_user loaded? the VM loads only the modules make test-kernel names)")
	}
	ns := nstest.New(t, "kx")
	name := nstest.UniqueName("wk")
	var kind, reason string
	err := ns.Do(func() error {
		d, err := Open(Options{Name: name, Mode: ModeKernel})
		if err != nil {
			return err
		}
		kind, reason = d.Kind(), d.FallbackReason()
		return d.Delete()
	})
	if err != nil || kind != KindKernel || reason != "" {
		t.Fatalf("Open(kernel) = %s (%q), %v; want %s", kind, reason, err, KindKernel)
	}
}
