package broker

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

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
	// addrs are the local cluster addresses on the device (setDevice), the
	// source of the ICMP errors the data plane sends on (localAddresses).
	addrs atomic.Pointer[[]netip.Prefix]
}

func newGateway(cfg *Config, rm RunMode, kernelFirewall bool) (*gateway, error) {
	g := &gateway{cfg: cfg, rm: rm}
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

// setDevice gives the device the local address of every mesh and brings it up.
func (g *gateway) setDevice(dev string, plan *mesh.GatewayPlan) error {
	if err := netapply.SetAddresses(dev, plan.Addresses); err != nil {
		return err
	}
	addrs := plan.Addresses
	g.addrs.Store(&addrs)
	return netapply.SetUp(dev)
}

// localAddresses are the local cluster addresses on the device, for
// mesh.RewriteICMPErrorSource (none before the first sync).
func (g *gateway) localAddresses() []netip.Prefix {
	if a := g.addrs.Load(); a != nil {
		return *a
	}
	return nil
}

// apply sets the plan's routes, SNAT and, where the kernel enforces ingress
// (WireGuard), its firewall.
func (g *gateway) apply(plan *mesh.GatewayPlan) error {
	var errs []error
	if err := g.routes.Set(plan.Routes); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	if err := g.snat.Set(plan.SNAT); err != nil {
		errs = append(errs, fmt.Errorf("SNAT rules: %w", err))
	}
	if g.fw != nil {
		if err := g.fw.Set(plan.Firewall); err != nil {
			errs = append(errs, fmt.Errorf("firewall rules: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("gateway setup: %v", errs)
	}
	return nil
}

// applyServices installs the MeshService DNAT chains (an empty list removes
// them, so a deleted MeshService leaves no chain behind).
func (g *gateway) applyServices(bindings []*mesh.ServiceBinding) error {
	if err := g.svc.Set(mesh.ServiceRules(bindings)); err != nil {
		return fmt.Errorf("MeshService rules: %w", err)
	}
	return nil
}

// enableForwarding lets the gateway forward between the cluster and the mesh.
func enableForwarding() error {
	if err := netapply.EnableForwarding(true, false); err != nil {
		return fmt.Errorf("enabling IP forwarding: %w", err)
	}
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
