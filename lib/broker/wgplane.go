package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// wgPlane owns the WireGuard device and the kernel state around it in the
// broker's network namespace.
type wgPlane struct {
	*gateway
	log      *slog.Logger
	key      func(context.Context) (mesh.Key, error)
	dev      *wireguard.Device
	resolver *wireguard.Resolver
	// drops are the firewall chains' drop counters as read at the end of
	// the last Apply that checked the chains (one listing of the table per
	// --resync); dropsErr is why they could not be read.
	drops    map[string]uint64
	dropsErr error
	// hold answers HoldProbe from the prober's goroutine: the device and
	// the peers as of the last Apply (nil once closed).
	hold atomic.Pointer[probeHold]
}

// probeHold maps each served link's cluster address (a probe target) to
// the public key of the peer carrying it, on dev.
type probeHold struct {
	dev    *wireguard.Device
	peerOf map[netip.Addr]mesh.Key
}

func newWGPlane(ctx context.Context, d PlaneDeps) (DataPlane, error) {
	g, err := newGateway(d.Config, d.RunMode, true, d.Log)
	if err != nil {
		return nil, err
	}
	p := &wgPlane{gateway: g, log: d.Log, key: d.PrivateKey, resolver: &wireguard.Resolver{Interval: d.Config.ResolveInterval}}
	go p.resolver.Run(ctx, d.Kick)
	return p, nil
}

func (p *wgPlane) Transport() mesh.Transport { return mesh.TransportWireGuard }
func (p *wgPlane) DefaultPort() uint16       { return uint16(p.cfg.ListenPort) }

// open creates the device on first use; a failure is retried next sync.
func (p *wgPlane) open() error {
	if p.dev != nil {
		return nil
	}
	dev, err := wireguard.Open(wireguard.Options{Name: p.cfg.Interface, Mode: p.cfg.WireGuard, MTU: p.deviceMTU(), ListenPort: p.cfg.ListenPort, Logger: p.log,
		LocalAddresses: p.localAddresses})
	if err != nil {
		return fmt.Errorf("WireGuard device %s: %w", p.cfg.Interface, err)
	}
	if r := dev.FallbackReason(); r != "" {
		p.log.Info("kernel WireGuard unavailable, using embedded wireguard-go", "reason", r)
	}
	// The owner's identity on the interface: a standby in the same network
	// namespace (node mode, two replicas on one node) must tell the
	// active broker's device from one a crashed broker left.
	if err := setOwner(p.cfg.Interface, p.cfg.Identity); err != nil {
		p.log.Warn("marking the WireGuard device with this broker's identity", "err", err)
	}
	p.dev = dev
	return nil
}

// ownerAlias is the interface alias (ifalias) naming the broker that owns
// a device.
func ownerAlias(identity string) string { return "kubelink-broker:" + identity }

func setOwner(name, identity string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if l.Attrs().Alias == ownerAlias(identity) {
		return nil
	}
	return netlink.LinkSetAlias(l, ownerAlias(identity))
}

// Kind names the data plane for status and metrics.
func (p *wgPlane) Kind() string {
	if p.dev == nil {
		return ""
	}
	return p.dev.Kind()
}

