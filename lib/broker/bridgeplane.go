package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
)

// DataPlaneBridge names the TLS bridge data plane in status and metrics.
const DataPlaneBridge = "bridge"

// bridgePlane owns the tun device, the packet pump and the TLS connections of
// the bridge data plane (--mode=bridge), and the kernel state around the
// device (addresses, routes, SNAT, MeshService DNAT) like wgPlane. Ingress
// rules are enforced in user space by the pump (Policy.Ingress).
//
// Several meshes share the device, the pump, the listener and one
// Connector, as they share the WireGuard device: the device carries every
// mesh's local address, and each link announces in its HELLO the local
// cluster address of its own mesh (bridge.Link.Local). A peer that is in
// two meshes with this cluster has a link in each; the accepting side
// tells them apart by the cluster address in the peer's HELLO.
type bridgePlane struct {
	*gateway
	log  *slog.Logger
	kick func()
	// unknown handles authenticated peers without a link (--auto-connect);
	// nil rejects them.
	unknown func(*mesh.Mesh, bridge.UnknownPeer) error

	tun   *bridge.TUN
	pump  *bridge.Pump
	certs *bridge.Certs
	conn  *bridge.Connector
	hello bridge.Hello               // what conn announces by default (the first mesh's)
	model atomic.Pointer[mesh.Model] // the last applied, for unknown peers

	// For the metrics collector, which runs on other goroutines.
	curConn   atomic.Pointer[bridge.Connector]
	curPump   atomic.Pointer[bridge.Pump]
	rejected  atomic.Uint64 // rejected handshakes of closed Connectors
	untrusted atomic.Uint64 // Reverify closes of closed Connectors

	table atomic.Pointer[[]routeEntry] // destination → link, swapped per sync
	// idle holds, after apply, why each served link is not connected
	// (absent when connected).
	idle map[string]string
}

type routeEntry struct {
	prefix netip.Prefix
	link   string
}

func newBridgePlane(cfg *Config, rm RunMode, log *slog.Logger, kick func(), unknown func(*mesh.Mesh, bridge.UnknownPeer) error) (*bridgePlane, error) {
	// No kernel firewall: the pump enforces ingress in user space.
	g, err := newGateway(cfg, rm, false)
	if err != nil {
		return nil, err
	}
	p := &bridgePlane{gateway: g, log: log, kick: kick, unknown: unknown}
	p.table.Store(&[]routeEntry{})
	return p, nil
}

// kind names the data plane for status and metrics.
func (p *bridgePlane) kind() string {
	if p.tun == nil {
		return ""
	}
	return DataPlaneBridge
}

// route maps a destination to the link carrying it (longest prefix first).
func (p *bridgePlane) route(dst netip.Addr) string {
	for _, e := range *p.table.Load() {
		if e.prefix.Contains(dst) {
			return e.link
		}
	}
	return ""
}

