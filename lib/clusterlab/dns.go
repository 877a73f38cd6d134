package clusterlab

// DNS in the harness: a cluster DNS (the real CoreDNS with the kubernetes
// plugin against the cluster's API server, at service CIDR + 10) and the
// kubelink DNS (the meshdns controller plus a real CoreDNS serving the
// Corefile from the controller's Secret, at service CIDR + 11). Both run in
// their own "pod" namespaces behind the worker node and are reached through
// a DNAT on every node, as kube-proxy would do for their Services.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/meshdns"
	"github.com/kubelink/kubelink/lib/nstest"
	"github.com/kubelink/kubelink/lib/testenv"
)

// Offsets in the service CIDR of the DNS Services and of the kubernetes
// Service (the API server).
const (
	clusterDNSOffset  = 10
	kubelinkDNSOffset = meshdns.KubelinkDNSOffset
	apiServiceOffset  = 1
	// apiRelayPort is where a relay to the API server listens on the
	// gateway, for the kubernetes Service DNAT.
	apiRelayPort = 6443
)

var (
	corednsOnce sync.Once
	corednsBin  string
	corednsErr  error
)

// CoreDNSBinary returns the cached CoreDNS build (the one lib/meshdns tests
// use), building it with lab/scripts/coredns-bin.sh when missing. It fails,
// never skips.
func CoreDNSBinary(t testing.TB) string {
	t.Helper()
	corednsOnce.Do(func() {
		corednsBin = filepath.Join(testenv.CacheDir(), "bin", "coredns-"+meshdns.CoreDNSVersion, "coredns")
		if _, err := os.Stat(corednsBin); err == nil {
			return
		}
		root, err := testenv.RepoRoot()
		if err != nil {
			corednsErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(root, "lab/scripts/coredns-bin.sh")).CombinedOutput()
		if err != nil {
			corednsErr = fmt.Errorf("building CoreDNS: %v\n%s", err, out)
			return
		}
		if _, err := os.Stat(corednsBin); err != nil {
			corednsErr = fmt.Errorf("coredns-bin.sh did not produce %s: %v\n%s", corednsBin, err, out)
		}
	})
	if corednsErr != nil {
		t.Fatal(corednsErr)
	}
	return corednsBin
}

// ServiceAddr is the address at offset n in the cluster's service CIDR.
func (c *Cluster) ServiceAddr(n int) netip.Addr { return mesh.ServiceIP(c.ServiceCIDR, n) }

// ClusterDNSIP is the cluster DNS Service IP (service CIDR + 10).
func (c *Cluster) ClusterDNSIP() netip.Addr { return c.ServiceAddr(clusterDNSOffset) }

// KubelinkDNSIP is the kubelink DNS Service IP (service CIDR + 11).
func (c *Cluster) KubelinkDNSIP() netip.Addr { return c.ServiceAddr(kubelinkDNSOffset) }

// attachPod creates a namespace behind the worker node (like c.Pod) at
// 10.<100+10i>.<subnet>.2 and returns it with its address.
func (c *Cluster) attachPod(role string, subnet int) (*nstest.Namespace, netip.Addr) {
	ns := nstest.New(c.t, c.Name+role)
	base := 100 + 10*c.Index
	ip := netip.MustParseAddr(fmt.Sprintf("10.%d.%d.2", base, subnet))
	gw := fmt.Sprintf("10.%d.%d.1", base, subnet)
	nstest.Veth(c.t, ns, "eth0", ip.String()+"/24", c.Node, nstest.UniqueName("vp"), gw+"/24")
	ns.Run(c.t, "ip", "route", "add", "default", "via", gw)
	ns.Run(c.t, "ip", "link", "set", "lo", "up")
	return ns, ip
}

// dnatService makes svc:port (protos) reach to:toPort from every node, as
// kube-proxy does for a ClusterIP.
func (c *Cluster) dnatService(svc netip.Addr, port int, to netip.Addr, toPort int, protos ...string) {
	for _, ns := range []*nstest.Namespace{c.GW, c.GW2, c.Node} {
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			for _, p := range protos {
				ns.Run(c.t, "iptables", "-t", "nat", "-A", chain, "-d", svc.String(), "-p", p, "--dport", fmt.Sprint(port),
					"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", to, toPort))
			}
		}
	}
}

// CreateEchoService creates the Service default/echo whose ClusterIP is
// c.ServiceIP's address (what the cluster DNS answers for it). Idempotent.
func (c *Cluster) CreateEchoService() {
	c.t.Helper()
	ctx := waitCtx(c.t, 30*time.Second)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"},
		Spec: corev1.ServiceSpec{ClusterIP: c.ServiceIP.Addr().String(), Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if err := c.Kube.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("cluster %s: creating Service echo: %v", c.Name, err)
	}
}

