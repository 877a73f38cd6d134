package clusterlab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// A router killed while links change removes its stale routes on restart
// (remembered in --datafile), and never touches routes it did not make.
func TestRouterRestartRemovesStaleRoutesOnly(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.Node.Run(t, "ip", "route", "add", "10.99.0.0/24", "via", a.GWIP.String(), "proto", "static")
	data := filepath.Join(t.TempDir(), "routes")
	router := a.StartRouter(lab, "--datafile", data)
	a.StartBroker(lab, a.GW)
	b.StartRouter(lab)
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	waitFor(t, "the datafile to list B's service CIDR", 5*time.Second, func() bool {
		d, _ := os.ReadFile(data)
		return strings.Contains(string(d), b.ServiceCIDR.String())
	})

	router.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kl, err := a.Link("b")
	must(t, err)
	must(t, a.Kube.Delete(ctx, kl))
	holdsFor(t, "the route without a router (else the test would prove nothing)", 500*time.Millisecond, func() bool {
		return strings.Contains(a.Node.Run(t, "ip", "route"), b.ServiceCIDR.String())
	})
	a.StartRouter(lab, "--datafile", data)
	waitFor(t, "the stale route to be removed after the restart", 5*time.Second, func() bool {
		return !strings.Contains(a.Node.Run(t, "ip", "route"), b.ServiceCIDR.String())
	})
	routes := a.Node.Run(t, "ip", "route")
	if !strings.Contains(routes, "10.99.0.0/24 via 10.10.0.1 dev eth0 proto static") {
		t.Errorf("foreign route touched:\n%s", routes)
	}
	if !strings.Contains(routes, "192.168.0.0/24 via 10.10.0.1") {
		t.Errorf("the mesh route must stay:\n%s", routes)
	}
}

// Endpoints given as DNS names are resolved again periodically, so a peer
// whose address changes is found again. B's link to A is Inbound (B never
// dials), so only A's re-resolution can restore the tunnel.
func TestEndpointNamesAreResolvedAgain(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	hostsDir := filepath.Join("/etc/netns", a.GW.Name)
	must(t, os.MkdirAll(hostsDir, 0o755))
	t.Cleanup(func() { os.RemoveAll(hostsDir) })
	hosts := filepath.Join(hostsDir, "hosts")
	writeHosts := func(ip string) {
		// In place: `ip netns exec` bind-mounts this very file as /etc/hosts.
		f, err := os.OpenFile(hosts, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		must(t, err)
		_, err = f.WriteString("127.0.0.1 localhost\n" + ip + " b.mesh.test\n")
		must(t, err)
		must(t, f.Close())
	}
	writeHosts(b.InetIP.String())

	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, "--resolve-interval", "1s")
	bBroker := b.StartBroker(lab, b.GW)
	toB := b.LinkTo()
	toB.Spec.Endpoint = "b.mesh.test:8777"
	toA := a.LinkTo()
	toA.Spec.Endpoint = v1alpha1.EndpointInbound
	a.Apply(a.LocalLink(), toB)
	b.Apply(b.LocalLink(), toA)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	// Up in the status before B goes: a link applied a moment ago is Down
	// ("no reply to the health probe yet") until its first probe reply is
	// written, and that Down is not the one this test waits for below (make
	// flake caught it: the early Down, then Up 0.2 s into the window).
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)

	// B's gateway gets a new public address and its broker restarts, so B
	// has no endpoint for A (Inbound) and cannot roam back to it: only A
	// resolving the name again can restore the tunnel.
	newIP := "172.30.0.29"
	bBroker.Kill()
	b.GW.Run(t, "ip", "addr", "del", b.InetIP.String()+"/24", "dev", "inet0")
	b.GW.Run(t, "ip", "addr", "add", newIP+"/24", "dev", "inet0")
	b.StartBroker(lab, b.GW)
	a.WaitState("b", v1alpha1.StateDown, 5*time.Second)
	holdsFor(t, "link b Down before the DNS change (else the test would prove nothing)", 3*time.Second, func() bool {
		return linkIs(a, "b", v1alpha1.StateDown)
	})
	writeHosts(newIP)
	changed := time.Now()
	a.WaitState("b", v1alpha1.StateUp, 15*time.Second)
	t.Logf("A found B at its new address %s after the DNS change", time.Since(changed).Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
}
