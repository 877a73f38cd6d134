package broker

import (
	"fmt"
	"net"
	"net/netip"

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
func (g *gateway) setDevice(dev string, m *mesh.Model) error {
	var addrs []netip.Prefix
	for _, ms := range m.Meshes {
		addrs = append(addrs, ms.Local.Address)
	}
	if err := netapply.SetAddresses(dev, addrs); err != nil {
		return err
	}
	return netapply.SetUp(dev)
}

// apply sets routes, SNAT and the kernel firewall for the device.
func (g *gateway) apply(m *mesh.Model, dev string) error {
	var errs []error
	if err := g.routes.Set(m.GatewayRoutes(dev)); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	natOpts := mesh.NATOptions{Device: dev}
	if g.rm.PodMode {
		natOpts.PodInterface = g.rm.Interface
	}
	if err := g.snat.Set(m.SNATRules(natOpts)); err != nil {
		errs = append(errs, fmt.Errorf("SNAT rules: %w", err))
	}
	if g.fw != nil {
		if err := g.fw.Set(m.FirewallRules(dev, g.cfg.ProbePort)); err != nil {
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
