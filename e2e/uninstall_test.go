//go:build e2e && e2euninstall

package e2e

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// TestUninstall removes kubelink from every cluster of the lab with
// kubelinkctl uninstall: afterwards no node has a kubelink route, device,
// iptables or nftables rule, no cluster a kubelink API object, and the
// state planted beforehand on each node is unchanged. It ends the lab's
// kubelink (make e2e-uninstall runs it alone; make lab-up installs again).
func TestUninstall(t *testing.T) {
	// Planted on every node: a route of another protocol, a veth pair and an
	// iptables chain, none kubelink's.
	plant := [][]string{
		{"ip", "route", "add", "198.51.100.0/24", "dev", "lo", "proto", "99"},
		{"ip", "link", "add", "other-e2e0", "type", "veth", "peer", "name", "other-e2e1"},
		{"iptables", "-t", "filter", "-N", "OTHER-E2E"},
	}
	unplant := [][]string{
		{"ip", "route", "del", "198.51.100.0/24", "dev", "lo", "proto", "99"},
		{"ip", "link", "del", "other-e2e0"},
		{"iptables", "-t", "filter", "-X", "OTHER-E2E"},
	}
	check := map[string][]string{
		"route":  {"ip", "route", "show", "proto", "99"},
		"device": {"ip", "-o", "link", "show", "other-e2e0"},
		"chain":  {"iptables", "-t", "filter", "-S", "OTHER-E2E"},
	}
	f := features.New("kubelinkctl uninstall leaves nothing of kubelink and everything else").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range lab.Members() {
				for _, n := range LabNodes(c) {
					for _, p := range plant {
						if r := nodeRun(t, n, p...); r.err != nil {
							t.Fatalf("%s: %s: %v %s", n, strings.Join(p, " "), r.err, r.out)
						}
					}
				}
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range lab.Members() {
				for _, n := range LabNodes(c) {
					for _, p := range unplant {
						nodeRun(t, n, p...)
					}
				}
			}
			return ctx
		}).
		Assess("uninstall reports nothing left", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"uninstall", "--timeout", "5m"}, labContexts()...)...)
			t.Logf("uninstall:\n%s%s", stderr, out)
			if err != nil {
				t.Fatalf("uninstall: %v", err)
			}
			if n := strings.Count(out, "no kubelink object, route, rule, chain or device left"); n != len(lab.Members()) {
				t.Errorf("uninstall reported %d clean clusters, want %d", n, len(lab.Members()))
			}
			return ctx
		}).
		Assess("no node has kubelink state; the planted state is there", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range lab.Members() {
				for _, n := range LabNodes(c) {
					for what, cmd := range map[string][]string{
						"routes of protocol 77": {"ip", "route", "show", "table", "all", "proto", "77"},
						"kubelink devices":      {"sh", "-c", "ip -o link show | grep kubelink || true"},
						"kubelink iptables":     {"sh", "-c", "iptables-save 2>/dev/null | grep KUBELINK- || true"},
						"kubelink nftables":     {"sh", "-c", "nft list ruleset 2>/dev/null | grep KUBELINK- || true"},
						"the route file":        {"sh", "-c", "ls /var/lib/kubelink 2>/dev/null || true"},
					} {
						if r := nodeRun(t, n, cmd...); r.err != nil || strings.TrimSpace(r.out) != "" {
							t.Errorf("%s: %s left: %q (%v)", n, what, r.out, r.err)
						}
					}
					for what, cmd := range check {
						if r := nodeRun(t, n, cmd...); r.err != nil || strings.TrimSpace(r.out) == "" {
							t.Errorf("%s: the planted %s is gone: %q (%v)", n, what, r.out, r.err)
						}
					}
				}
			}
			return ctx
		}).
		Assess("no cluster has a kubelink API object", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range lab.Members() {
				var crd apiextensionsv1.CustomResourceDefinition
				if err := c.Res.Get(ctx, "kubelinks.kubelink.mandelsoft.org", "", &crd); !apierrors.IsNotFound(err) {
					t.Errorf("%s: CRD kubelinks: %v, want it gone", c.Name, err)
				}
				var ns corev1.Namespace
				if err := c.Res.Get(ctx, "kubelink", "", &ns); !apierrors.IsNotFound(err) {
					t.Errorf("%s: namespace kubelink: %v, want it gone", c.Name, err)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
