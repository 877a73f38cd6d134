package clusterlab

// DNS in the harness: a cluster DNS (the real CoreDNS with the kubernetes
// plugin against the cluster's API server, at service CIDR + 10) and the
// kubelink DNS (the meshdns controller plus a real CoreDNS serving the
// Corefile from the controller's Secret, at service CIDR + 11). Both run in
// their own "pod" namespaces behind the worker node and are reached through
// a DNAT on every node, as kube-proxy would do for their Services.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
		root, err := repoRoot()
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

// DNSToken returns a token of the ServiceAccount kubelink/kubelink-dns, which
// has the read access CoreDNS's kubernetes plugin needs (like
// system:coredns). Idempotent.
func (c *Cluster) DNSToken() string {
	c.t.Helper()
	ctx := waitCtx(c.t, 30*time.Second)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "kubelink-dns"}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "namespaces", "pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		// kubelinkgate (as deploy/base grants the kubelink CoreDNS)
		{APIGroups: []string{"kubelink.mandelsoft.org"}, Resources: []string{"kubelinks"}, Verbs: []string{"get", "list", "watch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kubelink-dns"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: Namespace, Name: "kubelink-dns"}}}
	for _, obj := range []client.Object{sa, role, binding} {
		if err := c.Kube.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			c.t.Fatalf("cluster %s: creating %T: %v", c.Name, obj, err)
		}
	}
	exp := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	if err := c.Kube.SubResource("token").Create(ctx, sa, tr); err != nil {
		c.t.Fatalf("cluster %s: token request: %v", c.Name, err)
	}
	return tr.Status.Token
}

// CAData is the PEM CA of the cluster's API server.
func (c *Cluster) CAData() []byte { return c.Plane.Config().CAData }

// ExposeAPIService makes the kubernetes Service address (service CIDR + 1,
// port 443) reach the API server from every node, also for traffic that
// comes through the mesh, and returns the PEM CA to trust for it.
//
// The test API server's certificate is valid only for 127.0.0.1, so the
// Service is fronted by a TLS-terminating reverse proxy on the gateway's
// node address (like a load balancer in front of an API server), with a
// certificate for the Service IP from a CA of its own; it passes requests,
// including the bearer token, on to the API server. Every node DNATs the
// Service address to it.
func (c *Cluster) ExposeAPIService() (caPEM []byte) {
	c.t.Helper()
	svc := c.ServiceAddr(apiServiceOffset)
	caPEM, cert, err := serviceCert(svc)
	if err != nil {
		c.t.Fatal(err)
	}
	rc := c.Plane.Config()
	upstream, err := url.Parse(rc.Host)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rc.CAData) {
		c.t.Fatal("API server CA: no certificate")
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	proxy.FlushInterval = -1 // watches stream
	var ln net.Listener
	addr := netip.AddrPortFrom(c.GWIP, apiRelayPort)
	if err := c.GW.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return }); err != nil {
		c.t.Fatalf("API proxy in %s: %v", c.GW.Name, err)
	}
	// Handlers run on ordinary goroutines: they dial the API server in the
	// root namespace, where it listens on loopback.
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	c.t.Cleanup(func() { _ = srv.Close() })
	c.dnatService(svc, 443, c.GWIP, apiRelayPort, "tcp")
	return caPEM
}

