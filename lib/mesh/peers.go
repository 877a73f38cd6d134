package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// DefaultKeepalive keeps NAT mappings of peers alive.
const DefaultKeepalive = 21 * time.Second

// Peer is the desired WireGuard peer of one remote cluster (one public key),
// which may be a member of several meshes.
type Peer struct {
	PublicKey    Key
	PresharedKey Key
	// Endpoint is unset (Kind EndpointNone/Inbound) for peers that dial us.
	Endpoint   Endpoint
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
	// Links are the object names of the links served by this peer, sorted;
	// transit links (gatewayLink) appear under their gateway's peer.
	Links []string
}

// LinkErrors maps link names to problems that keep them from being served.
type LinkErrors map[string]error

// WireGuardPeers groups the accepted foreign links by public key. A link
// without a public key or a group whose links disagree on the preshared key
// or the endpoint is reported in LinkErrors (state Error) and gets no peer.
func (m *Model) WireGuardPeers(keepalive time.Duration) ([]Peer, LinkErrors) {
	errs := LinkErrors{}
	groups := map[Key][]*Link{}
	var transit []*Link
	for _, ms := range m.Meshes {
		for _, l := range ms.Members {
			switch {
			case l.GatewayLink != "":
				transit = append(transit, l)
			case l.PublicKey.IsZero():
				errs[l.Name.String()] = fmt.Errorf("spec.publicKey is required in WireGuard mode")
			default:
				groups[l.PublicKey] = append(groups[l.PublicKey], l)
			}
		}
	}
	peers := map[Key]*Peer{}
	for key, links := range groups {
		if p, err := peerOf(key, links, keepalive); err != nil {
			for _, l := range links {
				errs[l.Name.String()] = err
			}
		} else {
			peers[key] = p
		}
	}
	for _, l := range transit {
		gw, _ := m.Link(l.GatewayLink)
		p, ok := peers[gw.PublicKey]
		if !ok {
			errs[l.Name.String()] = fmt.Errorf("gatewayLink %s has no WireGuard peer", l.GatewayLink)
			continue
		}
		p.AllowedIPs = mergePrefixes(append(p.AllowedIPs, l.AllowedIPs()...))
		p.Links = append(p.Links, l.Name.String())
	}
	out := make([]Peer, 0, len(peers))
	for _, p := range peers {
		slices.Sort(p.Links)
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmp.Compare(a.PublicKey.String(), b.PublicKey.String()) })
	return out, errs
}

// AllowedIPs are the addresses traffic from the link's peer may come from
// and traffic to it goes to: its cluster address and its destinations.
func (l *Link) AllowedIPs() []netip.Prefix {
	return append([]netip.Prefix{hostPrefix(l.IP())}, l.Destinations()...)
}

func peerOf(key Key, links []*Link, keepalive time.Duration) (*Peer, error) {
	p := &Peer{PublicKey: key, Keepalive: keepalive, PresharedKey: links[0].PresharedKey}
	var allowed []netip.Prefix
	for _, l := range links {
		if l.PresharedKey != p.PresharedKey {
			return nil, fmt.Errorf("links %s share public key %s but not the presharedKey; use the same presharedKey on all of them", joinLinkNames(links), key)
		}
		if l.Endpoint.Kind == EndpointHost {
			if p.Endpoint.Kind == EndpointHost && p.Endpoint != l.Endpoint {
				return nil, fmt.Errorf("links %s share public key %s but name different endpoints (%s, %s)", joinLinkNames(links), key, p.Endpoint, l.Endpoint)
			}
			p.Endpoint = l.Endpoint
		} else if p.Endpoint.Kind != EndpointHost {
			p.Endpoint = l.Endpoint
		}
		allowed = append(allowed, l.AllowedIPs()...)
		p.Links = append(p.Links, l.Name.String())
	}
	p.AllowedIPs = mergePrefixes(allowed)
	return p, nil
}

func joinLinkNames(links []*Link) string {
	s := ""
	for i, l := range links {
		if i > 0 {
			s += ", "
		}
		s += l.Name.String()
	}
	return s
}
