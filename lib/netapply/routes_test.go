package netapply

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// routeNS is a namespace with device kl0 (10.10.0.1/24) whose peer, in a
// second namespace, is 10.10.0.2.
func routeNS(t *testing.T) *nstest.Namespace {
	t.Helper()
	n, g := nstest.New(t, "rt"), nstest.New(t, "gw")
	nstest.Veth(t, n, "kl0", "10.10.0.1/24", g, "eth0", "10.10.0.2/24")
	return n
}

func route(dst, gw, dev string) mesh.Route {
	r := mesh.Route{Dst: netip.MustParsePrefix(dst), Device: dev}
	if gw != "" {
		r.Gateway = netip.MustParseAddr(gw)
	}
	return r
}

// shownRoutes lists `ip [-6] route show <args>` as "dst [via gw] dev d", sorted.
func shownRoutes(t *testing.T, ns *nstest.Namespace, args ...string) []string {
	t.Helper()
	var out []string
	for _, family := range []string{"-4", "-6"} {
		cmd := append([]string{family, "route", "show"}, args...)
		b, err := ns.Command("ip", cmd...).CombinedOutput()
		if err != nil && strings.Contains(string(b), "FIB table does not exist") {
			continue // IPv6 has no table 100 until a route is put there
		}
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(cmd, " "), err, b)
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			s := f[0]
			for i := 1; i+1 < len(f); i++ {
				if f[i] == "via" || f[i] == "dev" {
					s += " " + f[i] + " " + f[i+1]
				}
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func newRoutes(t *testing.T, cfg RouteConfig) *Routes {
	t.Helper()
	r, err := NewRoutes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func setRoutes(ns *nstest.Namespace, r *Routes, routes ...mesh.Route) error {
	return ns.Do(func() error { return r.Set(routes) })
}

func wantRoutes(t *testing.T, step string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: routes\n got %q\nwant %q", step, got, want)
	}
}

func TestRoutesSetAddsReplacesAndRemovesOnlyOurs(t *testing.T) {
	n := routeNS(t)
	n.Run(t, "ip", "route", "add", "10.40.0.0/16", "dev", "kl0", "proto", "static")
	r := newRoutes(t, RouteConfig{})
	first := []mesh.Route{route("10.20.0.0/16", "10.10.0.2", "kl0"), route("10.30.0.0/16", "", "kl0"), route("fd00:30::/64", "", "kl0")}
	for range 2 {
		if err := setRoutes(n, r, first...); err != nil {
			t.Fatal(err)
		}
	}
	wantRoutes(t, "first Set", shownRoutes(t, n, "proto", "76"),
		"10.20.0.0/16 via 10.10.0.2 dev kl0", "10.30.0.0/16 dev kl0", "fd00:30::/64 dev kl0")

	if err := setRoutes(n, r, route("10.20.0.0/16", "", "kl0")); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, "changed gateway, fewer routes", shownRoutes(t, n, "proto", "76"), "10.20.0.0/16 dev kl0")

	if err := n.Do(r.CleanUp); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, "after CleanUp", shownRoutes(t, n, "proto", "76"))
	wantRoutes(t, "foreign route", shownRoutes(t, n, "proto", "static"), "10.40.0.0/16 dev kl0")
}

func TestRoutesLeaveForeignRouteToTheSameDestination(t *testing.T) {
	n := routeNS(t)
	n.Run(t, "ip", "route", "add", "10.50.0.0/16", "via", "10.10.0.2", "proto", "static")
	r := newRoutes(t, RouteConfig{})
	err := setRoutes(n, r, route("10.50.0.0/16", "", "kl0"), route("10.60.0.0/16", "", "kl0"))
	if err == nil || !strings.Contains(err.Error(), "route to 10.50.0.0/16") || !strings.Contains(err.Error(), "did not make (proto static via 10.10.0.2 dev kl0)") {
		t.Errorf("error = %v, want one naming the foreign route to 10.50.0.0/16", err)
	}
	wantRoutes(t, "ours", shownRoutes(t, n, "proto", "76"), "10.60.0.0/16 dev kl0")
	wantRoutes(t, "foreign", shownRoutes(t, n, "proto", "static"), "10.50.0.0/16 via 10.10.0.2 dev kl0")
}

