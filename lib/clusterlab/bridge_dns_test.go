package clusterlab

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/meshdns"
)

// Bridge mode with DNS advertisement. B's cluster DNS serves the domain
// b.internal at B's service CIDR + 53, not at the defaults (cluster.local
// at + 10, where nothing answers). B's broker announces both, and the
// NodePort-style port 30088, in its HELLO. A's link to B has no spec.dns:
// it gets B's announcement in status.advertised, and A's mesh DNS forwards
// b.kubelink there, so echo.default.svc.b.kubelink resolves and answers.
// A spec.dns.dnsIP then wins over the advertised IP; when B's broker dies
// the advertisement leaves the status and the name stops resolving.
func TestBridgeDNSAdvertisement(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	bDNSIP := b.ServiceAddr(53)
	bDNS := b.StartClusterDNSAt("b.internal", bDNSIP)
	if ip, err := LookupA(b.Pod, bDNS.Service(), "echo.default.svc.b.internal", time.Second); err != nil || ip != b.ServiceIP.Addr() {
		t.Fatalf("B cluster DNS: echo.default.svc.b.internal = %v, %v; want %s", ip, err, b.ServiceIP.Addr())
	}
	kdns := a.StartKubelinkDNS(meshdns.ModeDNS)
	server := kdns.Service()

	ca := NewBridgeCA(t)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, append(BridgeFlags(ca.CertDir(t, a)), "--dns-advertisement")...)
	bBroker := b.StartBroker(lab, b.GW, append(BridgeFlags(ca.CertDir(t, b)), "--dns-advertisement",
		"--cluster-domain", "b.internal", "--dns-service-ip", bDNSIP.String(), "--advertised-port", "30088")...)
	applied := time.Now()
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))

	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	want := v1alpha1.AdvertisedInfo{ClusterDomain: "b.internal", DNSIP: bDNSIP.String(), Port: 30088}
	waitAdvertised(t, a, "b", &want, 5*time.Second)
	// A announces the defaults: its service CIDR + 10, cluster.local and
	// the bridge port.
	waitAdvertised(t, b, "a", &v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local", DNSIP: a.ClusterDNSIP().String(), Port: 8088}, 5*time.Second)
	kl, err := a.Link("b")
	must(t, err)
	if kl.Spec.DNS != nil {
		t.Fatalf("A's link b has spec.dns %+v; the test needs none", kl.Spec.DNS)
	}

	corefile := waitCorefile(t, a, "b.kubelink served from the advertisement", 5*time.Second, func(c string) bool {
		return strings.Contains(c, "forward . "+bDNSIP.String()) && strings.Contains(c, `{1}.b.internal.`)
	})
	if strings.Contains(corefile, "forward . "+b.ClusterDNSIP().String()) || strings.Contains(corefile, `\.b\.kubelink\.$ {1}.cluster.local.`) {
		t.Errorf("the Corefile still uses B's defaults:\n%s", corefile)
	}
	took := waitResolves(t, a, server, b.ServiceIP.Addr(), 10*time.Second)
	t.Logf("%s -> %s with B's advertised DNS (%s, %s) %s after apply (%s of retries)", meshName, b.ServiceIP.Addr(), want.DNSIP,
		want.ClusterDomain, time.Since(applied).Round(time.Millisecond), took.Round(time.Millisecond))
	getByName(t, a, server)

	// spec.dns.dnsIP wins over the advertisement; the domain, not set in
	// the spec, still comes from it.
	updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) { kl.Spec.DNS = &v1alpha1.KubeLinkDNS{DNSIP: b.ClusterDNSIP().String()} })
	waitCorefile(t, a, "spec.dns.dnsIP to win over the advertised IP", 5*time.Second, func(c string) bool {
		return strings.Contains(c, "forward . "+b.ClusterDNSIP().String()) && !strings.Contains(c, "forward . "+bDNSIP.String()) &&
			strings.Contains(c, `{1}.b.internal.`)
	})
	updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) { kl.Spec.DNS = nil })
	waitCorefile(t, a, "the advertised IP back after spec.dns is removed", 5*time.Second, func(c string) bool {
		return strings.Contains(c, "forward . "+bDNSIP.String())
	})
	waitResolves(t, a, server, b.ServiceIP.Addr(), 10*time.Second)

	// The advertisement lasts as long as the connection.
	bBroker.Kill()
	killed := time.Now()
	waitAdvertised(t, a, "b", nil, 3*time.Second)
	cleared := time.Since(killed)
	waitFor(t, meshName+" to be NXDOMAIN after B's broker died", 8*time.Second, func() bool { return IsNXDomain(a.Pod, server, meshName, 300*time.Millisecond) })
	t.Logf("B's broker killed: status.advertised gone after %s, the name after %s", cleared.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
}

// waitAdvertised waits until the status.advertised of link name in c is
// want (nil: absent).
func waitAdvertised(t *testing.T, c *Cluster, name string, want *v1alpha1.AdvertisedInfo, limit time.Duration) {
	t.Helper()
	var last *v1alpha1.AdvertisedInfo
	deadline := time.Now().Add(limit)
	for {
		if kl, err := c.Link(name); err == nil {
			last = kl.Status.Advertised
			if (last == nil) == (want == nil) && (last == nil || *last == *want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %s: status.advertised of link %s is %+v after %s, want %+v", c.Name, name, last, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCorefile waits until the Corefile meshdns wrote in c satisfies cond
// and returns it.
func waitCorefile(t *testing.T, c *Cluster, what string, limit time.Duration, cond func(string) bool) string {
	t.Helper()
	var last string
	deadline := time.Now().Add(limit)
	for {
		var s corev1.Secret
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "kubelink-coredns"}, &s)
		cancel()
		if err == nil {
			last = string(s.Data[meshdns.SecretKeyCorefile])
			if cond(last) {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %s: Corefile not as wanted (%s) within %s:\n%s", c.Name, what, limit, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
