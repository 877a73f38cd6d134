package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
)

// DefaultResolveInterval is how often Run re-resolves endpoint names: DNS
// names of peers behind dynamic addresses move, and WireGuard itself
// resolves only once.
const DefaultResolveInterval = 30 * time.Second

// lookupTimeout bounds one lookup so a dead DNS server cannot stall a
// reconcile.
const lookupTimeout = 10 * time.Second

// LookupFunc resolves a host name, like (*net.Resolver).LookupNetIP.
type LookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// Resolver turns peer endpoints into UDP addresses and keeps them current.
// The zero value is ready to use.
type Resolver struct {
	// Lookup defaults to net.DefaultResolver.LookupNetIP.
	Lookup LookupFunc
	// Interval is Run's period; 0 means DefaultResolveInterval.
	Interval time.Duration

	mu    sync.Mutex
	hosts map[string]*hostState
}

// hostState is what is known about one DNS name.
type hostState struct {
	addr netip.Addr // chosen address; invalid while it never resolved
	err  error      // of the most recent lookup; nil when it succeeded
}

// ResolvePeers attaches addresses to the peers' endpoints. Names seen for the
// first time are looked up now; known ones come from the cache that Refresh
// updates. Peers whose name never resolved are returned without an address
// (they can still dial us), and their error is reported by host name so the
// links can show it. Names no longer used by any peer are forgotten.
func (r *Resolver) ResolvePeers(ctx context.Context, peers []mesh.Peer) ([]ResolvedPeer, map[string]error) {
	names := map[string]bool{}
	for _, p := range peers {
		if isName(p.Endpoint) {
			names[p.Endpoint.Host] = true
		}
	}
	r.mu.Lock()
	if r.hosts == nil {
		r.hosts = map[string]*hostState{}
	}
	for host := range r.hosts {
		if !names[host] {
			delete(r.hosts, host)
		}
	}
	var unknown []string
	for host := range names {
		if _, ok := r.hosts[host]; !ok {
			unknown = append(unknown, host)
			r.hosts[host] = &hostState{}
		}
	}
	r.mu.Unlock()
	slices.Sort(unknown)
	r.lookupAll(ctx, unknown)

	r.mu.Lock()
	defer r.mu.Unlock()
	errs := map[string]error{}
	out := make([]ResolvedPeer, 0, len(peers))
	for _, p := range peers {
		rp := ResolvedPeer{Peer: p}
		switch {
		case p.Endpoint.Kind != mesh.EndpointHost:
		case !isName(p.Endpoint):
			ap, _ := p.Endpoint.Addr()
			rp.Addr = net.UDPAddrFromAddrPort(ap)
		default:
			h := r.hosts[p.Endpoint.Host]
			if h != nil && h.addr.IsValid() {
				rp.Addr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.addr, p.Endpoint.Port))
			} else if h != nil && h.err != nil {
				errs[p.Endpoint.Host] = h.err
			}
		}
		out = append(out, rp)
	}
	return out, errs
}

// Refresh looks up all known names again and reports whether any chosen
// address changed (then the caller should Apply again). A failed lookup keeps
// the last good address.
func (r *Resolver) Refresh(ctx context.Context) bool {
	r.mu.Lock()
	hosts := make([]string, 0, len(r.hosts))
	for host := range r.hosts {
		hosts = append(hosts, host)
	}
	r.mu.Unlock()
	slices.Sort(hosts)
	return r.lookupAll(ctx, hosts)
}

// Run calls Refresh every Interval until ctx ends and onChange after each
// refresh that changed an address.
func (r *Resolver) Run(ctx context.Context, onChange func()) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultResolveInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.Refresh(ctx) {
				onChange()
			}
		}
	}
}

// Errors returns the error of every name whose latest lookup failed,
// including names still served from their last good address.
func (r *Resolver) Errors() map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]error{}
	for host, h := range r.hosts {
		if h.err != nil {
			out[host] = h.err
		}
	}
	return out
}

// lookupAll resolves hosts one after another outside the lock, so a slow
// DNS server delays only this call.
func (r *Resolver) lookupAll(ctx context.Context, hosts []string) bool {
	changed := false
	for _, host := range hosts {
		addrs, err := r.lookup(ctx, host)
		if r.record(host, addrs, err) {
			changed = true
		}
	}
	return changed
}

func (r *Resolver) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	lookup := r.Lookup
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := lookup(ctx, "ip", host)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		// Its text already names the host and the DNS server asked.
		return nil, fmt.Errorf("resolve endpoint: %w", err)
	case err != nil:
		return nil, fmt.Errorf("resolve endpoint host %s: %w", host, err)
	case len(addrs) == 0:
		return nil, fmt.Errorf("resolve endpoint host %s: no addresses", host)
	}
	return addrs, nil
}

// record stores a lookup result; it reports whether the chosen address
// changed. Results for names forgotten meanwhile are dropped.
func (r *Resolver) record(host string, addrs []netip.Addr, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[host]
	if !ok {
		return false
	}
	if err != nil {
		h.err = err
		return false
	}
	h.err = nil
	next := chooseAddr(addrs, h.addr)
	if next == h.addr {
		return false
	}
	h.addr = next
	return true
}

// chooseAddr keeps the address in use while the name still has it, so a
// round-robin DNS answer does not make the tunnel hop; otherwise it takes
// the smallest (IPv4 sorts first), so every node picks the same.
func chooseAddr(addrs []netip.Addr, inUse netip.Addr) netip.Addr {
	norm := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		norm = append(norm, a.Unmap().WithZone(""))
	}
	slices.SortFunc(norm, netip.Addr.Compare)
	if inUse.IsValid() && slices.Contains(norm, inUse) {
		return inUse
	}
	return norm[0]
}

func isName(e mesh.Endpoint) bool {
	if e.Kind != mesh.EndpointHost {
		return false
	}
	_, isIP := e.Addr()
	return !isIP
}
