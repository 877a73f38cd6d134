package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/netapply"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// wgPlane owns the WireGuard device and the kernel state around it in the
// broker's network namespace.
type wgPlane struct {
	cfg      *Config
	rm       RunMode
	log      *slog.Logger
	dev      *wireguard.Device
	resolver *wireguard.Resolver
	routes   *netapply.Routes
	snat     *netapply.Chains
	fw       *netapply.Chains
	svc      *netapply.Chains
}

// planeResult is what one apply tells the status computation.
type planeResult struct {
	// DeviceErr makes every served link Error (device or key problem).
	DeviceErr error
	// LinkErrs are per-link problems (peer conflicts, endpoint lookups).
	LinkErrs map[string]error
	// Stats per peer public key.
	Stats map[mesh.Key]wireguard.PeerStats
	// PeerOf maps a link to the public key of the peer carrying it.
	PeerOf    map[string]mesh.Key
	PublicKey mesh.Key
}

func newWGPlane(cfg *Config, rm RunMode, log *slog.Logger) (*wgPlane, error) {
	routes, err := netapply.NewRoutes(netapply.RouteConfig{Table: cfg.RouteTable, RulePriority: cfg.RulePriority})
	if err != nil {
		return nil, err
	}
	snat, err := netapply.NewChains(netapply.SNATChains, false)
	if err != nil {
		return nil, err
	}
	fw, err := netapply.NewChains(netapply.FirewallChains, false)
	if err != nil {
		return nil, err
	}
	svc, err := netapply.NewChains(netapply.ServiceChains, false)
	if err != nil {
		return nil, err
	}
	return &wgPlane{cfg: cfg, rm: rm, log: log, routes: routes, snat: snat, fw: fw, svc: svc,
		resolver: &wireguard.Resolver{Interval: cfg.ResolveInterval}}, nil
}

// open creates the device on first use; a failure is retried next sync.
func (p *wgPlane) open() error {
	if p.dev != nil {
		return nil
	}
	// The gateway forwards between the cluster and the mesh.
	if err := netapply.EnableForwarding(true, false); err != nil {
		return fmt.Errorf("enabling IP forwarding: %w", err)
	}
	mtu := p.cfg.MTU
	if mtu == 0 {
		mtu = wireguard.DefaultMTU
		if ifc, err := net.InterfaceByName(p.rm.Interface); err == nil && ifc.MTU > 80 {
			mtu = ifc.MTU - 80 // WireGuard over IPv6 adds up to 80 bytes
		}
	}
	dev, err := wireguard.Open(wireguard.Options{Name: p.cfg.Interface, Mode: p.cfg.WireGuard, MTU: mtu, ListenPort: p.cfg.ListenPort, Logger: p.log})
	if err != nil {
		return fmt.Errorf("WireGuard device %s: %w", p.cfg.Interface, err)
	}
	if r := dev.FallbackReason(); r != "" {
		p.log.Info("kernel WireGuard unavailable, using embedded wireguard-go", "reason", r)
	}
	p.dev = dev
	return nil
}

// kind names the data plane for status and metrics.
func (p *wgPlane) kind() string {
	if p.dev == nil {
		return ""
	}
	return p.dev.Kind()
}

// apply makes the namespace match the model. Routes and NAT do not depend on
// the device's peers, so they are applied even when the key is missing.
func (p *wgPlane) apply(ctx context.Context, m *mesh.Model, key mesh.Key, keyErr error) planeResult {
	res := planeResult{LinkErrs: map[string]error{}, PeerOf: map[string]mesh.Key{}}
	if err := p.open(); err != nil {
		res.DeviceErr = err
		return res
	}
	var addrs []netip.Prefix
	for _, ms := range m.Meshes {
		addrs = append(addrs, ms.Local.Address)
	}
	if err := netapply.SetAddresses(p.dev.Name(), addrs); err != nil {
		res.DeviceErr = err
		return res
	}
	if err := netapply.SetUp(p.dev.Name()); err != nil {
		res.DeviceErr = err
		return res
	}
	peers, linkErrs := m.WireGuardPeers(p.cfg.Keepalive)
	for n, err := range linkErrs {
		res.LinkErrs[n] = err
	}
	resolved, hostErrs := p.resolver.ResolvePeers(ctx, peers)
	for _, pr := range peers {
		for _, l := range pr.Links {
			res.PeerOf[l] = pr.PublicKey
			if err, ok := hostErrs[pr.Endpoint.Host]; ok && pr.Endpoint.Kind == mesh.EndpointHost {
				res.LinkErrs[l] = fmt.Errorf("endpoint %s: %w", pr.Endpoint, err)
			}
		}
	}
	if keyErr != nil {
		res.DeviceErr = keyErr
	} else if err := p.dev.Apply(key, p.cfg.ListenPort, resolved); err != nil {
		res.DeviceErr = fmt.Errorf("configuring WireGuard device %s: %w", p.dev.Name(), err)
	} else {
		res.PublicKey = wireguard.PublicKey(key)
	}
	if st, err := p.dev.Stats(); err == nil {
		res.Stats = st
	}
	var errs []error
	if err := p.routes.Set(m.GatewayRoutes(p.dev.Name())); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	natOpts := mesh.NATOptions{Device: p.dev.Name()}
	if p.rm.PodMode {
		natOpts.PodInterface = p.rm.Interface
	}
	if err := p.snat.Set(m.SNATRules(natOpts)); err != nil {
		errs = append(errs, fmt.Errorf("SNAT rules: %w", err))
	}
	if err := p.fw.Set(m.FirewallRules(p.dev.Name(), p.cfg.ProbePort)); err != nil {
		errs = append(errs, fmt.Errorf("firewall rules: %w", err))
	}
	if len(errs) > 0 && res.DeviceErr == nil {
		res.DeviceErr = fmt.Errorf("gateway setup: %v", errs)
	}
	return res
}

// applyServices installs the MeshService DNAT chains (an empty list removes
// them, so a deleted MeshService leaves no chain behind).
func (p *wgPlane) applyServices(bindings []*mesh.ServiceBinding) error {
	if err := p.svc.Set(mesh.ServiceRules(bindings)); err != nil {
		return fmt.Errorf("MeshService rules: %w", err)
	}
	return nil
}

// close stops the device. Kernel state (routes, chains) stays: --cleanup
// removes it; a kernel WireGuard device keeps forwarding without us.
func (p *wgPlane) close() {
	if p.dev != nil {
		if err := p.dev.Close(); err != nil {
			p.log.Warn("closing WireGuard device", "err", err)
		}
		p.dev = nil
	}
}
