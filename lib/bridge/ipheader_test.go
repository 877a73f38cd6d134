package bridge

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// ipv4 builds an IPv4 packet with a transport header of th bytes (TCP data
// offset set accordingly) and payload bytes after it.
func ipv4(proto byte, th, payload int) []byte {
	p := make([]byte, 20+th+payload)
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	copy(p[12:16], []byte{192, 168, 88, 1})
	copy(p[16:20], []byte{192, 168, 88, 2})
	if proto == protoTCP && th >= 13 {
		p[20+12] = byte(th/4) << 4
	}
	return p
}

func ipv6(proto byte, th, payload int) []byte {
	p := make([]byte, 40+th+payload)
	p[0], p[6], p[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(p[4:6], uint16(th+payload))
	a, b := netip.MustParseAddr("fd88::1").As16(), netip.MustParseAddr("fd88::2").As16()
	copy(p[8:24], a[:])
	copy(p[24:40], b[:])
	if proto == protoTCP && th >= 13 {
		p[40+12] = byte(th/4) << 4
	}
	return p
}

func with(p []byte, f func([]byte)) []byte { f(p); return p }

func TestInspect(t *testing.T) {
	tcp4 := Offload{PartialChecksum: true, CsumStart: 20, CsumOffset: 16}
	gso4 := Offload{PartialChecksum: true, GSO: GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	gso6 := Offload{PartialChecksum: true, GSO: GSOTCPv6, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	udp6 := Offload{PartialChecksum: true, GSO: GSOUDP, GSOSize: 1200, CsumStart: 40, CsumOffset: 6}
	for _, tc := range []struct {
		name    string
		pkt     []byte
		o       Offload
		hdrLen  int
		inMsg   string // expected error, "" for none
		src4or6 string
	}{
		{name: "plain IPv4 ICMP", pkt: ipv4(1, 8, 56), src4or6: "192.168.88.1"},
		{name: "IPv4 TCP with partial checksum", pkt: ipv4(protoTCP, 32, 0), o: tcp4, hdrLen: 52, src4or6: "192.168.88.1"},
		{name: "IPv4 TCP super-packet", pkt: ipv4(protoTCP, 32, 64000), o: gso4, hdrLen: 52},
		{name: "IPv6 TCP super-packet", pkt: ipv6(protoTCP, 20, 64000), o: gso6, hdrLen: 60, src4or6: "fd88::1"},
		{name: "IPv6 UDP segmentation", pkt: ipv6(protoUDP, 8, 12000), o: udp6, hdrLen: 48},
		{name: "not IP", pkt: []byte{0x20, 1, 2, 3}, inMsg: "not an IPv4 or IPv6"},
		{name: "IPv4 header too short", pkt: with(ipv4(1, 8, 0), func(p []byte) { p[0] = 0x44 }), inMsg: "header length 16"},
		{name: "IPv4 header past the end", pkt: with(ipv4(1, 8, 0), func(p []byte) { p[0] = 0x4f }), inMsg: "header length 60"},
		{name: "IPv4 total length lies", pkt: with(ipv4(1, 8, 0), func(p []byte) { p[3]++ }), inMsg: "total length"},
		{name: "IPv6 payload length lies", pkt: with(ipv6(1, 8, 0), func(p []byte) { p[5]-- }), inMsg: "payload length"},
		{name: "offloaded fragment", pkt: with(ipv4(protoTCP, 20, 100), func(p []byte) { p[6] = 0x20 }), o: tcp4, inMsg: "fragment"},
		{name: "checksum start off the transport header", pkt: ipv4(protoTCP, 20, 100), o: Offload{PartialChecksum: true, CsumStart: 24, CsumOffset: 16}, inMsg: "checksum start 24"},
		{name: "TCP checksum offset wrong", pkt: ipv4(protoTCP, 20, 100), o: Offload{PartialChecksum: true, CsumStart: 20, CsumOffset: 6}, inMsg: "TCP checksum offset 6"},
		{name: "TCP data offset too small", pkt: with(ipv4(protoTCP, 20, 100), func(p []byte) { p[32] = 0x40 }), o: tcp4, inMsg: "TCP header length 16"},
		{name: "TCP header past the end", pkt: with(ipv4(protoTCP, 20, 0), func(p []byte) { p[32] = 0xf0 }), o: tcp4, inMsg: "TCP header length 60"},
		{name: "IPv6 GSO type on IPv4", pkt: ipv4(protoTCP, 20, 3000), o: Offload{PartialChecksum: true, GSO: GSOTCPv6, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, inMsg: "GSO type 2 for TCP over IPv4"},
		{name: "UDP GSO on TCP", pkt: ipv4(protoTCP, 20, 3000), o: Offload{PartialChecksum: true, GSO: GSOUDP, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, inMsg: "GSO type 3 for TCP"},
		{name: "TCP GSO on UDP", pkt: ipv6(protoUDP, 8, 3000), o: Offload{PartialChecksum: true, GSO: GSOTCPv6, GSOSize: 1200, CsumStart: 40, CsumOffset: 6}, inMsg: "GSO type 2 for UDP"},
		{name: "offload for ICMP", pkt: ipv4(1, 8, 100), o: Offload{PartialChecksum: true, CsumStart: 20, CsumOffset: 2}, inMsg: "IP protocol 1"},
		{name: "GSO without payload", pkt: ipv4(protoTCP, 20, 0), o: gso4, inMsg: "without payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := inspect(tc.pkt, tc.o)
			if tc.inMsg != "" {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.inMsg) {
					t.Fatalf("error %v, want one containing %q", err, tc.inMsg)
				}
				return
			}
			if err != nil || info.hdrLen != tc.hdrLen {
				t.Fatalf("hdrLen %d, %v; want %d", info.hdrLen, err, tc.hdrLen)
			}
			if tc.src4or6 != "" && info.src != netip.MustParseAddr(tc.src4or6) {
				t.Errorf("source %s, want %s", info.src, tc.src4or6)
			}
			if dst, ok := destination(tc.pkt); !ok || dst != info.dst {
				t.Errorf("destination() %v, inspect %v", dst, info.dst)
			}
		})
	}
}

// ipChecksumOK reports whether an IPv4 header's checksum is valid.
func ipChecksumOK(p []byte) bool {
	l3 := int(p[0]&0x0f) * 4
	var sum uint32
	for i := 0; i < l3; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i : i+2]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum) == 0xffff
}

// withChecksum sets an IPv4 header's checksum.
func withChecksum(p []byte) []byte {
	binary.BigEndian.PutUint16(p[10:12], 0)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i : i+2]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
	return p
}

// icmp is an IPv4 ICMP message of type typ from src, with its header
// checksum.
func icmp(typ byte, src string) []byte {
	p := ipv4(1, 8, 28)
	p[20] = typ
	copy(p[12:16], netip.MustParseAddr(src).AsSlice())
	p[28] = 0x45 // the packet an error is about: from the error's destination
	copy(p[28+12:28+16], p[16:20])
	return withChecksum(p)
}
