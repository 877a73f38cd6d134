package netapply

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelink/kubelink/lib/mesh"
)

// DropUnNATed deletes the connection-tracking entries of flows that the
// SNAT rules of scopes rewrite but that were tracked without that rewrite
// (or with a rewrite to another source: the cluster address changed, or
// the destination moved to another mesh):
// a connection whose first packet left before the rules were in place (a
// route into the mesh device set before its SNAT, a broker that started or
// took over while a client was already retrying). The kernel consults the
// nat table only for a connection's first packet, so such an entry keeps
// the connection's packets leaving with a pod's own source until it times
// out (two minutes for an unanswered SYN), and every peer drops them as
// spoofed; a client that reuses the source port in that time is stuck with
// it. Deleting the entry lets the next packet pass the nat table again.
// Entries that were rewritten, and flows outside the scopes, are left
// alone. It returns how many entries it deleted.
func DropUnNATed(scopes []mesh.SNATScope) (uint, error) {
	if len(scopes) == 0 {
		return 0, nil
	}
	f := unNATed(scopes)
	var total uint
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if !f.hasFamily(fam) {
			continue
		}
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += n
		if err != nil {
			return total, fmt.Errorf("deleting connection-tracking entries without SNAT: %w", err)
		}
	}
	return total, nil
}

// unNATed matches a flow that a scope covers and whose reply does not go to
// the scope's source: no source NAT, or one to another address. Flows to
// the local cluster address itself (delivered here, never through the
// device) and flows whose destination was rewritten (DNAT: not a plain
// flow into the mesh) are left alone.
type unNATed []mesh.SNATScope

func (f unNATed) hasFamily(fam netlink.InetFamily) bool {
	for _, s := range f {
		if s.Source.Is4() == (fam == unix.AF_INET) {
			return true
		}
	}
	return false
}

func (f unNATed) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := addrOf(flow.Forward.SrcIP)
	dst, ok2 := addrOf(flow.Forward.DstIP)
	replySrc, ok3 := addrOf(flow.Reverse.SrcIP)
	replyDst, ok4 := addrOf(flow.Reverse.DstIP)
	if !ok1 || !ok2 || !ok3 || !ok4 || replySrc != dst {
		return false
	}
	for _, s := range f {
		if dst == s.Source {
			return false
		}
	}
	for _, s := range f {
		if s.Covers(src, dst) {
			return replyDst != s.Source
		}
	}
	return false
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
