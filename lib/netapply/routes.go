package netapply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelink/kubelink/lib/mesh"
)

// RouteProtocol marks kubelink's routes: the kernel stores this number with
// each route (rtm_protocol, "proto 76" in `ip route`), so kubelink can tell
// its own routes from those of the CNI or the administrator, even after a
// restart, without keeping state. 76 is not assigned in iproute2's rt_protos.
const RouteProtocol = 76

// MainTable is the kernel's main routing table.
const MainTable = 254

// RouteConfig says where routes go and how they are marked.
type RouteConfig struct {
	// Table is the routing table; 0 means MainTable.
	Table int
	// Protocol marks our routes; 0 means RouteProtocol. Two appliers in one
	// namespace need different tables or protocols, or they delete each
	// other's routes.
	Protocol int
	// RulePriority is the priority of the rule "from all lookup Table"; used
	// only when Table is not MainTable.
	RulePriority int
}

// routeKernel is the seam to netlink; *netlink.Handle implements it.
type routeKernel interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	RuleList(family int) ([]netlink.Rule, error)
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
}

// Routes applies the routes kubelink wants in one table. It owns the routes
// of its protocol in that table and, for a table other than main, the rules
// that look the table up.
type Routes struct {
	table, proto, priority int
	nl                     routeKernel

	mu      sync.Mutex
	desired map[netip.Prefix]bool // destinations of the last Set
}

// NewRoutes checks cfg and returns an applier for the current namespace.
func NewRoutes(cfg RouteConfig) (*Routes, error) {
	r := &Routes{table: cfg.Table, proto: cfg.Protocol, priority: cfg.RulePriority, nl: &netlink.Handle{}}
	if r.table == 0 {
		r.table = MainTable
	}
	if r.proto == 0 {
		r.proto = RouteProtocol
	}
	switch {
	case r.table < 1 || r.table > MainTable || r.table == unix.RT_TABLE_DEFAULT:
		return nil, fmt.Errorf("route table %d: use 1-252 or 254 (main)", r.table)
	case r.proto < 5 || r.proto > 255:
		// 0-4 are the kernel's own (unspec, redirect, kernel, boot, static).
		return nil, fmt.Errorf("route protocol %d: use 5-255", r.proto)
	case r.table != MainTable && (r.priority < 1 || r.priority > 32765):
		// 0 is the local rule, 32766 and 32767 look up main and default.
		return nil, fmt.Errorf("rule priority %d for table %d: use 1-32765", r.priority, r.table)
	}
	return r, nil
}

