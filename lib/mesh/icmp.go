package mesh

import (
	"encoding/binary"
	"net/netip"
)

// ICMP errors through the mesh. The kernel sends an ICMP error (a rejected
// connection, "fragmentation needed") from the address of the interface
// that had the offending packet: a node or pod address of this cluster,
// which no peer accepts from us (it is not a source our links own), so the
// peer drops it as spoofed. The sender then retries instead of learning
// that the port is closed, and path MTU discovery through the mesh fails.
// The data planes that read the tunnel's packets in user space therefore
// give such errors the local cluster address of the destination's mesh as
// their source (RewriteICMPErrorSource); the peer's conntrack relates an error to its
// connection by the inner header, whatever the outer source.

// icmpErrorSource reports the source of an IPv4 ICMP error message
// (destination unreachable, time exceeded, parameter problem; not a
// fragment) about a packet its destination sent, and whether pkt is one.
func icmpErrorSource(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 1 {
		return netip.Addr{}, false
	}
	l3 := int(pkt[0]&0x0f) * 4
	if l3 < 20 || len(pkt) < l3+8+20 || binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		return netip.Addr{}, false
	}
	// An error about a packet this cluster sent to the destination: the
	// embedded IPv4 header's source is the error's destination. (A pod may
	// craft errors; one about nothing we sent keeps its source.)
	inner := pkt[l3+8:]
	if inner[0]>>4 != 4 || [4]byte(inner[12:16]) != [4]byte(pkt[16:20]) {
		return netip.Addr{}, false
	}
	switch pkt[l3] {
	case 3, 11, 12:
		return netip.AddrFrom4([4]byte(pkt[12:16])), true
	}
	return netip.Addr{}, false
}

// setSource4 replaces the source address of an IPv4 packet and updates its
// header checksum incrementally (RFC 1624); an ICMP checksum does not cover
// the IP header.
func setSource4(pkt []byte, src netip.Addr) {
	sum := uint32(^binary.BigEndian.Uint16(pkt[10:12]))
	n := src.As4()
	for i := 0; i < 4; i += 2 {
		sum += uint32(^binary.BigEndian.Uint16(pkt[12+i:14+i])) + uint32(binary.BigEndian.Uint16(n[i:i+2]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	copy(pkt[12:16], n[:])
	binary.BigEndian.PutUint16(pkt[10:12], ^uint16(sum))
}

// errorSource is the source an ICMP error from src to dst leaves the
// cluster with, given the local cluster addresses (with their mesh's
// prefix length): none (an invalid address: keep src) when src is inside
// one of their meshes (a local cluster address, a MeshService address, or
// a member this cluster forwards for), else the local address of the mesh
// that holds dst, else the first.
func errorSource(addrs []netip.Prefix, src, dst netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Masked().Contains(src) {
			return netip.Addr{}
		}
	}
	for _, a := range addrs {
		if a.Masked().Contains(dst) {
			return a.Addr()
		}
	}
	if len(addrs) > 0 {
		return addrs[0].Addr()
	}
	return netip.Addr{}
}

// RewriteICMPErrorSource gives pkt, if it is an IPv4 ICMP error about a
// packet this cluster sent, the source errorSource says for the local
// cluster addresses addrs returns (called only for such errors, so a data
// path may call this for every packet); it reports whether it did.
func RewriteICMPErrorSource(pkt []byte, addrs func() []netip.Prefix) bool {
	src, ok := icmpErrorSource(pkt)
	if !ok {
		return false
	}
	to := errorSource(addrs(), src, netip.AddrFrom4([4]byte(pkt[16:20])))
	if !to.Is4() || to == src {
		return false
	}
	setSource4(pkt, to)
	return true
}
