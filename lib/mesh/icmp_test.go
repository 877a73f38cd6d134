package mesh

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// icmp4 is an IPv4 ICMP message of type typ from src to dst with a valid
// header checksum.
func icmp4(typ byte, src, dst string) []byte {
	p := make([]byte, 20+8+28)
	p[0], p[8], p[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	copy(p[12:16], netip.MustParseAddr(src).AsSlice())
	copy(p[16:20], netip.MustParseAddr(dst).AsSlice())
	p[20] = typ
	// the packet the error is about: from dst
	p[28] = 0x45
	copy(p[28+12:28+16], netip.MustParseAddr(dst).AsSlice())
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

func headerChecksumOK(p []byte) bool {
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i : i+2]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum) == 0xffff
}

func TestICMPErrorSource(t *testing.T) {
	tcp := icmp4(3, "10.244.0.1", "192.168.0.11")
	tcp[9] = 6
	frag := icmp4(3, "10.244.0.1", "192.168.0.11")
	frag[7] = 8
	v6 := make([]byte, 60)
	v6[0], v6[6] = 0x60, 58
	for _, c := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"destination unreachable", icmp4(3, "10.244.0.1", "192.168.0.11"), true},
		{"time exceeded", icmp4(11, "10.244.0.1", "192.168.0.11"), true},
		{"parameter problem", icmp4(12, "10.244.0.1", "192.168.0.11"), true},
		{"echo reply", icmp4(0, "10.244.0.1", "192.168.0.11"), false},
		{"echo request", icmp4(8, "10.244.0.1", "192.168.0.11"), false},
		{"TCP", tcp, false},
		{"a later fragment", frag, false},
		{"truncated", icmp4(3, "10.244.0.1", "192.168.0.11")[:24], false},
		{"IPv6", v6, false},
		{"about a packet its destination did not send", func() []byte { p := icmp4(3, "10.244.0.1", "192.168.0.11"); p[28+15] = 99; return p }(), false},
		{"without the packet it is about", icmp4(3, "10.244.0.1", "192.168.0.11")[:40], false},
	} {
		src, ok := icmpErrorSource(c.pkt)
		if ok != c.want || (ok && src != netip.MustParseAddr("10.244.0.1")) {
			t.Errorf("%s: %v %v, want %v", c.name, src, ok, c.want)
		}
	}
	// The rewrite keeps the header checksum valid, whatever the addresses.
	for _, to := range []string{"192.168.0.12", "255.255.255.255", "0.0.0.1", "10.244.0.1"} {
		p := icmp4(3, "10.244.0.1", "192.168.0.11")
		setSource4(p, netip.MustParseAddr(to))
		if got := netip.AddrFrom4([4]byte(p[12:16])); got.String() != to || !headerChecksumOK(p) {
			t.Errorf("source set to %s: %s, checksum valid %v", to, got, headerChecksumOK(p))
		}
	}
}

func TestRewriteICMPErrorSource(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("192.168.0.12/24"), netip.MustParsePrefix("10.99.0.2/24")}
	addrs := func() []netip.Prefix { return local }
	for _, c := range []struct {
		name, src, dst, want string
	}{
		{"from a pod, to mesh 1", "10.244.0.1", "192.168.0.11", "192.168.0.12"},
		{"from a node, to mesh 2", "172.18.0.5", "10.99.0.7", "10.99.0.2"},
		{"to no mesh: the first address", "172.18.0.5", "100.64.0.9", "192.168.0.12"},
		{"from a local cluster address: kept", "10.99.0.2", "192.168.0.11", "10.99.0.2"},
		{"from another address of a mesh (transit, a MeshService): kept", "192.168.0.100", "192.168.0.11", "192.168.0.100"},
	} {
		p := icmp4(3, c.src, c.dst)
		changed := RewriteICMPErrorSource(p, addrs)
		got := netip.AddrFrom4([4]byte(p[12:16])).String()
		if got != c.want || changed != (c.src != c.want) || !headerChecksumOK(p) {
			t.Errorf("%s: source %s (changed %v, checksum ok %v), want %s", c.name, got, changed, headerChecksumOK(p), c.want)
		}
	}
	if RewriteICMPErrorSource(icmp4(3, "10.244.0.1", "192.168.0.11"), func() []netip.Prefix { return nil }) {
		t.Errorf("rewritten without local addresses")
	}
	echo := icmp4(8, "10.244.0.1", "192.168.0.11")
	if RewriteICMPErrorSource(echo, addrs) {
		t.Errorf("an echo request was rewritten")
	}
}
