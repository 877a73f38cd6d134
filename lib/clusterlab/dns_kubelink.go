package clusterlab

// The kubelink DNS of a simulated cluster: kubelink-meshdns rendering the
// Corefile and a CoreDNS serving it, as deployed.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/meshdns"
	"github.com/kubelink/kubelink/lib/nstest"
)

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
