//go:build kernelwg

// Run by `make test-kernel` inside a VM whose kernel has WireGuard (see
// lib/wireguard/kernel_vm_test.go): here a device outlives its process, so
// handing the data plane over must remove it.

package broker

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kubelink/kubelink/lib/nstest"
	"github.com/kubelink/kubelink/lib/wireguard"
)

func openKernelDevice(t *testing.T, ns *nstest.Namespace, name string) *wireguard.Device {
	t.Helper()
	if _, err := os.Stat("/sys/module/wireguard"); err != nil {
		t.Fatal("this test needs a kernel with the wireguard module; run it with `make test-kernel`")
	}
	var d *wireguard.Device
	if err := ns.Do(func() (err error) {
		d, err = wireguard.Open(wireguard.Options{Name: name, Mode: wireguard.ModeKernel})
		return err
	}); err != nil {
		t.Fatalf("open kernel device: %v", err)
	}
	return d
}

func linkIn(t *testing.T, ns *nstest.Namespace, name string) bool {
	t.Helper()
	return ns.Command("ip", "link", "show", name).Run() == nil
}

// A broker that stops or loses the Lease removes its kernel device: closed
// and left, it would keep the mesh's key and send keepalives as a second
// gateway.
func TestClosingTheWireGuardPlaneRemovesTheKernelDevice(t *testing.T) {
	ns := nstest.New(t, "hc")
	name := nstest.UniqueName("wg")
	d := openKernelDevice(t, ns, name)
	if d.Kind() != wireguard.KindKernel {
		t.Fatalf("kind %s", d.Kind())
	}
	p := &wgPlane{gateway: &gateway{cfg: &Config{LeaderElect: true}}, dev: d, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.Close()
	if linkIn(t, ns, name) {
		t.Errorf("kernel device %s still there after the plane closed", name)
	}
	// Without leader election nobody takes over: the device stays and keeps
	// forwarding through a restart.
	single := nstest.UniqueName("wg")
	d = openKernelDevice(t, ns, single)
	p = &wgPlane{gateway: &gateway{cfg: &Config{LeaderElect: false}}, dev: d, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.Close()
	if !linkIn(t, ns, single) {
		t.Errorf("--leader-elect=false: kernel device %s removed on close, want it kept", single)
	}
}

// A standby removes the kernel WireGuard device a crashed broker left under
// its name, and never an interface of another kind.
func TestStandbyRemovesOnlyAStaleWireGuardDevice(t *testing.T) {
	ns := nstest.New(t, "hs")
	name := nstest.UniqueName("wg")
	d := openKernelDevice(t, ns, name)
	_ = d.Close() // the crash: the process is gone, the kernel device stays
	if !linkIn(t, ns, name) {
		t.Fatalf("kernel device %s gone after Close; the premise of this test does not hold", name)
	}
	// Marked as the holder's: a standby on the active broker's node.
	if err := ns.Do(func() error { return setOwner(name, "active-pod") }); err != nil {
		t.Fatal(err)
	}
	var removed bool
	if err := ns.Do(func() (err error) { removed, err = removeStaleDevice(name, "active-pod"); return err }); err != nil || removed {
		t.Fatalf("removeStaleDevice of the holder's own device = %v, %v; want it left alone", removed, err)
	}
	// Marked by the crashed broker, another holder now.
	if err := ns.Do(func() (err error) { removed, err = removeStaleDevice(name, "other-pod"); return err }); err != nil || !removed {
		t.Fatalf("removeStaleDevice = %v, %v; want the device removed", removed, err)
	}
	if linkIn(t, ns, name) {
		t.Errorf("device %s still there", name)
	}
	// Nothing there: nothing to do.
	if err := ns.Do(func() (err error) { removed, err = removeStaleDevice(name, "other-pod"); return err }); err != nil || removed {
		t.Errorf("removeStaleDevice without a device = %v, %v", removed, err)
	}
	// An interface of another kind under that name is the admin's.
	ns.Run(t, "ip", "link", "add", name, "type", "bridge")
	if err := ns.Do(func() (err error) { removed, err = removeStaleDevice(name, "other-pod"); return err }); err != nil || removed {
		t.Errorf("removeStaleDevice over a bridge = %v, %v; want it left alone", removed, err)
	}
	var l netlink.Link
	if err := ns.Do(func() (err error) { l, err = netlink.LinkByName(name); return err }); err != nil || l.Type() != "bridge" {
		t.Errorf("the bridge %s: %v, %v", name, l, err)
	}
}
