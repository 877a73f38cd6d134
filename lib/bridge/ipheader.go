package bridge

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

const (
	protoTCP = 6
	protoUDP = 17
)

// destination is the destination address of an IP packet read from the tun
// device, for routing.
func destination(pkt []byte) (netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

// ipInfo is what the receive path needs from a packet's headers.
type ipInfo struct {
	src, dst netip.Addr
	// udp is set for a UDP packet with its header (not a fragment), and
	// udpSrc and udpDst are its ports,
	// 0 otherwise.
	udp            bool
	udpSrc, udpDst uint16
	// hdrLen is the length of the IP and transport headers of an offloaded
	// packet (virtio-net's hdr_len).
	hdrLen int
}

// inspect checks a packet from a peer before it goes to the kernel: the IP
// header must be consistent with the length, and offload metadata must
// describe the packet exactly as a kernel would (plain TCP or UDP right
// after the IP header), so a peer cannot steer checksum or segmentation
// work to arbitrary offsets.
func inspect(pkt []byte, o Offload) (ipInfo, error) {
	var info ipInfo
	var l3, proto int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		l3 = int(pkt[0]&0x0f) * 4
		if l3 < 20 || l3 > len(pkt) {
			return info, fmt.Errorf("%w: IPv4 header length %d in packet of %d", ErrMalformed, l3, len(pkt))
		}
		if n := int(binary.BigEndian.Uint16(pkt[2:4])); n != len(pkt) {
			return info, fmt.Errorf("%w: IPv4 total length %d, packet %d", ErrMalformed, n, len(pkt))
		}
		if o.PartialChecksum && binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
			return info, fmt.Errorf("%w: offloaded IPv4 fragment", ErrMalformed)
		}
		info.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		info.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		proto = int(pkt[9])
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		l3 = 40
		if n := int(binary.BigEndian.Uint16(pkt[4:6])); n+40 != len(pkt) {
			return info, fmt.Errorf("%w: IPv6 payload length %d, packet %d", ErrMalformed, n, len(pkt))
		}
		info.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		info.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		proto = int(pkt[6])
	default:
		return info, fmt.Errorf("%w: not an IPv4 or IPv6 packet (%d bytes)", ErrMalformed, len(pkt))
	}
	if proto == protoUDP && l3+8 <= len(pkt) && (pkt[0]>>4 == 6 || binary.BigEndian.Uint16(pkt[6:8])&0x3fff == 0) {
		info.udp = true
		info.udpSrc = binary.BigEndian.Uint16(pkt[l3 : l3+2])
		info.udpDst = binary.BigEndian.Uint16(pkt[l3+2 : l3+4])
	}
	if !o.PartialChecksum {
		return info, nil
	}
	if int(o.CsumStart) != l3 {
		return info, fmt.Errorf("%w: checksum start %d, transport header at %d", ErrMalformed, o.CsumStart, l3)
	}
	v4 := pkt[0]>>4 == 4
	switch proto {
	case protoTCP:
		if o.CsumOffset != 16 || l3+20 > len(pkt) {
			return info, fmt.Errorf("%w: TCP checksum offset %d or short TCP header", ErrMalformed, o.CsumOffset)
		}
		th := int(pkt[l3+12]>>4) * 4
		if th < 20 || l3+th > len(pkt) {
			return info, fmt.Errorf("%w: TCP header length %d", ErrMalformed, th)
		}
		info.hdrLen = l3 + th
		if o.GSO != GSONone && (o.GSO == GSOUDP || (o.GSO == GSOTCPv4) != v4) {
			return info, fmt.Errorf("%w: GSO type %d for TCP over IPv%d", ErrMalformed, o.GSO, pkt[0]>>4)
		}
	case protoUDP:
		if o.CsumOffset != 6 || l3+8 > len(pkt) {
			return info, fmt.Errorf("%w: UDP checksum offset %d or short UDP header", ErrMalformed, o.CsumOffset)
		}
		info.hdrLen = l3 + 8
		if o.GSO != GSONone && o.GSO != GSOUDP {
			return info, fmt.Errorf("%w: GSO type %d for UDP", ErrMalformed, o.GSO)
		}
	default:
		return info, fmt.Errorf("%w: offload for IP protocol %d", ErrMalformed, proto)
	}
	if o.GSO != GSONone && info.hdrLen >= len(pkt) {
		return info, fmt.Errorf("%w: GSO packet without payload", ErrMalformed)
	}
	return info, nil
}
