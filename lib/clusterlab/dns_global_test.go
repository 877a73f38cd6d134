package clusterlab

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	corednsv1alpha1 "github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
	"github.com/kubelink/kubelink/lib/meshdns"
)

// TestMeshDNSGlobal: the mesh-global DNS (our CoreDNS with kubelinkglobal)
// runs in cluster A at A's service CIDR + 12 and serves svc.global.kubelink
// from A's CoreDNSEntry objects; both LocalLinks name it as dns.dnsIP. A
// global name then resolves through each cluster's own kubelink DNS, from
// A's pod and from B's pod (whose query crosses the mesh to A); an unknown
// global name is NXDOMAIN; a deleted entry is gone within seconds.
func TestMeshDNSGlobal(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	const name = "foo.svc.global.kubelink"
	want := b.ServiceAddr(20) // 100.64.16.20: any address; the test only resolves it

	entries := a.InstallCoreDNSEntryCRD()
	gdns := a.StartGlobalDNS("kubelink")
	aDNS := a.StartKubelinkDNS(meshdns.ModeDNS)
	bDNS := b.StartKubelinkDNS(meshdns.ModeDNS)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)

	globalIP := a.GlobalDNSIP().String()
	local := func(c *Cluster) *v1alpha1.KubeLink {
		l := c.LocalLink()
		l.Spec.DNS = &v1alpha1.KubeLinkDNS{DNSIP: globalIP}
		return l
	}
	a.Apply(local(a), b.LinkTo())
	b.Apply(local(b), a.LinkTo())
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	b.WaitState("a", v1alpha1.StateUp, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	foo := &corednsv1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "foo"},
		Spec: corednsv1alpha1.CoreDNSEntrySpec{DNSNames: []string{name}, A: []string{want.String()}}}
	created := time.Now()
	if err := entries.Create(ctx, foo); err != nil {
		t.Fatal(err)
	}

	// The global DNS itself, from A's pod through its Service.
	waitFor(t, name+" at the global DNS", 10*time.Second, func() bool {
		ip, err := LookupA(a.Pod, gdns.Service(), name, 500*time.Millisecond)
		return err == nil && ip == want
	})
	// From both clusters, each through its own kubelink DNS.
	for _, pc := range []struct {
		c    *Cluster
		kdns *KubelinkDNS
	}{{a, aDNS}, {b, bDNS}} {
		var ip netip.Addr
		var err error
		waitFor(t, name+" from "+pc.c.Name+"'s pod", 15*time.Second, func() bool {
			ip, err = LookupA(pc.c.Pod, pc.kdns.Service(), name, 500*time.Millisecond)
			return err == nil && ip == want
		})
		t.Logf("%s's pod: %s -> %s via %s (%s after the entry was created)", pc.c.Name, name, ip, pc.kdns.Service(),
			time.Since(created).Round(time.Millisecond))
		// An unknown global name does not exist.
		r, err := Resolve(pc.c.Pod, pc.kdns.Service(), "bar.svc.global.kubelink", time.Second)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Errorf("%s's pod: bar.svc.global.kubelink = %v, %v; want NXDOMAIN", pc.c.Name, r, err)
		}
	}

	// The plugin reports the entry Ok.
	waitFor(t, "status Ok of CoreDNSEntry foo", 10*time.Second, func() bool {
		var e corednsv1alpha1.CoreDNSEntry
		return entries.Get(ctx, client.ObjectKeyFromObject(foo), &e) == nil && e.Status.State == corednsv1alpha1.StateOk
	})

	// Deleting the entry: the name is gone from both clusters within a few
	// seconds (plugin TTL 2 s, kubelink DNS cache 5 s).
	if err := entries.Delete(ctx, foo); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	for _, pc := range []struct {
		c    *Cluster
		kdns *KubelinkDNS
	}{{a, aDNS}, {b, bDNS}} {
		waitFor(t, name+" NXDOMAIN from "+pc.c.Name+"'s pod after the delete", 10*time.Second-time.Since(deleted), func() bool {
			return IsNXDomain(pc.c.Pod, pc.kdns.Service(), name, 500*time.Millisecond)
		})
		t.Logf("%s's pod: %s gone %s after the delete", pc.c.Name, name, time.Since(deleted).Round(time.Millisecond))
	}
	if t.Failed() {
		t.Logf("global DNS output:\n%s", lastLines(gdns.Proc.Output(), 20))
	}
}
