package broker

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/netapply"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// gateway is the kernel state around the mesh device that both data planes
// share: the device's addresses, the routes, the SNAT and MeshService DNAT
// chains and, where the kernel enforces ingress (WireGuard), the firewall.
type gateway struct {
	cfg    *Config
	rm     RunMode
	routes *netapply.Routes
	snat   *netapply.Chains
	svc    *netapply.Chains
	fw     *netapply.Chains // nil when ingress is enforced elsewhere (bridge)
	// local guards the local cluster addresses (GatewayPlan.LocalRules): it
	// needs the plan and the MeshService bindings, which come later in a
	// pass, so it is set from both with the last of each.
	local    *netapply.Chains
	plan     *mesh.GatewayPlan
	bindings []*mesh.ServiceBinding
	// addrs are the local cluster addresses on the device (setDevice), the
	// source of the ICMP errors the data plane sends on (localAddresses).
	addrs atomic.Pointer[[]netip.Prefix]
	log   *slog.Logger
	// forwarding is the device forwarding was enabled for.
	forwarding string
	// untracked is the SNAT scope (fmt of mesh.SNATScopes) whose flows
	// tracked without SNAT were last deleted; another scope, or SNAT rules
	// written or repaired, deletes again. After a failure the next attempt
	// waits until untrackedRetry.
	untracked      string
	untrackedRetry time.Time
	// haveBindings: applyServices ran once, so bindings are known.
	haveBindings bool
	// verified is when the chains were last checked against a listing of
	// the kernel's tables (netapply.Chains.Set); in between, passes write
	// only what changed (Update). Zero: the next pass checks.
	verified time.Time
	// checking: this pass checks (set by apply, read by applyServices,
	// which comes later in the same pass).
	checking bool
	// scopes: the SNAT scope of this pass, for Settle's dropUnNATed (nil:
	// nothing to do, the SNAT rules failed).
	scopes []mesh.SNATScope
}

// CheckNext makes the next pass check the chains against the kernel's
// tables, repairing what changed behind kubelink's back: the broker asks
// for it on the pass of each --resync period. The passes in between (a
// changed KubeLink, a probe result) write only what their change changed,
// with no listing: one change costs one iptables-restore per table it
// touches, not a listing of every table (issue #33).
func (g *gateway) CheckNext() { g.verified = time.Time{} }

// verifying reports whether this pass checks the chains: asked for, the
// first, after a failure, or (should no periodic pass come) two --resync
// periods after the last check.
func (g *gateway) verifying() bool {
	return g.verified.IsZero() || time.Since(g.verified) >= 2*g.cfg.Resync
}

// setChains applies rs to c: checked against the kernel on a verifying
// pass, else from c's record of what it wrote.
func (g *gateway) setChains(c *netapply.Chains, rs mesh.RuleSet, verify bool) error {
	if verify {
		return c.Set(rs)
	}
	return c.Update(rs)
}

