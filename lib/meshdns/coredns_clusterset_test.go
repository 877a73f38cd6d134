package meshdns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/mcs"
	"github.com/kubelink/kubelink/lib/testenv"
)

// TestCoreDNSClusterSetZone runs the real CoreDNS with the clusterset block
// that kubelink-meshdns renders (--clusterset-zone) against a real API
// server with the upstream MCS CRDs, as the chart's kubelink-coredns
// account (its RBAC, its token): a ServiceImport as kubelink-mcs writes it
// answers <svc>.<ns>.svc.clusterset.local with its IP (A) and its named
// ports (SRV); a name no cluster exports is NXDOMAIN; the name is gone
// within 3 s of the ServiceImport's deletion (the block caches nothing;
// the informer follows within milliseconds, the bound is generous so that
// it never flakes), and the mesh zone keeps answering beside it.
func TestCoreDNSClusterSetZone(t *testing.T) {
	cp := &testenv.ControlPlane{Name: t.Name()}
	testenv.StartControlPlaneForTest(t, cp)
	testenv.InstallCRDs(t, cp.Config(), "MCS", mcs.CRDs)
	scheme, err := mcs.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ns := range []string{"kubelink", "shop"} {
		if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	// exactly the chart's permissions (mcs on, its default)
	if err := testenv.CreateObjects(ctx, kube, testenv.ChartRBAC(t, nil)...); err != nil {
		t.Fatal(err)
	}
	asCoreDNS, err := cp.ServiceAccountConfig(ctx, "kubelink", "kubelink-coredns")
	if err != nil {
		t.Fatal(err)
	}
	// an application Service that is not exported: no clusterset name
	local := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "private"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if err := kube.Create(ctx, local); err != nil {
		t.Fatal(err)
	}
	si := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.0.0.77"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Name: "https", Protocol: corev1.ProtocolTCP, Port: 443}}}}
	if err := kube.Create(ctx, si); err != nil {
		t.Fatal(err)
	}

	port, health, ready := freePort(t), freePort(t), freePort(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	in := Input{Mode: ModeDNS, ClusterSetZone: ClusterSetZone,
		ClusterSetAPI: &Cluster{Name: "local", Context: "local", APIServer: cp.Config().Host, Token: asCoreDNS.BearerToken, CA: cp.Config().CAData},
		Port:          port, Bind: "127.0.0.1", KubeconfigPath: kubeconfig,
		HealthAddr: fmt.Sprintf("127.0.0.1:%d", health), ReadyAddr: fmt.Sprintf("127.0.0.1:%d", ready),
		Meshes: []MeshInput{{Name: "default", Domain: "kubelink"}}}
	out, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, out.Kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cd := startCoreDNS(t, out.Corefile, port, fmt.Sprintf("127.0.0.1:%d", ready))

	const name = "cart.shop.svc.clusterset.local."
	took := cd.waitFor(t, name, 10*time.Second, "resolved to the ServiceImport's IP", resolvesTo(name, "10.0.0.77"))
	t.Logf("A answered %s after ready", took.Round(time.Millisecond))
	srv, err := cd.queryType("_https._tcp."+name, dns.TypeSRV)
	if err != nil || srv.Rcode != dns.RcodeSuccess || len(srv.Answer) != 1 {
		t.Fatalf("SRV _https._tcp: err %v, answer %v; want one record", err, srv)
	}
	if s, ok := srv.Answer[0].(*dns.SRV); !ok || s.Port != 443 || s.Target != name {
		t.Errorf("SRV _https._tcp = %v, want port 443 at %s", srv.Answer[0], name)
	}
	all, err := cd.queryType(name, dns.TypeSRV)
	if err != nil || len(all.Answer) != 2 {
		t.Errorf("SRV of the name: err %v, answer %v; want both ports", err, all)
	}
	for _, n := range []string{"private.shop.svc.clusterset.local.", "cart.other.svc.clusterset.local.", "x.cart.shop.svc.clusterset.local."} {
		if r, err := cd.query(n); err != nil || r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: err %v, answer %v; want NXDOMAIN (not exported)", n, err, r)
		}
	}
	// the mesh zone beside it still answers (NXDOMAIN for an unknown cluster)
	if r, err := cd.query("x.shop.svc.nosuch.kubelink."); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("mesh zone: err %v, answer %v; want NXDOMAIN", err, r)
	}

	if err := kube.Delete(ctx, si); err != nil {
		t.Fatal(err)
	}
	took = cd.waitFor(t, name, 3*time.Second, "gone after the ServiceImport's deletion", gone)
	t.Logf("gone %s after the ServiceImport's deletion", took.Round(time.Millisecond))
}
