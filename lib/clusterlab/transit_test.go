package clusterlab

import (
	"context"
	"k8s.io/client-go/util/retry"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// transitLinkTo is the KubeLink by which a cluster reaches c through its
// link gateway: no endpoint and no key, only c's addresses.
func transitLinkTo(c *Cluster, gateway string) *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: c.Name}, Spec: v1alpha1.KubeLinkSpec{
		ClusterAddress: c.MeshAddress.String(), CIDR: c.ServiceCIDR.String(), GatewayLink: gateway}}
}

// Transit through a gatewayLink (one hop), in both data planes: A links to
// B directly and to C with gatewayLink b; C links to B directly and to A
// with gatewayLink b; B links to A and C directly. A and C cannot reach
// each other on the "internet" (their gateways drop each other's
// addresses), so everything between them goes through B's broker.
func TestTransitThroughGatewayLink(t *testing.T) {
	for _, mode := range []string{"wireguard", "bridge"} {
		t.Run(mode, func(t *testing.T) { testTransit(t, mode) })
	}
}

func testTransit(t *testing.T, mode string) {
	t.Parallel()
	lab := New(t, 3)
	a, b, c := lab.Clusters[0], lab.Clusters[1], lab.Clusters[2]
	for _, p := range [][2]*Cluster{{a, c}, {c, a}} {
		p[0].GW.Run(t, "iptables", "-A", "OUTPUT", "-d", p[1].InetIP.String(), "-j", "DROP")
		p[0].GW.Run(t, "iptables", "-A", "INPUT", "-s", p[1].InetIP.String(), "-j", "DROP")
	}
	linkTo := (*Cluster).LinkTo
	var ca *BridgeCA
	if mode == "bridge" {
		linkTo, ca = BridgeLinkTo, NewBridgeCA(t)
	}
	for _, cl := range lab.Clusters {
		cl.StartRouter(lab)
		if ca != nil {
			cl.StartBroker(lab, cl.GW, BridgeFlags(ca.CertDir(t, cl))...)
		} else {
			cl.StartBroker(lab, cl.GW)
		}
	}

	applied := time.Now()
	a.Apply(a.LocalLink(), linkTo(b), transitLinkTo(c, "b"))
	b.Apply(b.LocalLink(), linkTo(a), linkTo(c))
	c.Apply(c.LocalLink(), linkTo(b), transitLinkTo(a, "b"))

	// B forwards without SNAT: C sees A's cluster address and vice versa.
	body, took := WaitGet(t, a.Pod, c.ServiceIP, 15*time.Second)
	if !strings.Contains(body, "echo c from 192.168.0.11:") {
		t.Errorf("A -> C answered %q; want C's echo seeing A's cluster address", body)
	}
	t.Logf("%s: A pod -> C ClusterIP through B worked %s after apply (%s of retries)", mode, time.Since(applied).Round(time.Millisecond), took.Round(time.Millisecond))
	if body, _ := WaitGet(t, c.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 192.168.0.13:") {
		t.Errorf("C -> A answered %q; want A's echo seeing C's cluster address", body)
	}
	// The direct links keep working next to the transit.
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, c.Pod, b.ServiceIP, 5*time.Second)

	// Status: the transit links are Up because the probe answers through
	// B, and say so.
	for _, s := range []struct {
		cl   *Cluster
		link string
	}{{a, "c"}, {c, "a"}, {a, "b"}, {c, "b"}, {b, "a"}, {b, "c"}} {
		_, kl := s.cl.WaitState(s.link, v1alpha1.StateUp, 5*time.Second)
		if s.cl != b && s.link != "b" && !strings.Contains(kl.Status.Message, "through gatewayLink b") {
			t.Errorf("cluster %s, link %s: message %q does not name the gatewayLink", s.cl.Name, s.link, kl.Status.Message)
		}
	}

	// B's ingress rule for A restricts what A reaches in B, but transit to
	// C is C's business and passes B's firewall.
	updateLink(t, b, "a", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = []string{b.ServiceCIDR.String()} })
	waitFor(t, "B to drop A's traffic to B's cluster address", 5*time.Second, func() bool { return dialResult(a.Pod, "192.168.0.12:80") == "dropped" })
	if got := dialResult(a.Pod, c.ServiceIP.String()); got != "ok" {
		t.Errorf("A -> C through B with B's ingress rule for A: %s, want ok", got)
	}
	if got := dialResult(a.Pod, b.ServiceIP.String()); got != "ok" {
		t.Errorf("A -> B's ClusterIP with B's ingress rule for A: %s, want ok", got)
	}
	updateLink(t, b, "a", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = nil })

	// C's ingress rule for A applies to A's transit traffic (arriving
	// from B's peer), not to B's own traffic.
	updateLink(t, c, "a", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = []string{"!" + c.ServiceIP.Addr().String()} })
	waitFor(t, "C to drop A's transit traffic to its ClusterIP", 5*time.Second, func() bool { return dialResult(a.Pod, c.ServiceIP.String()) == "dropped" })
	if got := dialResult(b.Pod, c.ServiceIP.String()); got != "ok" {
		t.Errorf("B -> C after C denied A: %s, want ok", got)
	}
	// A's transit link stays Up all through a window longer than the
	// probe timeout (the probe is A's own, not denied).
	holdsFor(t, "A's link c Up after C denied A's transit traffic", 2*time.Second, func() bool { return linkIs(a, "c", v1alpha1.StateUp) })
	updateLink(t, c, "a", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = nil })
	WaitGet(t, a.Pod, c.ServiceIP, 5*time.Second)

	// Without B's link to C the transit is gone: A's transit link leaves
	// Up (the probe through B gets no answer) while A's link to B stays Up;
	// with the link back, the transit link is Up again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bc, err := b.Link("c")
	must(t, err)
	must(t, b.Kube.Delete(ctx, bc))
	deleted := time.Now()
	var gone *v1alpha1.KubeLink
	waitFor(t, "A's transit link to C to leave Up", 4*time.Second, func() bool {
		kl, err := a.Link("c")
		gone = kl
		return err == nil && kl.Status.State != v1alpha1.StateUp
	})
	t.Logf("%s: B's link to C deleted: A's link c is %s after %s (%s)", mode, gone.Status.State, time.Since(deleted).Round(time.Millisecond), gone.Status.Message)
	if gone.Status.State != v1alpha1.StateDown || !strings.Contains(gone.Status.Message, "through gatewayLink b") {
		t.Errorf("A's link c: %s %q, want Down through gatewayLink b", gone.Status.State, gone.Status.Message)
	}
	if _, err := Get(a.Pod, c.ServiceIP, "/", 500*time.Millisecond); err == nil {
		t.Error("A still reaches C without B's link to C")
	}
	a.WaitState("b", v1alpha1.StateUp, time.Second)
	b.Apply(linkTo(c))
	up, _ := a.WaitState("c", v1alpha1.StateUp, 10*time.Second)
	t.Logf("%s: B's link to C re-created: A's link c Up after %s", mode, up.Round(time.Millisecond))
	WaitGet(t, a.Pod, c.ServiceIP, 5*time.Second)
	WaitGet(t, c.Pod, a.ServiceIP, 5*time.Second)
}

// updateLink changes a KubeLink of cl in place.
func updateLink(t *testing.T, cl *Cluster, name string, change func(*v1alpha1.KubeLink)) {
	t.Helper()
	// The broker writes the status in between (a new resourceVersion):
	// read, change and write again on a conflict, as any client must.
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		kl, err := cl.Link(name)
		if err != nil {
			return err
		}
		change(kl)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.Kube.Update(ctx, kl)
	}))
}