// Apply makes the namespace match the plan. Routes and NAT do not depend on
// the device's peers, so they are applied even when the key is missing.
func (p *wgPlane) Apply(ctx context.Context, plan *mesh.GatewayPlan) Report {
	rep := Report{Links: map[string]LinkReport{}}
	if err := p.open(); err != nil {
		rep.DeviceErr = err
		return rep
	}
	t0 := time.Now()
	tDev, tGw := t0, t0
	defer func() {
		// The drop counters are one more listing of mangle: read on the
		// passes that check the chains (every --resync), not on each.
		tDrops := time.Now()
		if p.checking || p.drops == nil {
			p.drops, p.dropsErr = p.fw.Drops("mangle")
		}
		p.log.Debug("WireGuard plane pass", "checked", p.checking, "device", tDev.Sub(t0), "gateway", tGw.Sub(tDev), "drops", time.Since(tDrops))
	}()
	plan = forDevice(plan, p.dev.Name())
	if err := p.setDevice(p.dev.Name(), plan); err != nil {
		rep.DeviceErr = err
		return rep
	}
	for n, err := range plan.LinkErrs {
		rep.Links[n] = LinkReport{Err: err}
	}
	resolved, hostErrs := p.resolver.ResolvePeers(ctx, plan.Peers)
	key, keyErr := p.key(ctx)
	if keyErr != nil {
		rep.DeviceErr = keyErr
	} else if err := p.dev.Apply(key, p.cfg.ListenPort, resolved); err != nil {
		rep.DeviceErr = fmt.Errorf("configuring WireGuard device %s: %w", p.dev.Name(), err)
	} else {
		rep.PublicKey = wireguard.PublicKey(key)
	}
	stats, _ := p.dev.Stats()
	peerOf := map[netip.Addr]mesh.Key{}
	for _, pr := range plan.Peers {
		for _, l := range pr.Links {
			if ml, ok := plan.Model.Link(l); ok {
				peerOf[ml.IP()] = pr.PublicKey
			}
			var lr LinkReport
			if err, ok := hostErrs[pr.Endpoint.Host]; ok && pr.Endpoint.Kind == mesh.EndpointHost {
				lr.Err = fmt.Errorf("endpoint %s: %w", pr.Endpoint, err)
			}
			// A transit link shares its gateway's peer; that peer's figures
			// are the gateway link's, so a transit link shows only its RTT.
			if s, ok := stats[pr.PublicKey]; ok && plan.Carrier[l] == l {
				lr.Peer = &PeerFigures{LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes}
			}
			rep.Links[l] = lr
		}
	}
	p.hold.Store(&probeHold{dev: p.dev, peerOf: peerOf})
	tDev = time.Now()
	if err := p.gateway.apply(plan); err != nil && rep.DeviceErr == nil {
		rep.DeviceErr = err
	}
	tGw = time.Now()
	return rep
}

// HoldProbe reports that a probe to target would only wait in memory: the
// embedded device has no session with the peer carrying it (the prober
// then probes it once per handshake attempt; Device.Sessionless).
func (p *wgPlane) HoldProbe(target netip.Addr) bool {
	h := p.hold.Load()
	if h == nil {
		return false
	}
	key, ok := h.peerOf[target]
	return ok && h.dev.Sessionless(key)
}

// Drops is the packet counter of the link's firewall chain as read at the
// end of the last Apply that checked the chains; a link without a chain
// counts zero.
func (p *wgPlane) Drops(link string) (uint64, bool) {
	if p.dev == nil || p.dropsErr != nil {
		return 0, false
	}
	return p.drops[mesh.FirewallChain(link)], true
}

// ApplyServices installs the MeshService DNAT once the device exists.
func (p *wgPlane) ApplyServices(bindings []*mesh.ServiceBinding) error {
	if p.dev == nil {
		return nil
	}
	return p.gateway.applyServices(bindings)
}

// Close hands the data plane over: it runs when the broker stops
// (SIGTERM, a rolling update) or loses the Lease, and either way another
// broker is about to own the key. The device goes, of either kind — a
// kernel device would otherwise outlive the process with the mesh's key,
// its peers and their keepalives, and every packet it sent would roam the
// peers' endpoints back from the new gateway to this node. Routes through
// the device go with it; chains stay (inert without the device; --cleanup
// removes them). Only a crash leaves a kernel device behind: a restart that
// finds the Lease still its own reuses it without interrupting traffic, one
// that finds another holder removes it (removeStaleDevice).
//
// Without leader election there is no other broker to hand over to: the
// device is only closed, and a kernel device keeps forwarding through a
// restart, as it did before.
func (p *wgPlane) Close() {
	if p.dev == nil {
		return
	}
	p.hold.Store(nil)
	op, do := "removing", p.dev.Delete
	if !p.cfg.LeaderElect {
		op, do = "closing", p.dev.Close
	}
	if err := do(); err != nil {
		p.log.Warn(op+" WireGuard device", "err", err)
	}
	p.dev = nil
}

// removeStaleDevice deletes a kernel WireGuard interface of the broker's
// name that an earlier, crashed process left in this namespace, while
// another broker (holder) holds the Lease: a standby owns no device. A
// device marked as the holder's (a standby on the active broker's node, in
// node mode) and interfaces of another kind are never touched.
func removeStaleDevice(name, holder string) (bool, error) {
	l, err := netlink.LinkByName(name)
	var missing netlink.LinkNotFoundError
	if errors.As(err, &missing) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
	if l.Type() != "wireguard" || l.Attrs().Alias == ownerAlias(holder) {
		return false, nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete stale WireGuard device %s: %w", name, err)
	}
	return true, nil
}
