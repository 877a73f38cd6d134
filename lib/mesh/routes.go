package mesh

import (
	"net/netip"
	"slices"
)

// Route is a desired route. An empty Gateway means "directly on Device".
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Device  string
	// OnLink: the gateway is reached directly on Device even though no
	// address of Device's network contains it (tunnels to the gateway).
	OnLink bool
}

// RoutedNetworks are the destinations that leave the cluster through the mesh:
// every mesh CIDR, and every service CIDR or egress network of an accepted
// link that is not already inside a mesh CIDR. Sorted, without duplicates.
func (m *Model) RoutedNetworks() []netip.Prefix {
	var nets []netip.Prefix
	for _, ms := range m.Meshes {
		nets = append(nets, m.MeshNetworks(ms)...)
	}
	return mergePrefixes(nets)
}

// MeshNetworks are the routed networks of one mesh: its CIDR and its
// members' service CIDRs and egress networks outside every mesh CIDR.
// Meshes have disjoint networks (see the verdicts), so each routed network
// belongs to exactly one mesh and may go to that mesh's gateway.
func (m *Model) MeshNetworks(ms *Mesh) []netip.Prefix {
	nets := []netip.Prefix{ms.CIDR()}
	for _, l := range ms.Members {
		for _, d := range l.Destinations() {
			if !m.inMeshCIDR(d) {
				nets = append(nets, d)
			}
		}
	}
	return mergePrefixes(nets)
}

func (m *Model) inMeshCIDR(p netip.Prefix) bool {
	for _, ms := range m.Meshes {
		if contains(ms.CIDR(), p) {
			return true
		}
	}
	return false
}

// GatewayRoutes are the routes of the gateway (the broker's network
// namespace): every routed network directly on the mesh device.
func (m *Model) GatewayRoutes(device string) []Route {
	nets := m.RoutedNetworks()
	out := make([]Route, 0, len(nets))
	for _, n := range nets {
		out = append(out, Route{Dst: n, Device: device})
	}
	return out
}

// NodeRoutes are the routes of a node that is not the gateway: every routed
// network via the gateway address, on the node device towards it (the node's
// interface, or a VXLAN/IPIP tunnel to the gateway).
func (m *Model) NodeRoutes(gateway netip.Addr, device string) []Route {
	return routesVia(m.RoutedNetworks(), gateway, device)
}

// MeshNodeRoutes are NodeRoutes for the networks of one mesh, towards the
// gateway that serves it (brokers may split the meshes, --served-links).
func (m *Model) MeshNodeRoutes(ms *Mesh, gateway netip.Addr, device string) []Route {
	return routesVia(m.MeshNetworks(ms), gateway, device)
}

func routesVia(nets []netip.Prefix, gateway netip.Addr, device string) []Route {
	if !gateway.IsValid() {
		return nil
	}
	out := make([]Route, 0, len(nets))
	for _, n := range nets {
		if n.Addr().Is4() != gateway.Is4() {
			continue // a route needs a gateway of its own family
		}
		out = append(out, Route{Dst: n, Gateway: gateway, Device: device})
	}
	return slices.Clip(out)
}
