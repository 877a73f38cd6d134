package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Transport is how a gateway carries a link's traffic to its peer.
type Transport int

const (
	// TransportNone carries nothing (--mode=none): the plan has addresses,
	// routes and rules but no peers or connections.
	TransportNone Transport = iota
	// TransportWireGuard groups links into WireGuard peers by public key.
	TransportWireGuard
	// TransportBridge opens one TLS connection per link with a host:port
	// endpoint.
	TransportBridge
)

func (t Transport) String() string {
	switch t {
	case TransportWireGuard:
		return "wireguard"
	case TransportBridge:
		return "bridge"
	}
	return "none"
}

// PlanOptions say for which device and transport a plan is made.
type PlanOptions struct {
	Transport Transport
	// Device is the mesh device (WireGuard or tun).
	Device string
	// PodInterface is set in pod mode (see NATOptions).
	PodInterface string
	// ProbePort is the health-probe responder's UDP port (0: none).
	ProbePort int
	// MCSPort is the TCP port of the Multi-Cluster Services exchange on
	// the cluster addresses (0: none).
	MCSPort int
	// Keepalive of WireGuard peers.
	Keepalive time.Duration
}

// GatewayPlan is everything a gateway wants for a model, whichever transport
// carries it: the device's addresses, its routes and NAT, one ingress policy
// as data with its kernel rendering, and per transport the peers (WireGuard)
// or connections and routing table (bridge). It is pure: data planes apply
// it, tests read it.
type GatewayPlan struct {
	Model   *Model
	Options PlanOptions
	// Addresses are the local cluster addresses of every mesh, on the device.
	Addresses []netip.Prefix
	Routes    []Route
	SNAT      RuleSet
	// Policy is the ingress policy of every foreign link; Firewall is its
	// kernel rendering (the bridge enforces Policy in user space instead).
	Policy   *Policy
	Firewall RuleSet
	// Peers are the WireGuard peers (TransportWireGuard).
	Peers []Peer
	// Connections are the bridge connections (TransportBridge), by link name.
	Connections []Connection
	// Table maps destinations to the link whose connection carries them,
	// longest prefix first (TransportBridge).
	Table []TableEntry
	// Carrier maps every served foreign link to the link whose peer or
	// connection carries its traffic: itself, or its gatewayLink. A link
	// that is not served is absent and has an entry in LinkErrs.
	Carrier map[string]string
	// LinkErrs are links the transport cannot serve (state Error).
	LinkErrs LinkErrors
}

// Connection is one bridge connection: the link it dials or accepts, the
// mesh whose local link it announces, and the transit links (gatewayLink)
// whose traffic it carries too.
type Connection struct {
	Link    *Link
	Mesh    *Mesh
	Transit []*Link
}

// Carries lists the names of the links the connection carries.
func (c Connection) Carries() []string {
	out := []string{c.Link.Name.String()}
	for _, l := range c.Transit {
		out = append(out, l.Name.String())
	}
	return out
}

// TableEntry routes a destination into a link's connection.
type TableEntry struct {
	Prefix netip.Prefix
	Link   string
}

// Route returns the link carrying dst (longest prefix first), "" if none.
func (p *GatewayPlan) Route(dst netip.Addr) string {
	return RouteIn(p.Table, dst)
}

// RouteIn looks dst up in a table sorted longest prefix first.
func RouteIn(table []TableEntry, dst netip.Addr) string {
	for _, e := range table {
		if e.Prefix.Contains(dst) {
			return e.Link
		}
	}
	return ""
}

// Plan computes the gateway plan of a model.
func (m *Model) Plan(o PlanOptions) *GatewayPlan {
	p := &GatewayPlan{Model: m, Options: o, Carrier: map[string]string{}, LinkErrs: LinkErrors{}}
	for _, ms := range m.Meshes {
		p.Addresses = append(p.Addresses, ms.Local.Address)
	}
	p.Routes = m.GatewayRoutes(o.Device)
	p.SNAT = m.SNATRules(NATOptions{Device: o.Device, PodInterface: o.PodInterface})
	p.Policy = m.Policy(o.ProbePort)
	switch o.Transport {
	case TransportWireGuard:
		p.Firewall = p.Policy.FirewallRules(o.Device)
		peers, errs := m.WireGuardPeers(o.Keepalive)
		p.Peers = peers
		for n, err := range errs {
			p.LinkErrs[n] = err
		}
		for _, pr := range peers {
			for _, l := range pr.Links {
				carrier := l
				if ml, ok := m.Link(l); ok && ml.GatewayLink != "" {
					carrier = ml.GatewayLink
				}
				p.Carrier[l] = carrier
			}
		}
	case TransportBridge:
		p.planBridge()
	}
	return p
}

// planBridge gives every link with a host:port endpoint a connection and
// routes its networks into it; a transit link's networks go into its
// gateway link's connection, which accepts their sources under the transit
// link's rules.
func (p *GatewayPlan) planBridge() {
	m := p.Model
	for _, ms := range m.Meshes {
		transit := map[string][]*Link{}
		for _, l := range ms.Members {
			if l.GatewayLink != "" {
				transit[l.GatewayLink] = append(transit[l.GatewayLink], l)
			}
		}
		for _, l := range ms.Members {
			name := l.Name.String()
			switch {
			case l.GatewayLink != "":
				if gw, ok := m.Link(l.GatewayLink); !ok || gw.Endpoint.Kind != EndpointHost {
					p.LinkErrs[name] = fmt.Errorf("gatewayLink %s has no bridge connection (it needs an endpoint host:port)", l.GatewayLink)
					continue
				}
				p.Carrier[name] = l.GatewayLink
			case l.Endpoint.Kind != EndpointHost:
				p.LinkErrs[name] = fmt.Errorf("bridge mode needs an endpoint host:port for link %s", name)
				continue
			default:
				p.Carrier[name] = name
				p.Connections = append(p.Connections, Connection{Link: l, Mesh: ms, Transit: transit[name]})
			}
			for _, d := range l.AllowedIPs() {
				p.Table = append(p.Table, TableEntry{Prefix: d, Link: p.Carrier[name]})
			}
		}
	}
	slices.SortStableFunc(p.Table, func(a, b TableEntry) int { return cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits()) })
}