// serviceCert makes a CA and a serving certificate for ip signed by it.
func serviceCert(ip netip.Addr) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clusterlab api-service CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{ip.AsSlice()},
		DNSNames: []string{"kubernetes.default.svc"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
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
`, domain, c.Kubeconfig(ns))
	conf := filepath.Join(d.Dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		c.t.Fatal(err)
	}
	d.Proc = Start(c.t, ns, d.Name, CoreDNSBinary(c.t), "-conf", conf)
	c.dnatService(d.ServiceIP, 53, ip, 53, "udp", "tcp")
	d.waitReady(c.t, 53, 20*time.Second)
	return d
}

// KubelinkDNS is the kubelink DNS of a cluster: the meshdns controller (in
// process) and the kubelink CoreDNS serving what it writes.
type KubelinkDNS struct {
	*DNSServer
	Controller *meshdns.Controller
	log        *syncBuffer
}

// ControllerLog is what the meshdns controller logged.
func (k *KubelinkDNS) ControllerLog() string { return k.log.String() }

// StartKubelinkDNS runs the meshdns controller in mode (dns or kubernetes)
// against the cluster's API server and a CoreDNS that serves the Corefile
// from its Secret, at service CIDR + 11 (53 → 8053 as the Service maps it).
//
// The Secret volume is played by a goroutine that copies the Secret's
// Corefile and kubeconfig to files whenever they change; CoreDNS's reload
// picks them up. CoreDNS runs in a private mount namespace where that
// directory is mounted at /etc/coredns (the path the rendered Corefile
// names) and, in kubernetes mode, a service account token of the cluster is
// mounted where the kubernetes plugin's in-cluster configuration finds it
// (for the block of the local cluster).
func (c *Cluster) StartKubelinkDNS(mode string) *KubelinkDNS {
	c.t.Helper()
	return c.startKubelinkDNS(mode, false)
}

// StartKubelinkDNSGated is StartKubelinkDNS in dns mode with meshdns
// --link-gate: every link's block stays, behind the kubelinkgate plugin,
// which reads KubeLinks with the pod's service account.
func (c *Cluster) StartKubelinkDNSGated() *KubelinkDNS {
	c.t.Helper()
	return c.startKubelinkDNS(meshdns.ModeDNS, true)
}

func (c *Cluster) startKubelinkDNS(mode string, gate bool) *KubelinkDNS {
	c.t.Helper()
	t := c.t
	ns, ip := c.attachPod("kdns", 4)
	k := &KubelinkDNS{DNSServer: &DNSServer{Name: "kubelink DNS " + c.Name, NS: ns, PodIP: ip, ServiceIP: c.KubelinkDNSIP(), Dir: t.TempDir()},
		log: &syncBuffer{}}

	cfg := meshdns.Defaults()
	cfg.Mode, cfg.ServiceCIDR, cfg.Namespace = mode, c.ServiceCIDR, Namespace
	cfg.MetricsAddr, cfg.Resync = "", 2*time.Second
	cfg.LinkGate = gate
	ctrl, err := meshdns.New(cfg, c.Plane.Config(), slog.New(slog.NewTextHandler(k.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	k.Controller = ctrl
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- ctrl.Run(ctx) }()
	copied := make(chan struct{})
	go k.copySecret(ctx, c, copied)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("meshdns controller: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("meshdns controller did not stop within 10s")
		}
		if t.Failed() {
			t.Logf("---- meshdns controller %s ----\n%s", c.Name, k.log.String())
		}
	})
	select {
	case <-copied:
	case err := <-ran:
		t.Fatalf("meshdns controller ended: %v\n%s", err, k.log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("no Secret %s/%s within 20s\n%s", Namespace, cfg.Secret, k.log.String())
	}

	// The mount namespace of the "pod": /etc/coredns is the Secret volume;
	// /var/run/secrets/kubernetes.io/serviceaccount the service account.
	script := fmt.Sprintf("set -e; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /etc; mkdir /etc/coredns; mount --bind %q /etc/coredns; ", k.Dir)
	var env []string
	if mode == meshdns.ModeKubernetes || gate {
		sa := filepath.Join(t.TempDir(), "serviceaccount")
		must(t, os.MkdirAll(sa, 0o755))
		must(t, os.WriteFile(filepath.Join(sa, "token"), []byte(c.DNSToken()), 0o600))
		must(t, os.WriteFile(filepath.Join(sa, "ca.crt"), c.CAData(), 0o644))
		must(t, os.WriteFile(filepath.Join(sa, "namespace"), []byte(Namespace), 0o644))
		host, port := c.apiInNamespace(ns)
		env = []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port}
		script += fmt.Sprintf("mkdir -p /run/secrets/kubernetes.io; mount --bind %q /run/secrets/kubernetes.io; ", filepath.Dir(sa))
	}
	script += fmt.Sprintf("exec %q -conf /etc/coredns/Corefile", CoreDNSBinary(t))
	args := append(env, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	k.Proc = Start(t, ns, k.Name, "env", args...)
	c.dnatService(k.ServiceIP, 53, ip, meshdns.DefaultPort, "udp", "tcp")
	k.waitReady(t, meshdns.DefaultPort, 20*time.Second)
	return k
}

// apiInNamespace returns host and port at which the API server is reached
// from inside ns (the loopback relay of c.Kubeconfig).
func (c *Cluster) apiInNamespace(ns *nstest.Namespace) (string, string) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig(ns))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		u, err := url.Parse(cl.Server)
		if err != nil {
			c.t.Fatal(err)
		}
		return u.Hostname(), u.Port()
	}
	c.t.Fatal("kubeconfig without clusters")
	return "", ""
}

// copySecret copies the controller's Secret to k.Dir whenever it changes
// (atomically, as the kubelet updates a Secret volume); the first copy closes
// first.
func (k *KubelinkDNS) copySecret(ctx context.Context, c *Cluster, first chan struct{}) {
	var last map[string][]byte
	once := sync.Once{}
	for {
		var s corev1.Secret
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Kube.Get(gctx, client.ObjectKey{Namespace: Namespace, Name: "kubelink-coredns"}, &s)
		cancel()
		if err == nil && s.Data[meshdns.SecretKeyCorefile] != nil && !sameData(s.Data, last) {
			ok := true
			for _, key := range []string{meshdns.SecretKeyKubeconfig, meshdns.SecretKeyCorefile} {
				if err := writeAtomic(filepath.Join(k.Dir, key), s.Data[key]); err != nil {
					fmt.Fprintf(k.log, "copying Secret key %s: %v\n", key, err)
					ok = false
				}
			}
			if ok {
				last = s.Data
				once.Do(func() { close(first) })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sameData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
