package clusterlab

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
)

// dialResult tells a dropped packet (timeout) from a reachable host without
// listener (refused) and from success.
func dialResult(ns *nstest.Namespace, addr string) string {
	_, err := Get(ns, netip.MustParseAddrPort(addr), "/", 700*time.Millisecond)
	switch {
	case err == nil:
		return "ok"
	case strings.Contains(err.Error(), "refused"):
		return "refused"
	case strings.Contains(err.Error(), "timeout"):
		return "dropped"
	}
	return err.Error()
}

// The ingress of A's link to B restricts what B may reach in A: allowed
// destinations pass, "!" entries and everything outside the allow list are
// dropped, and the drops are counted in a metric.
func TestIngressFirewallWireGuard(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A second ClusterIP in A, to deny while the first stays allowed.
	for _, ns := range []*nstest.Namespace{a.GW, a.Node} {
		ns.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", "100.64.0.21", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", a.PodIP.String()+":8080")
	}
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
	// Controls without ingress rules: both ClusterIPs reachable; A's
	// cluster address is closed but for the probe and MeshService ports.
	for addr, want := range map[string]string{"100.64.0.20:80": "ok", "100.64.0.21:80": "ok", "192.168.0.11:80": "dropped"} {
		if got := dialResult(b.Pod, addr); got != want {
			t.Fatalf("before the rules, B -> %s: %s, want %s", addr, got, want)
		}
	}

	updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = []string{"100.64.0.0/20", "!100.64.0.21"} })
	waitFor(t, "the denied ClusterIP to be dropped", 5*time.Second, func() bool { return dialResult(b.Pod, "100.64.0.21:80") == "dropped" })
	for addr, want := range map[string]string{"100.64.0.20:80": "ok", "192.168.0.11:80": "dropped"} {
		if got := dialResult(b.Pod, addr); got != want {
			t.Errorf("B -> %s: %s, want %s", addr, got, want)
		}
	}
	a.WaitState("b", v1alpha1.StateUp, 3*time.Second) // the probe still passes

	waitFor(t, "the drops in the metrics", 5*time.Second, func() bool {
		m, err := Get(a.GW, metricsAddr, "/metrics", time.Second)
		if err != nil {
			return false
		}
		match := regexp.MustCompile(`kubelink_firewall_dropped_packets\{link="b"\} (\d+)`).FindStringSubmatch(m)
		if match == nil {
			return false
		}
		n, _ := strconv.Atoi(match[1])
		return n > 0
	})
}

func link(name, addr, cidr, endpoint, key string) *v1alpha1.KubeLink {
	spec := v1alpha1.KubeLinkSpec{ClusterAddress: addr, CIDR: cidr, Endpoint: endpoint, PublicKey: key}
	if endpoint == v1alpha1.EndpointLocalLink {
		spec.PublicKey = ""
	}
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

// A is a member of two meshes: the default one with B and mesh "lab" with C.
// Each peer sees A's traffic from A's address in the mesh they share.
func TestTwoMeshes(t *testing.T) { twoMeshes(t, false) }

// TestTwoMeshes with the TLS bridge: one device, one listener and one
// Connector in A serve both meshes, and each link announces the cluster
// address of its own mesh in the HELLO.
func TestTwoMeshesBridge(t *testing.T) { twoMeshes(t, true) }

// twoMeshes is the body of TestTwoMeshes in the WireGuard or the bridge
// data plane.
func twoMeshes(t *testing.T, bridge bool) {
	t.Parallel()
	lab := New(t, 3)
	a, b, c := lab.Clusters[0], lab.Clusters[1], lab.Clusters[2]
	var ca *BridgeCA
	if bridge {
		ca = NewBridgeCA(t)
	}
	for _, cl := range lab.Clusters {
		cl.StartRouter(lab)
		var flags []string
		if bridge {
			flags = BridgeFlags(ca.CertDir(t, cl))
		}
		cl.StartBroker(lab, cl.GW, flags...)
	}
	// peer is the KubeLink by which another cluster reaches cl in a mesh.
	peer := func(name, addr string, cl *Cluster) *v1alpha1.KubeLink {
		if bridge {
			return link(name, addr, cl.ServiceCIDR.String(), fmt.Sprintf("%s:8088", cl.InetIP), "")
		}
		return link(name, addr, cl.ServiceCIDR.String(), fmt.Sprintf("%s:8777", cl.InetIP), cl.PublicKey().String())
	}
	a.Apply(a.LocalLink(), peer(b.Name, b.MeshAddress.String(), b))
	b.Apply(b.LocalLink(), peer(a.Name, a.MeshAddress.String(), a))
	a.Apply(link("lab--a", "10.200.0.1/24", a.ServiceCIDR.String(), v1alpha1.EndpointLocalLink, ""), peer("lab--c", "10.200.0.3/24", c))
	c.Apply(link("lab--c", "10.200.0.3/24", c.ServiceCIDR.String(), v1alpha1.EndpointLocalLink, ""), peer("lab--a", "10.200.0.1/24", a))

	if body, _ := WaitGet(t, a.Pod, c.ServiceIP, 8*time.Second); !strings.Contains(body, "echo c from 10.200.0.1:") {
		t.Errorf("A -> C answered %q; want C to see A's address in mesh lab", body)
	}
	if body, _ := WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second); !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q; want B to see A's address in the default mesh", body)
	}
	if body, _ := WaitGet(t, c.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 10.200.0.3:") {
		t.Errorf("C -> A answered %q", body)
	}
	if body, _ := WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 192.168.0.12:") {
		t.Errorf("B -> A answered %q", body)
	}
	// B and C share no mesh: C's services are not routed in B.
	if strings.Contains(b.Node.Run(t, "ip", "route"), c.ServiceCIDR.String()) {
		t.Error("B routes C's services without a shared mesh")
	}
	for _, n := range []string{"a", "b", "lab--a", "lab--c"} {
		a.WaitState(n, v1alpha1.StateUp, 5*time.Second)
	}
	b.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	c.WaitState("lab--a", v1alpha1.StateUp, 5*time.Second)
	if bridge {
		for _, n := range []string{"b", "lab--c"} {
			if _, kl := a.WaitState(n, v1alpha1.StateUp, time.Second); kl.Status.DataPlane != "bridge" {
				t.Errorf("A's link %s: dataPlane %q, want bridge", n, kl.Status.DataPlane)
			}
		}
	}
}

