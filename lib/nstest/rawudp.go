package nstest

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// SendRawUDP sends one IPv4 UDP datagram from n with the source address src,
// whatever n's own addresses are (a raw socket writes the IP header), the way
// a compromised peer would forge it. The source port is 4242.
func (n *Namespace) SendRawUDP(t testing.TB, src netip.Addr, dst netip.AddrPort, payload string) {
	t.Helper()
	pkt := make([]byte, 28, 28+len(payload))
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(pkt[2:4], uint16(28+len(payload)))
	copy(pkt[12:16], src.AsSlice())
	copy(pkt[16:20], dst.Addr().AsSlice())
	binary.BigEndian.PutUint16(pkt[20:22], 4242)
	binary.BigEndian.PutUint16(pkt[22:24], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:26], uint16(8+len(payload)))
	pkt = append(pkt, payload...)
	if err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
	}); err != nil {
		t.Fatalf("send raw UDP: %v", err)
	}
}
