package mesh

import (
	"cmp"
	"net/netip"
	"slices"
)

// Packet is what an ingress decision looks at: a packet a peer sent into
// this cluster.
type Packet struct {
	Src, Dst netip.Addr
	// UDP is set for a UDP packet (not a later fragment); the ports are its.
	UDP              bool
	SrcPort, DstPort uint16
}

// Decision is the verdict of a Policy on one packet.
type Decision uint8

const (
	// Accept lets the packet into the cluster.
	Accept Decision = iota
	// DropSpoofed: the source is not owned by a link of the peer it came from.
	DropSpoofed
	// DropDenied: the ingress rule of the link owning the source drops it.
	DropDenied
)

func (d Decision) String() string {
	switch d {
	case Accept:
		return "accept"
	case DropSpoofed:
		return "spoofed"
	case DropDenied:
		return "denied"
	}
	return "unknown"
}

// LinkPolicy is the ingress rule of one foreign link, as data: what its peer
// may send into this cluster from the sources the link owns. Both data planes
// enforce it — the WireGuard plane through the kernel chains FirewallRules
// renders from it, the bridge in user space through Policy.Decide — so that a
// link behaves the same whichever plane carries it.
type LinkPolicy struct {
	Link string
	// Mesh is the name of the link's mesh.
	Mesh string
	// Sources are the networks the link owns: its cluster address, service
	// CIDR and egress (AllowedIPs).
	Sources []netip.Prefix
	// Probe is the health-probe responder on the local cluster address of
	// the link's mesh: UDP packets to it always pass, and so do the replies
	// to our own probes — from its port to ProbeReplyPort, the prober's
	// source port — and nothing else on the probe's ports.
	Probe          netip.AddrPort
	ProbeReplyPort uint16
	// members are the sources of every member of the link's mesh, shared
	// by all the mesh's LinkPolicies (see Transit): one list per mesh
	// rather than, per link, the networks of every other member, which grew
	// with links × links (issue #33).
	members []sourceOwner
	// Local is the local cluster address of the link's mesh. Unless denied,
	// packets to it pass the link's rule whatever Allow says: what may
	// reach it is decided by the cluster address's own rule
	// (GatewayPlan.LocalRules: tracked replies, probe, MeshService ports),
	// so an allow list need not name it for replies to come back.
	Local netip.Addr
	// Deny is dropped; then only Allow passes.
	Deny, Allow []netip.Prefix
	// Default reports that Allow is the secure default (neither the link nor
	// its LocalLink has allow entries): the mesh network and the local
	// service CIDR, i.e. the local cluster address, MeshService addresses,
	// transit and the exported services, less the API server's Service (the
	// service CIDR's first address, added to Deny) — not the node or pod
	// networks or 169.254.0.0/16.
	Default bool
}

// Allows decides on a packet whose source the link owns.
func (lp *LinkPolicy) Allows(p Packet) bool {
	if pr := lp.Probe; pr.IsValid() && p.UDP && p.Dst == pr.Addr() {
		if p.DstPort == pr.Port() || p.SrcPort == pr.Port() && p.DstPort == lp.ProbeReplyPort {
			return true
		}
	}
	switch {
	case lp.Transit(p.Dst):
		return true
	case inAny(lp.Deny, p.Dst):
		return false
	case p.Dst == lp.Local:
		return true
	}
	return inAny(lp.Allow, p.Dst)
}