// open creates the device, the pump and the certificates on first use; a
// failure is retried next sync.
func (p *bridgePlane) open(ctx context.Context) error {
	if p.tun != nil {
		return nil
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	certs, err := bridge.LoadCerts(p.cfg.CertDir)
	if err != nil {
		return fmt.Errorf("bridge certificates in %s: %w", p.cfg.CertDir, err)
	}
	tun, err := bridge.OpenTUN(p.cfg.Interface, p.deviceMTU())
	if err != nil {
		return err
	}
	pump, err := bridge.NewPump(tun, bridge.Config{Route: p.route, Keepalive: 5 * time.Second, Logger: p.log})
	if err != nil {
		_ = tun.Close()
		return err
	}
	p.tun, p.pump, p.certs = tun, pump, certs
	p.curPump.Store(pump)
	// A new certificate is used for new connections at once; Renew moves
	// the established ones over, so that peers see it too.
	go certs.Watch(ctx, time.Second, func() {
		p.log.Info("bridge certificates reloaded; checking and renewing the connections", "serial", certs.Leaf().SerialNumber.Text(16))
		if c := p.curConn.Load(); c != nil {
			// A rotated CA: connections whose peer no longer verifies end
			// now instead of living on under the old trust.
			if n := c.Reverify(); n > 0 {
				p.log.Warn("bridge: closed connections whose peer no longer verifies", "count", n)
			}
			c.Renew()
		}
	}, func(err error) { p.log.Warn("reloading bridge certificates", "err", err) })
	return nil
}

// endpoint renders a link's endpoint for the Connector.
func (p *bridgePlane) endpoint(e mesh.Endpoint) string {
	port := int(e.Port)
	if port == 0 {
		port = p.cfg.BridgePort
	}
	return net.JoinHostPort(e.Host, strconv.Itoa(port))
}

// connectionPolicy is what the connection of link gw accepts: the model's
// ingress policy for the links it carries — gw and the transit links that
// use gw as their gatewayLink (the peer forwards their traffic). The source
// of a packet must be owned by one of them, and the rule of the owning link
// applies, as the kernel chains of WireGuard mode do (mesh.FirewallRules is
// the other rendering of the same policy).
func connectionPolicy(pol *mesh.Policy, gw *mesh.Link, transit []*mesh.Link) bridge.Policy {
	carried := map[string]bool{gw.Name.String(): true}
	for _, l := range transit {
		carried[l.Name.String()] = true
	}
	carries := func(link string) bool { return carried[link] }
	return bridge.Policy{Filter: func(p bridge.Packet) bridge.Verdict {
		switch pol.Decide(carries, mesh.Packet{Src: p.Src, Dst: p.Dst, UDP: p.UDP, SrcPort: p.SrcPort, DstPort: p.DstPort}) {
		case mesh.Accept:
			return bridge.Pass
		case mesh.DropSpoofed:
			return bridge.Spoofed
		}
		return bridge.Denied
	}}
}

// apply makes the namespace and the connections match the model.
func (p *bridgePlane) apply(ctx context.Context, m *mesh.Model) planeResult {
	res := planeResult{LinkErrs: map[string]error{}, PeerOf: map[string]mesh.Key{}}
	p.idle = map[string]string{}
	if err := p.open(ctx); err != nil {
		res.DeviceErr = err
		return res
	}
	dev := p.tun.Name()
	if err := p.setDevice(dev, m); err != nil {
		res.DeviceErr = err
		return res
	}

	// Links of every mesh, the routing table of the pump, and their
	// policies (see meshLinks).
	var links []bridge.Link
	var table []routeEntry
	via := map[string]string{} // link → the link whose connection carries it
	pol := m.Policy(p.cfg.ProbePort)
	for _, ms := range m.Meshes {
		ls, t := p.meshLinks(m, ms, pol, via, res)
		links, table = append(links, ls...), append(table, t...)
	}
	slices.SortStableFunc(table, func(a, b routeEntry) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) })
	p.table.Store(&table)
	p.model.Store(m)

	if len(m.Meshes) == 0 {
		p.closeConnector()
	} else if err := p.connector(m.Meshes[0]); err != nil {
		res.DeviceErr = err
	} else {
		p.conn.SetLinks(links)
		for name, gw := range via {
			st, ok := p.conn.Status(gw)
			switch {
			case !ok:
				p.idle[name] = "no connection"
			case st.State != bridge.Connected:
				p.idle[name] = st.Reason
				if p.idle[name] == "" {
					p.idle[name] = "not connected"
				}
			}
		}
	}

	if err := p.gateway.apply(m, dev); err != nil && res.DeviceErr == nil {
		res.DeviceErr = err
	}
	return res
}

// meshLinks are the Connector's links of mesh ms, each announcing the
// local link of ms, with their routing table entries; it records in via
// which connection carries each link and the errors of links it cannot
// serve in res. A transit link (gatewayLink) has no connection of its own:
// its networks are routed into its gateway link's connection, and that
// connection accepts its sources under its ingress rule.
func (p *bridgePlane) meshLinks(m *mesh.Model, ms *mesh.Mesh, policy *mesh.Policy, via map[string]string, res planeResult) ([]bridge.Link, []routeEntry) {
	var links []bridge.Link
	var table []routeEntry
	local := LocalHello(p.cfg, ms)
	transit := map[string][]*mesh.Link{} // gateway link → transit links
	for _, l := range ms.Members {
		if l.GatewayLink != "" {
			transit[l.GatewayLink] = append(transit[l.GatewayLink], l)
		}
	}
	for _, l := range ms.Members {
		name := l.Name.String()
		switch {
		case l.GatewayLink != "":
			if gw, ok := m.Link(l.GatewayLink); !ok || gw.Endpoint.Kind != mesh.EndpointHost {
				res.LinkErrs[name] = fmt.Errorf("gatewayLink %s has no bridge connection (it needs an endpoint host:port)", l.GatewayLink)
				continue
			}
			via[name] = l.GatewayLink
		case l.Endpoint.Kind != mesh.EndpointHost:
			res.LinkErrs[name] = fmt.Errorf("bridge mode needs an endpoint host:port for link %s", name)
			continue
		default:
			via[name] = name
			pol := connectionPolicy(policy, l, transit[name])
			links = append(links, bridge.Link{ID: name, Endpoint: p.endpoint(l.Endpoint), Identity: l.PeerIdentity(), ClusterAddress: l.Address, Policy: pol, Local: &local})
		}
		res.PeerOf[name] = mesh.Key{}
		for _, d := range l.AllowedIPs() {
			table = append(table, routeEntry{d, via[name]})
		}
	}
	return links, table
}

