// Package clusterlab builds two (or more) simulated clusters out of real
// network namespaces and real API servers, for tests of the data planes, the
// router and DNS that need real kernel networking but not kind.
//
// Per cluster: a kube-apiserver + etcd (lib/testenv); a node network (a
// bridge) with a gateway node GW, a standby gateway GW2 and a worker Node; a
// Pod namespace behind Node; a ClusterIP answered by an HTTP server in the
// Pod, made reachable on every node by DNAT as kube-proxy would. All gateways
// share an "internet" bridge. Nothing is created outside the namespaces.
package clusterlab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
	"github.com/kubelink/kubelink/lib/testenv"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// Namespace of the kubelink components in every cluster.
const Namespace = "kubelink"

// Fixed plan of addresses (all inside the test's namespaces).
var (
	NodeCIDR = netip.MustParsePrefix("10.10.0.0/24")
	MeshCIDR = netip.MustParsePrefix("192.168.0.0/24")
)

// Cluster is one simulated cluster.
type Cluster struct {
	Name  string
	Index int
	Plane *testenv.ControlPlane
	Kube  client.Client

	Switch, GW, GW2, Node, Pod *nstest.Namespace

	GWIP, GW2IP, NodeIP netip.Addr // node network
	InetIP, Inet2IP     netip.Addr // "internet" addresses of GW and GW2
	PodIP               netip.Addr
	PodCIDR             netip.Prefix
	ServiceCIDR         netip.Prefix
	ServiceIP           netip.AddrPort // ClusterIP:80 of the echo service
	MeshAddress         netip.Prefix   // cluster address in the mesh
	PrivateKey          mesh.Key

	kubeconfigs map[*nstest.Namespace]string
	apiProxies  map[*nstest.Namespace]*testenv.Proxy
	t           testing.TB
}

// Lab is the set of clusters plus the internet between their gateways.
type Lab struct {
	Inet     *nstest.Namespace
	Clusters []*Cluster
	Bin      string
}

// New builds n clusters (named a, b, c, ...). Cluster i (1-based) has service
// CIDR 100.64.(16*(i-1)).0/20, pods 10.(100+10*i).0.0/16 and mesh address
// 192.168.0.(10+i)/24.
func New(t testing.TB, n int) *Lab {
	t.Helper()
	nstest.RequireRoot(t)
	lab := &Lab{Bin: Binaries(t), Inet: nstest.New(t, "inet")}
	plugInet := nstest.Bridge(t, lab.Inet, "inet0")
	// Every cluster's control plane (each its own etcd and kube-apiserver,
	// as real clusters have): ones an earlier test of this package used,
	// emptied since, else started at once (testenv.SharedControlPlanesForTest).
	names, cidrs := make([]string, n), make([]string, n)
	for i := range names {
		names[i], cidrs[i] = "cluster-"+clusterName(i+1), serviceCIDR(i+1).String()
	}
	planes := testenv.SharedControlPlanesForTest(t, names, cidrs)
	for i := 1; i <= n; i++ {
		lab.Clusters = append(lab.Clusters, newCluster(t, i, plugInet, planes[i-1]))
	}
	return lab
}

// clusterName is the name of the lab's i-th cluster (1: a, 2: b, …).
func clusterName(i int) string { return string(rune('a' + i - 1)) }

// serviceCIDR is the service CIDR of the lab's i-th cluster.
func serviceCIDR(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("100.64.%d.0/20", 16*(i-1)))
}