// Transit reports whether dst is in the networks of another member of the
// link's mesh: such traffic passes through us and is left to that member's
// own firewall.
func (lp *LinkPolicy) Transit(dst netip.Addr) bool {
	for _, m := range lp.members {
		if m.link != lp && m.prefix.Contains(dst) {
			return true
		}
	}
	return false
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Policy is the ingress policy of a gateway: the rule of every foreign link
// and which link owns which source.
type Policy struct {
	// Links in model order (meshes by name, members by name).
	Links []*LinkPolicy
	// owners maps sources to links, longest prefix first; equal prefixes
	// (only the same WireGuard peer in several meshes may repeat a network)
	// keep model order.
	owners []sourceOwner
}

type sourceOwner struct {
	prefix netip.Prefix
	link   *LinkPolicy
}

// ProbeReplyPort is the prober's source port for a responder port: replies
// to our probes come back to it, and the firewall lets exactly those in.
func ProbeReplyPort(probePort int) uint16 {
	if probePort <= 0 || probePort >= 65535 {
		return 0
	}
	return uint16(probePort + 1)
}

// Policy renders the ingress policy of every accepted foreign link. probePort
// is the health-probe responder's UDP port (0: no probe exemption).
func (m *Model) Policy(probePort int) *Policy {
	p := &Policy{}
	for _, ms := range m.Meshes {
		var members []sourceOwner
		for _, l := range ms.Members {
			lp := &LinkPolicy{Link: l.Name.String(), Mesh: ms.Name, Sources: l.AllowedIPs(), Local: ms.Local.IP()}
			if probePort > 0 && probePort < 65535 {
				lp.Probe = netip.AddrPortFrom(ms.Local.IP(), uint16(probePort))
				lp.ProbeReplyPort = ProbeReplyPort(probePort)
			}
			in := EffectiveIngress(ms.Local.Ingress, l.Ingress)
			lp.Deny, lp.Allow = in.Deny, in.Allow
			if len(lp.Allow) == 0 {
				lp.Default = true
				lp.Allow = []netip.Prefix{ms.CIDR()}
				if sc := ms.Local.ServiceCIDR; sc.IsValid() {
					lp.Allow = append(lp.Allow, sc)
					// The kubernetes Service (the first address of the
					// service CIDR) is the API server: not exported by default.
					lp.Deny = mergePrefixes(append(lp.Deny, hostPrefix(ServiceIP(sc, 1))))
				}
				lp.Allow = mergePrefixes(lp.Allow)
			}
			p.Links = append(p.Links, lp)
			for _, s := range lp.Sources {
				members = append(members, sourceOwner{s, lp})
			}
		}
		for _, lp := range p.Links[len(p.Links)-len(ms.Members):] {
			lp.members = members
		}
		p.owners = append(p.owners, members...)
	}
	slices.SortStableFunc(p.owners, func(a, b sourceOwner) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) })
	return p
}

// Link returns the policy of a link by name.
func (p *Policy) Link(name string) (*LinkPolicy, bool) {
	for _, lp := range p.Links {
		if lp.Link == name {
			return lp, true
		}
	}
	return nil, false
}

// Owner returns the link that owns src: the one with the longest source
// prefix containing it (the first in model order among equal ones).
func (p *Policy) Owner(src netip.Addr) (*LinkPolicy, bool) {
	for _, o := range p.owners {
		if o.prefix.Contains(src) {
			return o.link, true
		}
	}
	return nil, false
}

// Decide judges a packet that arrived from a peer carrying the links for
// which carries is true (a WireGuard peer, or a bridge connection with its
// transit links). The source must be owned — by longest prefix, not mere
// containment — by a link of that peer; the rule applied is that of the
// owning link (the first in model order where the same peer repeats a
// network in several meshes, as the kernel's first matching jump does).
func (p *Policy) Decide(carries func(link string) bool, pkt Packet) Decision {
	var owner *LinkPolicy
	bits := -1
	carried := false
	for _, o := range p.owners {
		if bits >= 0 && o.prefix.Bits() < bits {
			break
		}
		if !o.prefix.Contains(pkt.Src) {
			continue
		}
		if owner == nil {
			owner, bits = o.link, o.prefix.Bits()
		}
		carried = carried || carries(o.link.Link)
	}
	switch {
	case owner == nil || !carried:
		return DropSpoofed
	case !owner.Allows(pkt):
		return DropDenied
	}
	return Accept
}