// Set makes the table hold exactly the wanted routes of ours: missing or
// different ones are added or replaced, ours that are no longer wanted are
// deleted. Routes of other protocols are never touched; one with a wanted
// destination is reported as an error for that route. Errors of single
// routes do not stop the others.
func (r *Routes) Set(routes []mesh.Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	desired := map[netip.Prefix]bool{}
	want := map[netip.Prefix]*netlink.Route{}
	var order []netip.Prefix
	// One lookup per device, not per route: at 250 links a pass asked
	// the kernel for the same device 250 times (issue #33).
	type lookup struct {
		link netlink.Link
		err  error
	}
	devices := map[string]lookup{}
	linkOf := func(name string) (netlink.Link, error) {
		l, ok := devices[name]
		if !ok {
			l.link, l.err = r.nl.LinkByName(name)
			devices[name] = l
		}
		return l.link, l.err
	}
	for _, rt := range routes {
		dst := rt.Dst.Masked()
		if desired[dst] {
			errs = append(errs, fmt.Errorf("route to %s is wanted twice; the first one is used", dst))
			continue
		}
		// Wanted even if it cannot be made now: keep what we have for it.
		desired[dst] = true
		nr, err := r.toNetlink(rt, linkOf)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[dst] = nr
		order = append(order, dst)
	}
	existing, err := r.list(&netlink.Route{Table: r.table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes of table %d: %w", r.table, err)
	}
	byDst := map[netip.Prefix][]netlink.Route{}
	for _, rt := range existing {
		byDst[routeDst(rt)] = append(byDst[routeDst(rt)], rt)
	}
	for _, dst := range order {
		if err := r.apply(want[dst], byDst[dst]); err != nil {
			errs = append(errs, fmt.Errorf("route to %s: %w", dst, err))
		}
	}
	for _, rt := range existing {
		if int(rt.Protocol) == r.proto && !desired[routeDst(rt)] {
			if err := r.delete(rt); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := r.syncRules(families(desired)); err != nil {
		errs = append(errs, err)
	}
	r.desired = desired
	return errors.Join(errs...)
}

// apply installs want unless an equal route of ours is there; cur are the
// routes of the table with the same destination.
func (r *Routes) apply(want *netlink.Route, cur []netlink.Route) error {
	for _, c := range cur {
		if int(c.Protocol) != r.proto {
			return fmt.Errorf("table %d already has a route to it that kubelink did not make (%s); kubelink leaves it alone: remove it, or do not route this network through the mesh",
				r.table, r.describe(c))
		}
	}
	if len(cur) == 1 && sameRoute(cur[0], want) {
		return nil
	}
	if err := r.nl.RouteReplace(want); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	return nil
}

// CleanUp removes every route of our protocol (in all tables) and our rules.
func (r *Routes) CleanUp() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired = nil
	var errs []error
	ours, err := r.list(&netlink.Route{Protocol: netlink.RouteProtocol(r.proto)}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes of protocol %d: %w", r.proto, err)
	}
	for _, rt := range ours {
		if err := r.delete(rt); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, r.syncRules(nil))...)
}

// RemoveStale deletes routes of our protocol, in any table, to destinations
// a previous run made (as recorded with SaveDatafile) that the last Set did
// not want, e.g. after the route table was reconfigured. Call it after the
// first Set, so wanted routes are never removed and added again.
func (r *Routes) RemoveStale(previous []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ours, err := r.list(&netlink.Route{Protocol: netlink.RouteProtocol(r.proto)}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes of protocol %d: %w", r.proto, err)
	}
	var errs []error
	for _, rt := range ours {
		dst := routeDst(rt)
		if slices.Contains(previous, dst) && !(rt.Table == r.table && r.desired[dst]) {
			if err := r.delete(rt); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Installed returns the destinations of our routes in our table, sorted: what
// a router records with SaveDatafile.
func (r *Routes) Installed() ([]netip.Prefix, error) {
	ours, err := r.list(&netlink.Route{Table: r.table, Protocol: netlink.RouteProtocol(r.proto)}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", r.table, err)
	}
	var out []netip.Prefix
	for _, rt := range ours {
		out = append(out, routeDst(rt))
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func (r *Routes) toNetlink(rt mesh.Route, linkOf func(string) (netlink.Link, error)) (*netlink.Route, error) {
	dst := rt.Dst.Masked()
	link, err := linkOf(rt.Device)
	if err != nil {
		var missing netlink.LinkNotFoundError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("route to %s: device %q does not exist (yet)", dst, rt.Device)
		}
		return nil, fmt.Errorf("route to %s: device %q: %w", dst, rt.Device, err)
	}
	nr := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Table:     r.table,
		Protocol:  netlink.RouteProtocol(r.proto),
		Scope:     netlink.SCOPE_LINK,
	}
	if rt.Gateway.IsValid() {
		if rt.Gateway.Is4() != dst.Addr().Is4() {
			return nil, fmt.Errorf("route to %s: gateway %s is of the other IP family", dst, rt.Gateway)
		}
		nr.Gw, nr.Scope = rt.Gateway.AsSlice(), netlink.SCOPE_UNIVERSE
	}
	if rt.OnLink {
		nr.Flags |= int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func (r *Routes) delete(rt netlink.Route) error {
	if err := r.nl.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route to %s (table %d): %w", routeDst(rt), rt.Table, err)
	}
	return nil
}

// list retries dumps the kernel reports as interrupted by a concurrent change.
func (r *Routes) list(filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	for attempt := 1; ; attempt++ {
		rs, err := r.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, mask)
		if errors.Is(err, netlink.ErrDumpInterrupted) && attempt < 5 {
			continue
		}
		return rs, err
	}
}

// describe renders a route for messages, like ip route does.
func (r *Routes) describe(rt netlink.Route) string {
	s := "proto " + rt.Protocol.String()
	if rt.Gw != nil {
		s += " via " + rt.Gw.String()
	}
	if l, err := r.nl.LinkByIndex(rt.LinkIndex); err == nil {
		s += " dev " + l.Attrs().Name
	}
	return s
}

func sameRoute(cur netlink.Route, want *netlink.Route) bool {
	onlink := int(netlink.FLAG_ONLINK)
	return cur.LinkIndex == want.LinkIndex && len(cur.MultiPath) == 0 &&
		(cur.Gw == nil && want.Gw == nil || cur.Gw.Equal(want.Gw)) &&
		cur.Flags&onlink == want.Flags&onlink
}

// routeDst is the destination of a route; netlink leaves Dst nil for default
// routes.
func routeDst(rt netlink.Route) netip.Prefix {
	if rt.Dst == nil {
		if rt.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a, _ := netip.AddrFromSlice(rt.Dst.IP)
	ones, _ := rt.Dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func families(dsts map[netip.Prefix]bool) map[int]bool {
	out := map[int]bool{}
	for d := range dsts {
		if d.Addr().Is4() {
			out[netlink.FAMILY_V4] = true
		} else {
			out[netlink.FAMILY_V6] = true
		}
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