func TestRoutesMissingDeviceIsAnErrorNamingIt(t *testing.T) {
	n := routeNS(t)
	r := newRoutes(t, RouteConfig{})
	err := setRoutes(n, r, route("10.20.0.0/16", "", "nope0"), route("10.30.0.0/16", "", "kl0"))
	if err == nil || !strings.Contains(err.Error(), `device "nope0" does not exist`) {
		t.Errorf("error = %v, want one naming device nope0", err)
	}
	wantRoutes(t, "the other route", shownRoutes(t, n, "proto", "76"), "10.30.0.0/16 dev kl0")
}

func TestRoutesWatchSeesDeletionAndSetRepairs(t *testing.T) {
	n := routeNS(t)
	n.Run(t, "ip", "route", "add", "10.40.0.0/16", "dev", "kl0", "proto", "static")
	r := newRoutes(t, RouteConfig{})
	routes := []mesh.Route{route("10.20.0.0/16", "10.10.0.2", "kl0"), route("10.30.0.0/16", "", "kl0")}
	if err := setRoutes(n, r, routes...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 10)
	do(t, n, func() error { return r.Watch(ctx, func() { changed <- struct{}{} }) })

	n.Run(t, "ip", "route", "del", "10.40.0.0/16")
	select {
	case <-changed:
		t.Error("Watch fired for a foreign route")
	case <-time.After(300 * time.Millisecond):
	}
	n.Run(t, "ip", "route", "del", "10.30.0.0/16")
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not fire when our route was deleted")
	}
	if err := setRoutes(n, r, routes...); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, "repaired", shownRoutes(t, n, "proto", "76"), "10.20.0.0/16 via 10.10.0.2 dev kl0", "10.30.0.0/16 dev kl0")
}