func newGateway(cfg *Config, rm RunMode, kernelFirewall bool, log *slog.Logger) (*gateway, error) {
	if log == nil {
		log = slog.Default()
	}
	g := &gateway{cfg: cfg, rm: rm, log: log}
	var err error
	if g.routes, err = netapply.NewRoutes(netapply.RouteConfig{Table: cfg.RouteTable, RulePriority: cfg.RulePriority}); err != nil {
		return nil, err
	}
	if g.snat, err = netapply.NewChains(netapply.SNATChains, false); err != nil {
		return nil, err
	}
	if g.svc, err = netapply.NewChains(netapply.ServiceChains, false); err != nil {
		return nil, err
	}
	if g.local, err = netapply.NewChains(netapply.LocalChains, false); err != nil {
		return nil, err
	}
	if kernelFirewall {
		if g.fw, err = netapply.NewChains(netapply.FirewallChains, false); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// deviceMTU is --mtu, or the node interface MTU less the tunnel overhead
// (WireGuard over IPv6 adds up to 80 bytes).
func (g *gateway) deviceMTU() int {
	if g.cfg.MTU != 0 {
		return g.cfg.MTU
	}
	if ifc, err := net.InterfaceByName(g.rm.Interface); err == nil && ifc.MTU > 80 {
		return ifc.MTU - 80
	}
	return wireguard.DefaultMTU
}

// setDevice gives the device the local address of every mesh, brings it up
// and lets the gateway forward through it.
func (g *gateway) setDevice(dev string, plan *mesh.GatewayPlan) error {
	if err := netapply.SetAddresses(dev, plan.Addresses); err != nil {
		return err
	}
	addrs := plan.Addresses
	g.addrs.Store(&addrs)
	if err := netapply.SetUp(dev); err != nil {
		return err
	}
	return g.enableForwarding(dev)
}

// localAddresses are the local cluster addresses on the device, for
// mesh.RewriteICMPErrorSource (none before the first sync).
func (g *gateway) localAddresses() []netip.Prefix {
	if a := g.addrs.Load(); a != nil {
		return *a
	}
	return nil
}

// apply sets the plan's SNAT, routes and, where the kernel enforces
// ingress (WireGuard), its firewall.
//
// SNAT comes before the routes: a route into the device without its SNAT
// lets a pod's connection leave with the pod's own address, and the kernel
// keeps that connection un-rewritten for as long as it is tracked. For the
// same reason, whenever the SNAT scope changed (the first pass, a new mesh
// or destination, a broker that took over), the flows tracked without SNAT
// in the new scope are deleted (by Settle, at the end of the pass), so
// their next packet passes the rules.
func (g *gateway) apply(plan *mesh.GatewayPlan) error {
	var errs []error
	verify := g.verifying()
	g.checking = verify
	chainsOK := true
	chainErr := func(what string, err error) {
		if err != nil {
			chainsOK = false
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	// The firewall (mangle) is written beside the SNAT rules (nat) and the
	// routes: the two iptables-restore runs are independent transactions on
	// different tables, and one after the other they were most of a
	// change's time at 250 links (issue #33). The order that matters, SNAT
	// before routes, stays. (With iptables' legacy backend, --wait makes the
	// two take turns on the xtables lock: correct, only not faster.)
	start := time.Now()
	var fwErr error
	var fwTook time.Duration
	var fwDone chan struct{}
	if g.fw != nil {
		fwDone = make(chan struct{})
		go func() {
			defer close(fwDone)
			fwErr = g.setChains(g.fw, plan.Firewall, verify)
			fwTook = time.Since(start)
		}()
	}
	snatChanges := g.snat.Changes()
	snatErr := g.setChains(g.snat, plan.SNAT, verify)
	if g.snat.Changes() != snatChanges {
		g.untracked = "" // rules written or repaired: flows of the gap
	}
	chainErr("SNAT rules", snatErr)
	snatTook := time.Since(start)
	if err := g.routes.Set(plan.Routes); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	routesTook := time.Since(start) - snatTook
	if fwDone != nil {
		<-fwDone
		chainErr("firewall rules", fwErr)
	}
	waited := time.Since(start)
	g.plan = plan
	if err := g.setLocal(verify); err != nil {
		chainsOK = false
		errs = append(errs, err)
	}
	g.log.Debug("gateway apply", "checked", verify, "snat", snatTook, "routes", routesTook,
		"firewall", fwTook, "both", waited, "local", time.Since(start)-waited)
	g.scopes = nil
	if snatErr == nil && plan.Model != nil {
		g.scopes = plan.Model.SNATScopes()
	}
	switch {
	case !chainsOK:
		g.verified = time.Time{} // the next pass checks the chains
	case verify:
		g.verified = time.Now()
	}
	if len(errs) > 0 {
		return fmt.Errorf("gateway setup: %v", errs)
	}
	return nil
}

// Settle ends a pass, after its status writes, with what can wait those
// milliseconds: the listings that record what Update wrote (a failure
// makes the next pass check the chains) and, after the SNAT scope changed,
// the deletion of the flows tracked without SNAT (dropUnNATed: the rules
// are in place by then, only flows from before them wait). A change's
// status is then written without waiting for either (issue #33).
func (g *gateway) Settle() {
	for _, c := range []*netapply.Chains{g.snat, g.svc, g.local, g.fw} {
		if c == nil {
			continue
		}
		if err := c.Settle(); err != nil {
			g.verified = time.Time{}
			g.log.Warn("reading back the chains just written; the next pass checks them all", "err", err)
		}
	}
	if g.scopes != nil {
		g.dropUnNATed(g.scopes)
		g.scopes = nil
	}
}

// dropUnNATed deletes the flows tracked without SNAT when the scope changed
// since the last time (see apply). A failure does not fail the pass (the
// routes and rules are in place; only flows from before them may be
// stuck): it is logged and tried again 30 s later, not every pass, as each
// try reads the namespace's whole connection-tracking table.
func (g *gateway) dropUnNATed(scopes []mesh.SNATScope) {
	key := fmt.Sprint(scopes)
	if key == g.untracked || time.Now().Before(g.untrackedRetry) {
		return
	}
	n, err := netapply.DropUnNATed(scopes)
	if err != nil {
		g.untrackedRetry = time.Now().Add(30 * time.Second)
		g.log.Warn("deleting connection-tracking entries of flows that left without SNAT; trying again in 30 s", "err", err)
		return
	}
	g.untracked, g.untrackedRetry = key, time.Time{}
	if n > 0 {
		g.log.Info("deleted connection-tracking entries of flows that left without SNAT; their next packets are rewritten", "entries", n)
	}
}

// applyServices installs the MeshService DNAT chains (an empty list removes
// them, so a deleted MeshService leaves no chain behind).
func (g *gateway) applyServices(bindings []*mesh.ServiceBinding) error {
	verify := g.checking || g.verified.IsZero()
	if err := g.setChains(g.svc, mesh.ServiceRules(bindings), verify); err != nil {
		g.verified = time.Time{}
		return fmt.Errorf("MeshService rules: %w", err)
	}
	g.bindings, g.haveBindings = bindings, true
	if err := g.setLocal(verify); err != nil {
		g.verified = time.Time{}
		return err
	}
	return nil
}

// setLocal guards the local cluster addresses for the last plan and
// MeshService bindings. Not before both are known: a chain written without
// the bindings would close a MeshService port on the address until later
// in the pass (a broker restarting in a pod keeps its namespace's chains).
func (g *gateway) setLocal(verify bool) error {
	if g.plan == nil || g.plan.Model == nil || !g.haveBindings {
		return nil
	}
	if err := g.setChains(g.local, g.plan.LocalRules(g.bindings), verify); err != nil {
		return fmt.Errorf("cluster address rules: %w", err)
	}
	return nil
}

// enableForwarding lets the gateway forward between the cluster and the
// mesh device dev, once per device. Where net.ipv4.ip_forward is on (a
// node, or a pod given the sysctl) nothing is left to do. In pod mode the
// broker turns forwarding on for the pod's interface and the device itself
// through rtnetlink, with the CAP_NET_ADMIN it has anyway: the chart needs
// no privileged container and no unsafe sysctl for it. In node mode the
// node's own setting is the one to change (traffic from the pods arrives
// on many devices).
func (g *gateway) enableForwarding(dev string) error {
	if g.forwarding == dev {
		return nil
	}
	var err error
	switch on, rerr := netapply.Forwarding(); {
	case rerr == nil && on:
	case g.rm.PodMode:
		err = netapply.EnableDeviceForwarding(g.rm.Interface, dev)
	default:
		err = netapply.EnableForwarding(true, false)
	}
	if err != nil {
		return fmt.Errorf("enabling IP forwarding: %w", err)
	}
	g.forwarding = dev
	return nil
}

// forDevice is plan for the device the plane opened: the broker plans for
// --interface, and a device that got another name is planned anew.
func forDevice(plan *mesh.GatewayPlan, dev string) *mesh.GatewayPlan {
	if plan.Options.Device == dev {
		return plan
	}
	o := plan.Options
	o.Device = dev
	return plan.Model.Plan(o)
}