func newCluster(t testing.TB, i int, plugInet func(*nstest.Namespace, string, string), plane *testenv.ControlPlane) *Cluster {
	name := clusterName(i)
	c := &Cluster{
		Name: name, Index: i, t: t, kubeconfigs: map[*nstest.Namespace]string{}, apiProxies: map[*nstest.Namespace]*testenv.Proxy{},
		GWIP: netip.MustParseAddr("10.10.0.1"), GW2IP: netip.MustParseAddr("10.10.0.2"), NodeIP: netip.MustParseAddr("10.10.0.3"),
		InetIP:      netip.MustParseAddr(fmt.Sprintf("172.30.0.%d", 10*i+1)),
		Inet2IP:     netip.MustParseAddr(fmt.Sprintf("172.30.0.%d", 10*i+2)),
		PodCIDR:     netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 100+10*i)),
		PodIP:       netip.MustParseAddr(fmt.Sprintf("10.%d.1.2", 100+10*i)),
		ServiceCIDR: serviceCIDR(i),
		ServiceIP:   netip.MustParseAddrPort(fmt.Sprintf("100.64.%d.20:80", 16*(i-1))),
		MeshAddress: netip.MustParsePrefix(fmt.Sprintf("192.168.0.%d/24", 10+i)),
	}
	key, err := wireguard.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.PrivateKey = key

	c.Plane = plane
	if c.Kube, err = c.Plane.Client(); err != nil {
		t.Fatal(err)
	}

	c.Switch = nstest.New(t, name+"sw")
	c.GW, c.GW2, c.Node, c.Pod = nstest.New(t, name+"gw"), nstest.New(t, name+"gw2"), nstest.New(t, name+"node"), nstest.New(t, name+"pod")
	plug := nstest.Bridge(t, c.Switch, "br0")
	plug(c.GW, "eth0", c.GWIP.String()+"/24")
	plug(c.GW2, "eth0", c.GW2IP.String()+"/24")
	plug(c.Node, "eth0", c.NodeIP.String()+"/24")
	plugInet(c.GW, "inet0", c.InetIP.String()+"/24")
	plugInet(c.GW2, "inet0", c.Inet2IP.String()+"/24")

	// The pod sits behind the worker node, as with a ptp CNI.
	podGW := netip.MustParseAddr(fmt.Sprintf("10.%d.1.1", 100+10*i))
	nstest.Veth(t, c.Pod, "eth0", c.PodIP.String()+"/24", c.Node, "vpod", podGW.String()+"/24")
	c.Pod.Run(t, "ip", "route", "add", "default", "via", podGW.String())
	for _, ns := range []*nstest.Namespace{c.GW, c.GW2, c.Node} {
		ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	for _, gw := range []*nstest.Namespace{c.GW, c.GW2} {
		gw.Run(t, "ip", "route", "add", c.PodCIDR.String(), "via", c.NodeIP.String())
	}

	// The echo service: an HTTP server in the pod and a ClusterIP DNAT on
	// every node (our stand-in for kube-proxy).
	ln, err := serveHTTP(c.Pod, netip.AddrPortFrom(c.PodIP, 8080), "echo "+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	for _, ns := range []*nstest.Namespace{c.GW, c.GW2, c.Node} {
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			ns.Run(t, "iptables", "-t", "nat", "-A", chain, "-d", c.ServiceIP.Addr().String(), "-p", "tcp", "--dport", "80",
				"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:8080", c.PodIP))
			// Port 5201 reaches an iperf3 server in the pod, for benchmarks.
			ns.Run(t, "iptables", "-t", "nat", "-A", chain, "-d", c.ServiceIP.Addr().String(), "-p", "tcp", "--dport", "5201",
				"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:5201", c.PodIP))
		}
	}
	c.setupAPI()
	return c
}

// setupAPI creates the kubelink namespace and the WireGuard key Secret.
func (c *Cluster) setupAPI() {
	ctx := waitCtx(c.t, 30*time.Second)
	// A reused control plane keeps its namespaces (nothing would finish
	// their deletion), emptied.
	if err := c.Kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatal(err)
	}
	must(c.t, c.Kube.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "wireguard"},
		Data:       map[string][]byte{v1alpha1.SecretKeyWireguardPrivateKey: []byte(c.PrivateKey.String())},
	}))
}

// PublicKey of the cluster's WireGuard key.
func (c *Cluster) PublicKey() mesh.Key { return wireguard.PublicKey(c.PrivateKey) }

// Kubeconfig returns a kubeconfig usable by processes inside ns.
func (c *Cluster) Kubeconfig(ns *nstest.Namespace) string {
	if p, ok := c.kubeconfigs[ns]; ok {
		return p
	}
	p, proxy := apiForward(c.t, ns, c.Plane)
	c.kubeconfigs[ns] = p
	c.apiProxies[ns] = proxy
	return p
}

// SetAPIDownFor cuts (true) or restores (false) the API server for the
// kubelink processes in ns only, as when one node loses it.
func (c *Cluster) SetAPIDownFor(ns *nstest.Namespace, down bool) {
	c.Kubeconfig(ns)
	c.apiProxies[ns].SetDown(down)
}

// SetAPIDown cuts (true) or restores (false) the API server for every
// kubelink process of c: connections are refused and open ones reset, as
// for a stopped API server. The test's own client is not affected.
func (c *Cluster) SetAPIDown(down bool) {
	for _, p := range c.apiProxies {
		p.SetDown(down)
	}
}