// table100Rules are the `ip rule` lines that look up table 100 (both families).
func table100Rules(t *testing.T, ns *nstest.Namespace) []string {
	var out []string
	for _, family := range []string{"-4", "-6"} {
		for _, l := range strings.Split(ns.Run(t, "ip", family, "rule", "show"), "\n") {
			if strings.Contains(l, "lookup 100") {
				out = append(out, family+" "+strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return out
}

func TestRoutesInOwnTableWithRule(t *testing.T) {
	n := routeNS(t)
	n.Run(t, "ip", "rule", "add", "priority", "32760", "lookup", "200")
	routes := []mesh.Route{route("10.20.0.0/16", "10.10.0.2", "kl0"), route("10.30.0.0/16", "", "kl0")}
	r := newRoutes(t, RouteConfig{Table: 100, RulePriority: 32750})
	for range 2 {
		if err := setRoutes(n, r, routes...); err != nil {
			t.Fatal(err)
		}
	}
	if got := table100Rules(t, n); !slices.Equal(got, []string{"-4 32750: from all lookup 100 proto 76"}) {
		t.Errorf("rules = %q, want exactly one IPv4 rule with priority 32750", got)
	}
	wantRoutes(t, "table 100", shownRoutes(t, n, "table", "100", "proto", "76"), "10.20.0.0/16 via 10.10.0.2 dev kl0", "10.30.0.0/16 dev kl0")
	wantRoutes(t, "main table", shownRoutes(t, n, "proto", "76"))

	moved := newRoutes(t, RouteConfig{Table: 100, RulePriority: 32740})
	if err := setRoutes(n, moved, routes...); err != nil {
		t.Fatal(err)
	}
	if got := table100Rules(t, n); !slices.Equal(got, []string{"-4 32740: from all lookup 100 proto 76"}) {
		t.Errorf("after a priority change rules = %q, want only priority 32740", got)
	}

	taken := newRoutes(t, RouteConfig{Table: 100, RulePriority: 32760})
	err := setRoutes(n, taken, routes...)
	if err == nil || !strings.Contains(err.Error(), "priority 32760 is already used") {
		t.Errorf("error = %v, want one saying priority 32760 is taken", err)
	}
	if got := table100Rules(t, n); !slices.Equal(got, []string{"-4 32740: from all lookup 100 proto 76"}) {
		t.Errorf("a taken priority must keep the working rule, rules = %q", got)
	}

	if err := n.Do(taken.CleanUp); err != nil {
		t.Fatal(err)
	}
	if got := table100Rules(t, n); len(got) != 0 {
		t.Errorf("after CleanUp rules = %q", got)
	}
	wantRoutes(t, "table 100 after CleanUp", shownRoutes(t, n, "table", "100"))
	if out := n.Run(t, "ip", "rule", "show", "priority", "32760"); !strings.Contains(out, "lookup 200") {
		t.Errorf("foreign rule is gone: %q", out)
	}
}

// TestRoutesRemoveStaleAfterTableChange: a previous run routed into table
// 100; the datafile names its destinations, so the new run (main table)
// removes them there, but leaves the foreign route to one of them alone.
func TestRoutesRemoveStaleAfterTableChange(t *testing.T) {
	n := routeNS(t)
	old := newRoutes(t, RouteConfig{Table: 100, RulePriority: 32750})
	if err := setRoutes(n, old, route("10.70.0.0/16", "", "kl0"), route("10.80.0.0/16", "", "kl0")); err != nil {
		t.Fatal(err)
	}
	n.Run(t, "ip", "route", "add", "10.70.0.0/16", "dev", "kl0", "proto", "static")
	r := newRoutes(t, RouteConfig{})
	if err := setRoutes(n, r, route("10.80.0.0/16", "", "kl0")); err != nil {
		t.Fatal(err)
	}
	do(t, n, func() error {
		return r.RemoveStale([]netip.Prefix{netip.MustParsePrefix("10.70.0.0/16"), netip.MustParsePrefix("10.80.0.0/16")})
	})
	wantRoutes(t, "table 100", shownRoutes(t, n, "table", "100"))
	wantRoutes(t, "main", shownRoutes(t, n, "proto", "76"), "10.80.0.0/16 dev kl0")
	wantRoutes(t, "foreign", shownRoutes(t, n, "proto", "static"), "10.70.0.0/16 dev kl0")
	var installed []netip.Prefix
	do(t, n, func() (err error) { installed, err = r.Installed(); return err })
	if !slices.Equal(installed, []netip.Prefix{netip.MustParsePrefix("10.80.0.0/16")}) {
		t.Errorf("Installed = %v", installed)
	}
}

func TestNewRoutesRejectsBadConfig(t *testing.T) {
	tests := []struct {
		cfg  RouteConfig
		want string
	}{
		{RouteConfig{Table: 255}, "route table 255"},
		{RouteConfig{Table: 253}, "route table 253"},
		{RouteConfig{Protocol: 4}, "route protocol 4"},
		{RouteConfig{Table: 100}, "rule priority 0 for table 100"},
		{RouteConfig{Table: 100, RulePriority: 32766}, "rule priority 32766"},
	}
	for _, tt := range tests {
		if _, err := NewRoutes(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewRoutes(%+v) error = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := NewRoutes(RouteConfig{Table: 100, RulePriority: 32750}); err != nil {
		t.Errorf("a valid config was rejected: %v", err)
	}
}

// countingKernel counts the device lookups of a Set.
type countingKernel struct {
	routeKernel
	lookups int
}

func (k *countingKernel) LinkByName(name string) (netlink.Link, error) {
	k.lookups++
	return k.routeKernel.LinkByName(name)
}

// A Set asks the kernel for each device once, however many routes use it
// (it was once per route: 250 lookups a pass at 250 links, issue #33).
func TestRoutesLookUpEachDeviceOncePerSet(t *testing.T) {
	n := routeNS(t)
	r := newRoutes(t, RouteConfig{})
	k := &countingKernel{routeKernel: r.nl}
	r.nl = k
	var routes []mesh.Route
	for i := range 50 {
		routes = append(routes, route(fmt.Sprintf("10.%d.0.0/16", 100+i), "10.10.0.2", "kl0"))
	}
	routes = append(routes, route("10.99.0.0/16", "", "nope0"))
	if err := setRoutes(n, r, routes...); err == nil || !strings.Contains(err.Error(), `device "nope0" does not exist`) {
		t.Fatalf("Set with a missing device: %v", err)
	}
	if k.lookups != 2 {
		t.Errorf("%d device lookups for 51 routes on 2 devices, want 2", k.lookups)
	}
	if got := len(shownRoutes(t, n, "proto", "76")); got != 50 {
		t.Errorf("%d routes installed, want 50", got)
	}
}
