package broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// wgPlane owns the WireGuard device and the kernel state around it in the
// broker's network namespace.
type wgPlane struct {
	*gateway
	log      *slog.Logger
	dev      *wireguard.Device
	resolver *wireguard.Resolver
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
	g, err := newGateway(cfg, rm, true)
	if err != nil {
		return nil, err
	}
	return &wgPlane{gateway: g, log: log, resolver: &wireguard.Resolver{Interval: cfg.ResolveInterval}}, nil
}

// open creates the device on first use; a failure is retried next sync.
func (p *wgPlane) open() error {
	if p.dev != nil {
		return nil
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	dev, err := wireguard.Open(wireguard.Options{Name: p.cfg.Interface, Mode: p.cfg.WireGuard, MTU: p.deviceMTU(), ListenPort: p.cfg.ListenPort, Logger: p.log})
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
	if err := p.setDevice(p.dev.Name(), m); err != nil {
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
	if err := p.gateway.apply(m, p.dev.Name()); err != nil && res.DeviceErr == nil {
		res.DeviceErr = err
	}
	return res
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
