package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

	table atomic.Pointer[[]mesh.TableEntry] // destination → link, swapped per sync

	ctx     context.Context // bounds the certificate watch
	metrics prometheus.Registerer
	col     *bridgeCollector
}

func newBridgePlane(ctx context.Context, d PlaneDeps) (DataPlane, error) {
	// No kernel firewall: the pump enforces ingress in user space.
	g, err := newGateway(d.Config, d.RunMode, false, d.Log)
	if err != nil {
		return nil, err
	}
	p := &bridgePlane{gateway: g, log: d.Log, kick: d.Kick, unknown: d.Unknown, ctx: ctx, metrics: d.Metrics}
	p.table.Store(&[]mesh.TableEntry{})
	if d.Metrics != nil {
		p.col = newBridgeCollector(p)
		if err := d.Metrics.Register(p.col); err != nil {
			return nil, fmt.Errorf("bridge metrics: %w", err)
		}
	}
	return p, nil
}

func (p *bridgePlane) Transport() mesh.Transport { return mesh.TransportBridge }
func (p *bridgePlane) DefaultPort() uint16       { return uint16(p.cfg.BridgePort) }

// Kind names the data plane for status and metrics.
func (p *bridgePlane) Kind() string {
	if p.tun == nil {
		return ""
	}
	return DataPlaneBridge
}

// route maps a destination to the link carrying it (longest prefix first).
func (p *bridgePlane) route(dst netip.Addr) string {
	return mesh.RouteIn(*p.table.Load(), dst)
}

// open creates the device, the pump and the certificates on first use; a
// failure is retried next sync.
func (p *bridgePlane) open() error {
	if p.tun != nil {
		return nil
	}
	certs, err := bridge.LoadCerts(p.cfg.CertDir)
	if err != nil {
		return fmt.Errorf("bridge certificates in %s: %w", p.cfg.CertDir, err)
	}
	tun, err := bridge.OpenTUN(p.cfg.Interface, p.deviceMTU())
	if err != nil {
		return err
	}
	pump, err := bridge.NewPump(tun, bridge.Config{Route: p.route, LocalAddresses: p.localAddresses, Keepalive: 5 * time.Second, Logger: p.log})
	if err != nil {
		_ = tun.Close()
		return err
	}
	p.tun, p.pump, p.certs = tun, pump, certs
	p.curPump.Store(pump)
	// A new certificate is used for new connections at once; Renew moves
	// the established ones over, so that peers see it too.
	go certs.Watch(p.ctx, time.Second, func() {
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

// connectionPolicy is what a connection accepts: the plan's ingress
// policy for the links it carries — its own and the transit links that use
// it as their gatewayLink (the peer forwards their traffic). The source of a
// packet must be owned by one of them, and the rule of the owning link
// applies, as the kernel chains of WireGuard mode do (Policy.FirewallRules
// is the other rendering of the same policy).
func connectionPolicy(pol *mesh.Policy, c mesh.Connection) bridge.Policy {
	carried := map[string]bool{}
	for _, l := range c.Carries() {
		carried[l] = true
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

// links are the Connector's links of the plan: each announces the local
// link of its own mesh (a peer in two meshes with us has a link in each).
func (p *bridgePlane) links(plan *mesh.GatewayPlan) []bridge.Link {
	var out []bridge.Link
	hellos := map[*mesh.Mesh]*bridge.Hello{}
	for _, c := range plan.Connections {
		h, ok := hellos[c.Mesh]
		if !ok {
			local := LocalHello(p.cfg, c.Mesh)
			h, hellos[c.Mesh] = &local, &local
		}
		l := c.Link
		out = append(out, bridge.Link{ID: l.Name.String(), Endpoint: p.endpoint(l.Endpoint), Identity: l.PeerIdentity(),
			ClusterAddress: l.Address, Policy: connectionPolicy(plan.Policy, c), Local: h})
	}
	return out
}

// Apply makes the namespace and the connections match the plan.
func (p *bridgePlane) Apply(_ context.Context, plan *mesh.GatewayPlan) Report {
	rep := Report{Links: map[string]LinkReport{}}
	if err := p.open(); err != nil {
		rep.DeviceErr = err
		return rep
	}
	dev := p.tun.Name()
	plan = forDevice(plan, dev)
	if err := p.setDevice(dev, plan); err != nil {
		rep.DeviceErr = err
		return rep
	}
	for n, err := range plan.LinkErrs {
		rep.Links[n] = LinkReport{Err: err}
	}
	table := plan.Table
	p.table.Store(&table)
	p.model.Store(plan.Model)

	m := plan.Model
	if len(m.Meshes) == 0 {
		p.closeConnector()
	} else if err := p.connector(m.Meshes[0]); err != nil {
		rep.DeviceErr = err
	} else {
		p.conn.SetLinks(p.links(plan))
	}
	for name, carrier := range plan.Carrier {
		rep.Links[name] = p.report(name, carrier)
	}
	if err := p.gateway.apply(plan); err != nil && rep.DeviceErr == nil {
		rep.DeviceErr = err
	}
	return rep
}

// report is the state of link, carried by the connection of carrier: why
// that connection is down, and for a link with a connection of its own
// (not a transit link, whose figures and HELLO are its gateway link's) the
// tunnel counters — bytes summed over the link's connections, and when the
// current one was set up — and what the peer announced in its HELLO.
func (p *bridgePlane) report(link, carrier string) LinkReport {
	if p.conn == nil {
		return LinkReport{Idle: "no connection"}
	}
	var lr LinkReport
	st, ok := p.conn.Status(carrier)
	connected := ok && st.State == bridge.Connected
	switch {
	case !ok:
		lr.Idle = "no connection"
	case !connected:
		lr.Idle = st.Reason
		if lr.Idle == "" {
			lr.Idle = "not connected"
		}
	}
	if link != carrier {
		return lr
	}
	if s, ok := p.conn.LinkStats(link); ok {
		lr.Peer = &PeerFigures{RxBytes: int64(s.RxBytes), TxBytes: int64(s.TxBytes)}
		if connected {
			lr.Peer.LastHandshake = st.Since
		}
	}
	if connected {
		lr.Advertised = Advertised(st.PeerHello)
	}
	return lr
}

// Drops is the number of packets the link's ingress policy denied.
func (p *bridgePlane) Drops(link string) (uint64, bool) {
	if p.conn == nil {
		return 0, false
	}
	s, ok := p.conn.LinkStats(link)
	return s.Drops.IngressDenied, ok
}

// ApplyServices installs the MeshService DNAT once the device exists.
func (p *bridgePlane) ApplyServices(bindings []*mesh.ServiceBinding) error {
	if p.tun == nil {
		return nil
	}
	return p.gateway.applyServices(bindings)
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

// Close stops the connections, the pump and the device.
func (p *bridgePlane) Close() {
	if p.col != nil {
		p.metrics.Unregister(p.col)
		p.col = nil
	}
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
