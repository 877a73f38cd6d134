package clusterlab

// The mesh-global DNS in the harness: our CoreDNS build with the
// kubelinkglobal plugin (lib/globaldns), serving svc.global.<mesh-domain>
// from the CoreDNSEntry objects of the hosting cluster's API server, at that
// cluster's service CIDR + 12 (the original's kubelink-globaldns Service).

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/crds"
	corednsv1alpha1 "github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
	"github.com/kubelink/kubelink/lib/meshdns"
	"github.com/kubelink/kubelink/lib/testenv"
)

// globalDNSOffset is the offset of the mesh-global DNS Service in the
// hosting cluster's service CIDR.
const globalDNSOffset = 12

// GlobalDNSIP is the mesh-global DNS Service IP (service CIDR + 12).
func (c *Cluster) GlobalDNSIP() netip.Addr { return c.ServiceAddr(globalDNSOffset) }

var (
	globalBinOnce sync.Once
	globalBinErr  error
)

// GlobalCoreDNSBinary is CoreDNSBinary, made sure to be the current build
// with the kubelinkglobal plugin: lab/scripts/coredns-bin.sh runs once per
// test process and rebuilds when its stamp (a hash of the plugin and build
// sources) differs; a cached build without the plugin has no stamp.
func GlobalCoreDNSBinary(t testing.TB) string {
	t.Helper()
	globalBinOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			globalBinErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(root, "lab/scripts/coredns-bin.sh")).CombinedOutput()
		if err != nil {
			globalBinErr = fmt.Errorf("building CoreDNS: %v\n%s", err, out)
		}
	})
	if globalBinErr != nil {
		t.Fatal(globalBinErr)
	}
	return filepath.Join(testenv.CacheDir(), "bin", "coredns-"+meshdns.CoreDNSVersion, "coredns")
}

// InstallCoreDNSEntryCRD installs the CoreDNSEntry CRD into the cluster's API
// server (waiting until it is served) and returns a client that knows the
// type.
func (c *Cluster) InstallCoreDNSEntryCRD() client.Client {
	c.t.Helper()
	testenv.InstallCRDs(c.t, c.Plane.Config(), "cluster "+c.Name+": CoreDNSEntry", crds.CRDs)
	s := runtime.NewScheme()
	must(c.t, corednsv1alpha1.AddToScheme(s))
	cl, err := client.New(c.Plane.Config(), client.Options{Scheme: s})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// StartGlobalDNS runs the mesh-global DNS for the mesh domain in the cluster:
// our CoreDNS with kubelinkglobal serving svc.global.<domain> from the
// cluster's CoreDNSEntry objects (admin kubeconfig), behind service CIDR +
// 12. The CRD must be installed (InstallCoreDNSEntryCRD).
func (c *Cluster) StartGlobalDNS(domain string) *DNSServer {
	c.t.Helper()
	ns, ip := c.attachPod("gdns", 5)
	d := &DNSServer{Name: "global DNS " + c.Name, NS: ns, PodIP: ip, ServiceIP: c.GlobalDNSIP(), Dir: c.t.TempDir()}
	corefile := fmt.Sprintf(`.:53 {
    errors
    ready 127.0.0.1:8181
    kubelinkglobal svc.global.%s {
        kubeconfig %s
        ttl 2
    }
}
`, domain, c.Kubeconfig(ns))
	conf := filepath.Join(d.Dir, "Corefile")
	must(c.t, os.WriteFile(conf, []byte(corefile), 0o644))
	d.Proc = Start(c.t, ns, d.Name, GlobalCoreDNSBinary(c.t), "-conf", conf)
	c.dnatService(d.ServiceIP, 53, ip, 53, "udp", "tcp")
	d.waitReady(c.t, 53, 20*time.Second)
	return d
}
