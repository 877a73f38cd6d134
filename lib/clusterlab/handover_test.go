package clusterlab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
)

// Two devices must never hold a cluster's key at once. A kernel WireGuard
// device outlives its process; left on a node that is no longer the
// gateway, every keepalive it sends roams the peers' endpoint back to that
// node, away from the active broker. So a broker that stops removes its
// device, and a standby that finds one a crashed broker left removes it.
// With wireguard-go (make test) the device dies with its process and the
// test checks the same outcome; in make test-kernel's VM it is the kernel
// device.
func TestGatewayHandoverLeavesNoSecondDevice(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A 1 s keepalive makes a leftover device show within a second.
	keepalive := []string{"--keepalive", "1s"}
	first, second, bBroker := startActiveStandby(t, lab, keepalive, keepalive)
	if kl, err := a.Link("b"); err == nil {
		t.Logf("dataPlane: %s (broker status)", kl.Status.DataPlane)
	}
	bDevice := wgDeviceReader(t, b.GW)
	bDev := bBroker.Device

	// A crash leaves what the kind leaves: a kernel device stays.
	first.Kill()
	killed := time.Now()
	waitFor(t, "the standby to publish itself as gateway", 10*time.Second, func() bool {
		kl, err := a.Link("a")
		return err == nil && kl.Status.Gateway == a.GW2IP.String()
	})
	WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second)
	t.Logf("crash: A -> B back %s after the kill", time.Since(killed).Round(time.Millisecond))
	left := hasLink(a.GW, first.Device)
	if want := expectedDataPlane() == "wireguard-kernel"; left != want {
		t.Errorf("after the crash, device %s on the old gateway exists = %v, want %v for %s", first.Device, left, want, expectedDataPlane())
	}

	// The crashed broker restarts (same node, same device name) and finds
	// another holder: it removes the device and stays standby.
	a.StartBroker(lab, a.GW, append(keepalive, "--ifce-name", first.Device)...)
	waitFor(t, "the restarted standby to remove the device the crash left", 5*time.Second, func() bool {
		return !hasLink(a.GW, first.Device)
	})
	assertEndpointStays(t, bDevice, bDev, a.Inet2IP, 4*time.Second)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)

	// A graceful stop of the active hands over: its device is gone when it
	// has exited, the restarted broker takes over, and B's endpoint for A
	// stays with the new gateway.
	second.Stop()
	stopped := time.Now()
	if hasLink(a.GW2, second.Device) {
		t.Errorf("device %s still on %s after its broker stopped", second.Device, a.GW2.Name)
	}
	waitFor(t, "the restarted broker to take over", 10*time.Second, func() bool {
		kl, err := a.Link("a")
		return err == nil && kl.Status.Gateway == a.GWIP.String()
	})
	WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second)
	t.Logf("graceful stop: A -> B back %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	assertEndpointStays(t, bDevice, bDev, a.InetIP, 4*time.Second)
}

// startActiveStandby starts both clusters' routers, A's broker on GW and,
// once it is active, A's standby on GW2 (both with aFlags) and B's broker
// (bFlags); it connects A and B over WireGuard and waits until A reaches B
// and the link is Up.
func startActiveStandby(t *testing.T, lab *Lab, aFlags, bFlags []string) (active, standby, bBroker *Process) {
	t.Helper()
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	active = a.StartBroker(lab, a.GW, aFlags...)
	waitFor(t, "the first broker to become active", 5*time.Second, func() bool {
		body, err := Get(a.GW, metricsAddr, "/readyz", time.Second)
		return err == nil && strings.Contains(body, "ok")
	})
	standby = a.StartBroker(lab, a.GW2, aFlags...)
	bBroker = b.StartBroker(lab, b.GW, bFlags...)
	Connect(a, b)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	return active, standby, bBroker
}

// wgDeviceReader opens a wgctrl client inside ns (a kernel device is only
// reached by genetlink there) and closes it when the test ends.
func wgDeviceReader(t *testing.T, ns *nstest.Namespace) *wgctrl.Client {
	t.Helper()
	var c *wgctrl.Client
	if err := ns.Do(func() (err error) { c, err = wgctrl.New(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hasLink(ns *nstest.Namespace, name string) bool {
	return ns.Command("ip", "link", "show", name).Run() == nil
}

// assertEndpointStays samples the endpoint of the one peer of B's device
// every 50 ms for the window: it must be at want (the active gateway) in
// every sample, after it got there.
func assertEndpointStays(t *testing.T, c *wgctrl.Client, device string, want netip.Addr, window time.Duration) {
	t.Helper()
	current := func() (netip.Addr, error) { return peerEndpoint(c, device) }
	waitFor(t, "B's endpoint for A to be the active gateway "+want.String(), 5*time.Second, func() bool {
		ip, err := current()
		return err == nil && ip == want
	})
	samples, moved := 0, 0
	var away netip.Addr
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		ip, err := current()
		if err != nil {
			t.Fatalf("read B's device: %v", err)
		}
		samples++
		if ip != want {
			moved++
			away = ip
		}
	}
	if moved > 0 {
		t.Errorf("B's endpoint for A left the active gateway %s in %d of %d samples over %s (to %s): a second device sends with A's key", want, moved, samples, window, away)
	}
}

// peerEndpoint is the endpoint address of the one peer of device.
func peerEndpoint(c *wgctrl.Client, device string) (netip.Addr, error) {
	d, err := c.Device(device)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(d.Peers) != 1 || d.Peers[0].Endpoint == nil {
		return netip.Addr{}, fmt.Errorf("peers %+v", d.Peers)
	}
	ip, _ := netip.AddrFromSlice(d.Peers[0].Endpoint.IP)
	return ip.Unmap(), nil
}