// DNSServer is a CoreDNS process in its own namespace of a cluster, behind a
// Service IP.
type DNSServer struct {
	Name      string
	NS        *nstest.Namespace
	PodIP     netip.Addr
	ServiceIP netip.Addr
	Proc      *Process
	Dir       string // holds the Corefile (and kubeconfig)
}

// Service is the DNS Service address (port 53).
func (d *DNSServer) Service() netip.AddrPort { return netip.AddrPortFrom(d.ServiceIP, 53) }

// waitReady waits for CoreDNS's ready plugin on 127.0.0.1:8181 inside its
// namespace and for an answer on port.
func (d *DNSServer) waitReady(t testing.TB, port uint16, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if d.Proc.Exited() {
			t.Fatalf("%s exited:\n%s", d.Name, d.Proc.Output())
		}
		if _, err = Get(d.NS, netip.MustParseAddrPort("127.0.0.1:8181"), "/ready", 500*time.Millisecond); err == nil {
			if _, err = Resolve(d.NS, netip.AddrPortFrom(d.PodIP, port), "ready-check.cluster.local.", 500*time.Millisecond); err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s: %v\n%s", d.Name, limit, err, d.Proc.Output())
}

// StartClusterDNS runs the cluster's DNS: CoreDNS with the kubernetes plugin
// against the cluster's API server (admin kubeconfig), serving cluster.local
// at service CIDR + 10. It creates the echo Service it is checked with.
func (c *Cluster) StartClusterDNS() *DNSServer {
	c.t.Helper()
	return c.StartClusterDNSAt("cluster.local", c.ClusterDNSIP())
}

// StartClusterDNSAt is StartClusterDNS for a cluster whose domain is domain
// and whose DNS Service has the IP serviceIP.
func (c *Cluster) StartClusterDNSAt(domain string, serviceIP netip.Addr) *DNSServer {
	c.t.Helper()
	return c.startClusterDNS(domain, serviceIP, "")
}

// StartClusterDNSHooked is StartClusterDNS with the cluster DNS hook that
// kubelinkctl install (and meshdns's coredns-custom) adds: the mesh domain
// "kubelink" forwarded to the kubelink DNS Service, in the block that
// meshdns.CorednsCustom renders.
func (c *Cluster) StartClusterDNSHooked() *DNSServer {
	c.t.Helper()
	hook, err := meshdns.CorednsCustom([]meshdns.MeshInput{{Name: "default", Domain: "kubelink"}}, "", c.KubelinkDNSIP(), 53)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.startClusterDNS("cluster.local", c.ClusterDNSIP(), hook)
}

func (c *Cluster) startClusterDNS(domain string, serviceIP netip.Addr, extra string) *DNSServer {
	c.t.Helper()
	c.CreateEchoService()
	ns, ip := c.attachPod("dns", 3)
	d := &DNSServer{Name: "cluster DNS " + c.Name, NS: ns, PodIP: ip, ServiceIP: serviceIP, Dir: c.t.TempDir()}
	corefile := fmt.Sprintf(`.:53 {
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s
        ttl 5
    }
    cache 5
}
`, domain, c.Kubeconfig(ns)) + extra
	conf := filepath.Join(d.Dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		c.t.Fatal(err)
	}
	d.Proc = Start(c.t, ns, d.Name, CoreDNSBinary(c.t), "-conf", conf)
	c.dnatService(d.ServiceIP, 53, ip, 53, "udp", "tcp")
	d.waitReady(c.t, 53, 20*time.Second)
	return d
}

// Resolve asks server for the A record of name from inside ns (like a pod's
// resolver, over UDP).
func Resolve(ns *nstest.Namespace, server netip.AddrPort, name string, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	cl := dns.Client{Timeout: timeout}
	var r *dns.Msg
	err := ns.Do(func() (err error) { r, _, err = cl.Exchange(m, server.String()); return })
	return r, err
}

// LookupA resolves name to one IPv4 address from inside ns, or fails with the
// reason (including NXDOMAIN).
func LookupA(ns *nstest.Namespace, server netip.AddrPort, name string, timeout time.Duration) (netip.Addr, error) {
	r, err := Resolve(ns, server, name, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return netip.Addr{}, fmt.Errorf("%s: %s", name, dns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && strings.EqualFold(a.Hdr.Name, dns.Fqdn(name)) {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: no A record in %v", name, r.Answer)
}

// IsNXDomain reports whether ns's resolver at server says name does not
// exist.
func IsNXDomain(ns *nstest.Namespace, server netip.AddrPort, name string, timeout time.Duration) bool {
	r, err := Resolve(ns, server, name, timeout)
	return err == nil && r.Rcode == dns.RcodeNameError
}