// StartBroker runs a broker in gw (c.GW or c.GW2) with the lab's flags plus
// extra ones. Each broker gets its own device name, since embedded
// WireGuard's control sockets share one directory across namespaces.
func (c *Cluster) StartBroker(lab *Lab, gw *nstest.Namespace, extra ...string) *Process {
	return c.StartBrokerBinary(gw, lab.Bin+"/kubelink-broker", extra...)
}

// StartBrokerBinary is StartBroker with another binary that takes the
// broker's flags, e.g. kubelink-bridge.
func (c *Cluster) StartBrokerBinary(gw *nstest.Namespace, bin string, extra ...string) *Process {
	device := nstest.UniqueName("wg")
	args := []string{
		"--kubeconfig", c.Kubeconfig(gw), "--namespace", Namespace, "--node-cidr", NodeCIDR.String(),
		"--service-cidr", c.ServiceCIDR.String(), "--ifce-name", device, "--identity", gw.Name,
		"--metrics-addr", "127.0.0.1:9090", "--resync", "2s", "--health-status-interval", "2s",
	}
	p := Start(c.t, gw, filepath.Base(bin)+" "+gw.Name, bin, append(args, extra...)...)
	p.Device = device
	return p
}

// StartRouter runs a router on the worker node.
func (c *Cluster) StartRouter(lab *Lab, extra ...string) *Process {
	args := []string{"--kubeconfig", c.Kubeconfig(c.Node), "--node-cidr", NodeCIDR.String(), "--resync", "2s"}
	return Start(c.t, c.Node, "router "+c.Node.Name, lab.Bin+"/kubelink-router", append(args, extra...)...)
}

// LocalLink is the KubeLink by which c declares its membership.
func (c *Cluster) LocalLink() *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: c.Name}, Spec: v1alpha1.KubeLinkSpec{
		Endpoint: v1alpha1.EndpointLocalLink, ClusterAddress: c.MeshAddress.String(), CIDR: c.ServiceCIDR.String()}}
}

// LinkTo is the KubeLink by which another cluster reaches c.
func (c *Cluster) LinkTo() *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: c.Name}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: c.MeshAddress.String(), CIDR: c.ServiceCIDR.String(),
		Endpoint: fmt.Sprintf("%s:8777", c.InetIP), PublicKey: c.PublicKey().String()}}
}

// Apply creates or updates objects in the cluster.
func (c *Cluster) Apply(objs ...client.Object) {
	c.t.Helper()
	ctx := waitCtx(c.t, 30*time.Second)
	for _, o := range objs {
		if err := c.Kube.Create(ctx, o); err != nil {
			c.t.Fatalf("cluster %s: creating %s: %v", c.Name, o.GetName(), err)
		}
	}
}

// Link reads a KubeLink.
func (c *Cluster) Link(name string) (*v1alpha1.KubeLink, error) {
	var kl v1alpha1.KubeLink
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Kube.Get(ctx, client.ObjectKey{Name: name}, &kl)
	return &kl, err
}

// WaitState waits until link name has state and returns the time it took.
func (c *Cluster) WaitState(name, state string, limit time.Duration) (time.Duration, *v1alpha1.KubeLink) {
	c.t.Helper()
	start := time.Now()
	var last *v1alpha1.KubeLink
	for time.Since(start) < limit {
		if kl, err := c.Link(name); err == nil {
			last = kl
			if kl.Status.State == state {
				return time.Since(start), kl
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := "<none>"
	if last != nil {
		st = fmt.Sprintf("%s: %s", last.Status.State, last.Status.Message)
	}
	c.t.Fatalf("cluster %s: link %s not %s within %s (last %s)", c.Name, name, state, limit, st)
	return 0, nil
}

// Connect applies the LocalLinks of both clusters and a link to each other.
func Connect(a, b *Cluster) {
	a.Apply(a.LocalLink(), b.LinkTo())
	b.Apply(b.LocalLink(), a.LinkTo())
}

// WaitGet fetches from ns until it succeeds or limit passes; it returns the
// body and how long it took.
func WaitGet(t testing.TB, ns *nstest.Namespace, addr netip.AddrPort, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	var err error
	var body string
	for time.Since(start) < limit {
		if body, err = Get(ns, addr, "/", 500*time.Millisecond); err == nil {
			return body, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET http://%s from %s failed for %s: %v", addr, ns.Name, limit, err)
	return "", 0
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