// connector makes sure a Connector runs and serves :BridgePort; it
// announces the local link of ms where a link does not say otherwise.
func (p *bridgePlane) connector(ms *mesh.Mesh) error {
	hello := LocalHello(p.cfg, ms)
	if p.conn != nil && bridge.SameHello(hello, p.hello) {
		return nil
	}
	p.closeConnector()
	var onUnknown func(bridge.UnknownPeer) error
	if p.unknown != nil {
		onUnknown = func(u bridge.UnknownPeer) error {
			// Auto-connect into the mesh the peer's cluster address is in.
			if m := p.model.Load(); m != nil {
				if in, ok := m.MeshForAddress(u.Hello.ClusterAddress.Addr()); ok {
					return p.unknown(in, u)
				}
			}
			return p.unknown(ms, u) // refused: not in the mesh
		}
	}
	conn, err := bridge.NewConnector(bridge.ConnectorConfig{Pump: p.pump, Certs: p.certs, Hello: hello, Logger: p.log,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, OnUnknown: onUnknown,
		OnChange: func(id string, st bridge.LinkStatus) {
			p.log.Info("bridge link", "link", id, "state", st.State.String(), "reason", st.Reason)
			p.kick()
		}})
	if err != nil {
		return fmt.Errorf("bridge connector: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p.cfg.BridgePort)))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("bridge listener on port %d: %w", p.cfg.BridgePort, err)
	}
	go func() {
		if err := conn.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Warn("bridge listener", "err", err)
		}
	}()
	p.conn, p.hello = conn, hello
	p.curConn.Store(conn)
	return nil
}

func (p *bridgePlane) closeConnector() {
	if p.conn != nil {
		p.curConn.Store(nil)
		_ = p.conn.Close()
		n, _ := p.conn.Rejected()
		p.rejected.Add(n)
		p.untrusted.Add(p.conn.Untrusted())
		p.conn = nil
	}
}

// figures are the tunnel counters of a link for its status: bytes summed
// over the link's connections, and when the current one was set up.
func (p *bridgePlane) figures(link string) *PeerFigures {
	if p.conn == nil {
		return nil
	}
	s, ok := p.conn.LinkStats(link)
	if !ok {
		return nil
	}
	f := &PeerFigures{RxBytes: int64(s.RxBytes), TxBytes: int64(s.TxBytes)}
	if st, ok := p.conn.Status(link); ok && st.State == bridge.Connected {
		f.LastHandshake = st.Since
	}
	return f
}

// advertised is what the peer of link announced in the HELLO of its
// current connection (status.advertised); nil when not connected.
func (p *bridgePlane) advertised(link string) *v1alpha1.AdvertisedInfo {
	if p.conn == nil {
		return nil
	}
	st, ok := p.conn.Status(link)
	if !ok || st.State != bridge.Connected {
		return nil
	}
	return Advertised(st.PeerHello)
}

// close stops the connections, the pump and the device.
func (p *bridgePlane) close() {
	p.closeConnector()
	if p.pump != nil {
		_ = p.pump.Close()
		p.pump = nil
		p.curPump.Store(nil)
	}
	if p.tun != nil {
		if err := p.tun.Close(); err != nil {
			p.log.Warn("closing tun device", "err", err)
		}
		p.tun = nil
	}
}