// Two brokers in A split its two meshes (--served-links): the one on GW
// serves the default mesh with B, the one on GW2 mesh "lab" with C. A's
// router routes each mesh, and each member's networks, to the gateway that
// serves it — not every mesh to the first mesh's gateway.
func TestRouterPerMeshWithSplitBrokers(t *testing.T) {
	t.Parallel()
	lab := New(t, 3)
	a, b, c := lab.Clusters[0], lab.Clusters[1], lab.Clusters[2]
	for _, cl := range lab.Clusters {
		cl.StartRouter(lab)
	}
	a.StartBroker(lab, a.GW, "--served-links=default", "--lease-name=kubelink-broker-default")
	a.StartBroker(lab, a.GW2, "--served-links=lab", "--lease-name=kubelink-broker-lab")
	b.StartBroker(lab, b.GW)
	c.StartBroker(lab, c.GW)
	wg := func(name, addr string, cl *Cluster, endpoint netip.Addr) *v1alpha1.KubeLink {
		return link(name, addr, cl.ServiceCIDR.String(), fmt.Sprintf("%s:8777", endpoint), cl.PublicKey().String())
	}
	a.Apply(a.LocalLink(), wg(b.Name, b.MeshAddress.String(), b, b.InetIP))
	b.Apply(b.LocalLink(), wg(a.Name, a.MeshAddress.String(), a, a.InetIP))
	a.Apply(link("lab--a", "10.200.0.1/24", a.ServiceCIDR.String(), v1alpha1.EndpointLocalLink, ""), wg("lab--c", "10.200.0.3/24", c, c.InetIP))
	// C reaches A's mesh "lab" at the gateway that serves it: GW2.
	c.Apply(link("lab--c", "10.200.0.3/24", c.ServiceCIDR.String(), v1alpha1.EndpointLocalLink, ""), wg("lab--a", "10.200.0.1/24", a, a.Inet2IP))

	for name, gw := range map[string]netip.Addr{"a": a.GWIP, "lab--a": a.GW2IP} {
		waitFor(t, fmt.Sprintf("A's LocalLink %s to name gateway %s", name, gw), 10*time.Second, func() bool {
			kl, err := a.Link(name)
			return err == nil && kl.Status.Gateway == gw.String()
		})
	}
	want := map[string]netip.Addr{
		b.ServiceCIDR.String(): a.GWIP, MeshCIDR.String(): a.GWIP,
		c.ServiceCIDR.String(): a.GW2IP, "10.200.0.0/24": a.GW2IP,
	}
	var routes string
	waitFor(t, "A's worker to route each mesh via its own gateway", 10*time.Second, func() bool {
		routes = a.Node.Run(t, "ip", "route")
		for dst, gw := range want {
			if !strings.Contains(routes, dst+" via "+gw.String()) {
				return false
			}
		}
		return true
	})
	if body, _ := WaitGet(t, a.Pod, b.ServiceIP, 8*time.Second); !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q; want B to see A's address in the default mesh", body)
	}
	if body, _ := WaitGet(t, a.Pod, c.ServiceIP, 8*time.Second); !strings.Contains(body, "echo c from 10.200.0.1:") {
		t.Errorf("A -> C answered %q; want C to see A's address in mesh lab", body)
	}
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
	WaitGet(t, c.Pod, a.ServiceIP, 5*time.Second)
	// Each broker serves only its mesh: GW has no route or peer for C, GW2
	// none for B.
	if r := a.GW.Run(t, "ip", "route"); strings.Contains(r, c.ServiceCIDR.String()) {
		t.Errorf("the default mesh's gateway routes C's services:\n%s", r)
	}
	if r := a.GW2.Run(t, "ip", "route"); strings.Contains(r, b.ServiceCIDR.String()) {
		t.Errorf("mesh lab's gateway routes B's services:\n%s", r)
	}
	for _, n := range []string{"a", "b", "lab--a", "lab--c"} {
		a.WaitState(n, v1alpha1.StateUp, 5*time.Second)
	}
	t.Logf("A's worker routes:\n%s", routes)
}
