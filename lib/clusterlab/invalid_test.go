package clusterlab

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// dropValidation replaces the KubeLink schema by an open one, as on a cluster
// that still has an old CRD: then the broker is the only line of defence.
func dropValidation(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var crd apiextensionsv1.CustomResourceDefinition
	must(t, c.Kube.Get(ctx, client.ObjectKey{Name: "kubelinks.kubelink.mandelsoft.org"}, &crd))
	yes := true
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &yes}
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.XValidations = nil
	must(t, c.Kube.Update(ctx, &crd))
	waitFor(t, "the open schema to be served", 10*time.Second, func() bool {
		probe := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "schema-probe"}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "x", Endpoint: "e"}}
		if err := c.Kube.Create(ctx, probe); err != nil {
			return false
		}
		_ = c.Kube.Delete(ctx, probe)
		return true
	})
}

func kl(name string, s v1alpha1.KubeLinkSpec) *v1alpha1.KubeLink {
	return &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: s}
}

// Bad links get Invalid (their own attributes) or Stale (the mesh setup) or
// Error (local problems) with a message and an Event; the broker keeps
// serving the good link.
func TestInvalidLinksAreReportedAndOthersKeepWorking(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	dropValidation(t, a)
	// a's broker and router know a's pod network, as the chart tells them:
	// links that claim it (or the node network) are Stale.
	a.StartRouter(lab, "--pod-cidr", a.PodCIDR.String())
	b.StartRouter(lab)
	brokerA := a.StartBroker(lab, a.GW, "--pod-cidr", a.PodCIDR.String())
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)

	key := b.PublicKey().String()
	bad := []struct {
		link    *v1alpha1.KubeLink
		state   string
		message string
	}{
		{kl("bad-cidr", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.20/24", CIDR: "100.64.300.0/20", Endpoint: "c.example.org", PublicKey: key}), v1alpha1.StateInvalid, "spec.cidr"},
		{kl("host-bits", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.21/24", CIDR: "100.64.48.1/20", Endpoint: "c.example.org"}), v1alpha1.StateInvalid, "did you mean 100.64.48.0/20"},
		{kl("no-prefix", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.22", Endpoint: "c.example.org"}), v1alpha1.StateInvalid, "with the mesh prefix length"},
		{kl("bad-key", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.23/24", Endpoint: "c.example.org", PublicKey: "not-a-key"}), v1alpha1.StateInvalid, "spec.publicKey"},
		{kl("garbage-endpoint", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.24/24", Endpoint: "exa mple:99999"}), v1alpha1.StateInvalid, "spec.endpoint"},
		{kl("no-endpoint", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.25/24"}), v1alpha1.StateInvalid, "spec.endpoint: is required"},
		{kl("local-egress", v1alpha1.KubeLinkSpec{ClusterAddress: "10.201.0.1/24", Endpoint: "LocalLink", Egress: []string{"10.0.0.0/8"}}), v1alpha1.StateInvalid, "not allowed on a LocalLink"},
		{kl("overlap", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.26/24", CIDR: "100.64.16.0/21", Endpoint: "c.example.org", PublicKey: "0hNZgTv4lV2YkRB3O7nUoQ8xh0xHkqOQp2G0kYQ3yFw="}), v1alpha1.StateStale, "overlaps 100.64.16.0/20 of link b"},
		{kl("unknown--c", v1alpha1.KubeLinkSpec{ClusterAddress: "10.202.0.2/24", Endpoint: "c.example.org"}), v1alpha1.StateStale, `no LocalLink for mesh "unknown"`},
		{kl("outside", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.1.27/24", Endpoint: "c.example.org"}), v1alpha1.StateStale, "is not in the network 192.168.0.0/24"},
		{kl("duplicate", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", Endpoint: "c.example.org"}), v1alpha1.StateStale, "already used by link b"},
		{kl("second-local", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.30/24", Endpoint: "LocalLink"}), v1alpha1.StateStale, "already defined by the older LocalLink a"},
		{kl("bad-gateway", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.31/24", GatewayLink: "nope"}), v1alpha1.StateStale, "gatewayLink nope does not exist"},
		{kl("no-key", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.32/24", CIDR: "100.64.64.0/20", Endpoint: "c.example.org"}), v1alpha1.StateError, "spec.publicKey is required in WireGuard mode"},
		// Hostile or foreign-family input (the CRD rejects it; this cluster's
		// open schema lets it through): Invalid or Stale, never in a rule.
		{kl("ipv6-cidr", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.40/24", CIDR: "fd00:50::/64", Endpoint: "c.example.org", PublicKey: key}), v1alpha1.StateInvalid, "spec.cidr: \"fd00:50::/64\" is not IPv4"},
		{kl("ipv6-address", v1alpha1.KubeLinkSpec{ClusterAddress: "fd00:1::12/64", Endpoint: "c.example.org"}), v1alpha1.StateInvalid, "spec.clusterAddress: \"fd00:1::12/64\" is not IPv4"},
		{kl("ipv6-ingress", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.41/24", Endpoint: "c.example.org", Ingress: []string{"fd00::/8"}}), v1alpha1.StateInvalid, "spec.ingress"},
		{kl("huge-mesh", v1alpha1.KubeLinkSpec{ClusterAddress: "16.0.0.2/4", Endpoint: "c.example.org"}), v1alpha1.StateInvalid, "/16 to /31"},
		{kl("egress-mesh", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.42/24", Endpoint: "c.example.org", Egress: []string{"192.168.0.0/16"}}), v1alpha1.StateStale, "covers the network 192.168.0.0/24"},
		{kl("egress-member", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.43/24", Endpoint: "c.example.org", Egress: []string{"192.168.0.12"}}), v1alpha1.StateStale, "contains the cluster address 192.168.0.12 of link b"},
		// A peer may not claim this cluster's own networks: its routes would
		// send a's node or pod traffic (or instance metadata) into the tunnel.
		{kl("node-network", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.44/24", CIDR: "10.10.0.128/25", Endpoint: "c.example.org", PublicKey: key}), v1alpha1.StateStale, "10.10.0.128/25 overlaps the node network 10.10.0.0/24 of this cluster"},
		{kl("pod-network", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.45/24", Endpoint: "c.example.org", PublicKey: key, Egress: []string{"10.110.5.0/24"}}), v1alpha1.StateStale, "10.110.5.0/24 overlaps the pod network 10.110.0.0/16 of this cluster"},
		{kl("metadata", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.46/24", Endpoint: "c.example.org", PublicKey: key, Egress: []string{"169.254.169.254/32"}}), v1alpha1.StateStale, "overlaps the link-local network 169.254.0.0/16"},
		{kl("unresolvable", v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.33/24", CIDR: "100.64.80.0/20", Endpoint: "does-not-exist.invalid:8777", PublicKey: "Yy9nYWhHZmVkY2JhMDEyMzQ1Njc4OWFiY2RlZmdoaWo="}), v1alpha1.StateError, "does-not-exist.invalid"},
	}
	for _, c := range bad {
		a.Apply(c.link)
	}
	for _, c := range bad {
		_, got := a.WaitState(c.link.Name, c.state, 10*time.Second)
		if !strings.Contains(got.Status.Message, c.message) {
			t.Errorf("%s: %s %q, want message with %q", c.link.Name, got.Status.State, got.Status.Message, c.message)
		}
	}

	// Every verdict came with a warning Event on the object.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(t, "Events for the bad links", 10*time.Second, func() bool {
		var events corev1.EventList
		if err := a.Kube.List(ctx, &events); err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Kind == "KubeLink" {
				seen[e.InvolvedObject.Name] = true
			}
		}
		for _, c := range bad {
			if !seen[c.link.Name] {
				return false
			}
		}
		return true
	})

	// The good link is untouched: still Up, traffic flows both ways (B's
	// traffic passes A's firewall chain for b), and b's firewall and SNAT
	// chains are in place — an IPv6 prefix once failed the one
	// iptables-restore for the whole table, so every link lost both.
	checkGood := func(when string) {
		t.Helper()
		a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
		WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
		WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
		mangle, nat := a.GW.Run(t, "iptables", "-t", "mangle", "-S"), a.GW.Run(t, "iptables", "-t", "nat", "-S")
		if !strings.Contains(mangle, mesh.FirewallChain("b")) || !strings.Contains(nat, mesh.ChainNAT) || strings.Contains(mangle+nat, "fd00") {
			t.Errorf("%s: A's chains are not b's alone:\nmangle:\n%s\nnat:\n%s", when, mangle, nat)
		}
	}
	checkGood("with the bad links")
	// No route of a's router or broker takes a's own networks into the mesh.
	for _, ns := range []*nstest.Namespace{a.Node, a.GW} {
		for _, p := range []string{"10.10.0.128/25", "10.110.5.0/24", "169.254.169.254"} {
			if r := strings.TrimSpace(ns.Run(t, "ip", "route", "show", p)); r != "" {
				t.Errorf("%s: a route for %s, a network of a claimed by a Stale link: %s", ns.Name, p, r)
			}
		}
	}
	// A fresh broker (nothing written yet) starts with the bad links present.
	brokerA.Stop()
	a.StartBroker(lab, a.GW, "--pod-cidr", a.PodCIDR.String())
	checkGood("after a broker restart")
}
