package bridge

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeDevice plays the tun device without root: tests push bursts of
// packets (each burst is read back to back, then the device runs dry), and
// it records what the pump writes.
type fakeDevice struct {
	bursts   chan [][]byte
	cur      [][]byte // only touched by the pump's reader
	written  chan []byte
	stopOnce sync.Once
	stop     chan struct{}
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{bursts: make(chan [][]byte, 16), written: make(chan []byte, 64), stop: make(chan struct{})}
}

func (d *fakeDevice) Name() string { return "fake0" }

func (d *fakeDevice) read(b []byte, wait bool) (int, error) {
	if len(d.cur) == 0 {
		if !wait {
			return 0, errWouldBlock
		}
		select {
		case d.cur = <-d.bursts:
		case <-d.stop:
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(b, d.cur[0])
	d.cur = d.cur[1:]
	return n, nil
}

func (d *fakeDevice) write(b []byte) error {
	d.written <- slices.Clone(b)
	return nil
}

func (d *fakeDevice) interruptRead() { d.stopOnce.Do(func() { close(d.stop) }) }
func (d *fakeDevice) resumeRead()    {}

// fromKernel is pkt as the kernel hands it over: with a virtio-net header.
func fromKernel(pkt []byte, o Offload) []byte {
	h := make([]byte, virtioHdrLen)
	putVirtio(h, o, 0)
	return append(h, pkt...)
}

// packet is an IPv4 packet from src to dst tagged with id (the IP ID).
func packet(src, dst string, id uint16, size int) []byte {
	p := ipv4(1, 8, size)
	copy(p[12:16], netip.MustParseAddr(src).AsSlice())
	copy(p[16:20], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(p[4:6], id)
	return p
}

func ipID(p []byte) uint16 { return binary.BigEndian.Uint16(p[4:6]) }

// remote is the other end of a peer's connection, decoding what arrives.
type remote struct {
	conn   net.Conn
	frames chan Frame
}

func newRemote(t *testing.T, conn net.Conn) *remote {
	r := &remote{conn: conn, frames: make(chan Frame, 64)}
	go func() {
		defer close(r.frames)
		var hdr [FrameHeaderLen]byte
		for {
			if _, err := io.ReadFull(conn, hdr[:]); err != nil {
				return
			}
			typ, n, err := ParseFrameHeader(hdr[:])
			if err != nil {
				t.Errorf("remote: %v", err)
				return
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(conn, p); err != nil {
				return
			}
			r.frames <- Frame{Type: typ, Payload: p}
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return r
}

// next returns the next frame that is not a KEEPALIVE.
func (r *remote) next(t *testing.T) Frame {
	t.Helper()
	timeout := time.After(3 * time.Second)
	for {
		select {
		case f, ok := <-r.frames:
			if !ok {
				t.Fatal("connection ended")
			}
			if f.Type != FrameKeepalive {
				return f
			}
		case <-timeout:
			t.Fatal("no frame within 3s")
		}
	}
}

// ids returns the IP IDs of the packets of a PACKETS frame.
func ids(t *testing.T, f Frame) []uint16 {
	t.Helper()
	if f.Type != FramePackets {
		t.Fatalf("got %s, want PACKETS", f.Type)
	}
	var out []uint16
	it := NewPacketIter(f.Payload)
	for it.Next() {
		out = append(out, ipID(it.Packet()))
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	return out
}

var testRoutes = map[netip.Prefix]string{
	netip.MustParsePrefix("10.0.1.0/24"): "b",
	netip.MustParsePrefix("10.0.2.0/24"): "c",
	netip.MustParsePrefix("10.0.3.0/24"): "d", // never connected
}

func newTestPump(t *testing.T, cfg Config) (*Pump, *fakeDevice) {
	t.Helper()
	dev := newFakeDevice()
	cfg.Route = func(dst netip.Addr) string {
		for p, id := range testRoutes {
			if p.Contains(dst) {
				return id
			}
		}
		return ""
	}
	p, err := newPump(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, dev
}

func addRemote(t *testing.T, p *Pump, id string, pol Policy) (*Peer, *remote) {
	t.Helper()
	local, far := net.Pipe()
	pr, err := p.AddPeer(id, local, pol)
	if err != nil {
		t.Fatal(err)
	}
	return pr, newRemote(t, far)
}

func TestTunPacketsGoToTheirPeerInOrderOneFramePerBurst(t *testing.T) {
	p, dev := newTestPump(t, Config{})
	_, b := addRemote(t, p, "b", Policy{})
	_, c := addRemote(t, p, "c", Policy{})
	gso := Offload{PartialChecksum: true, GSO: GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	dev.bursts <- [][]byte{
		fromKernel(packet("192.168.88.1", "10.0.1.1", 1, 100), Offload{}),
		fromKernel(packet("192.168.88.1", "10.0.1.1", 2, 3000), gso),
		fromKernel(packet("192.168.88.1", "10.0.2.1", 11, 100), Offload{}),
		fromKernel(packet("192.168.88.1", "10.0.1.2", 3, 100), Offload{}),
		fromKernel(packet("192.168.88.1", "10.9.9.9", 99, 100), Offload{}),
		fromKernel(packet("192.168.88.1", "10.0.3.1", 98, 100), Offload{}),
		fromKernel(packet("192.168.88.1", "10.0.2.1", 12, 100), Offload{}),
		{0x45, 0, 0}, // too short to route
	}
	dev.bursts <- [][]byte{fromKernel(packet("192.168.88.1", "10.0.1.1", 4, 100), Offload{})}
	f := b.next(t)
	if got := ids(t, f); !slices.Equal(got, []uint16{1, 2, 3}) {
		t.Errorf("b's first frame has packets %v, want [1 2 3]", got)
	}
	it := NewPacketIter(f.Payload)
	it.Next()
	it.Next()
	if it.Offload() != gso {
		t.Errorf("offload of the super-packet arrived as %+v", it.Offload())
	}
	if got := ids(t, b.next(t)); !slices.Equal(got, []uint16{4}) {
		t.Errorf("b's second frame has packets %v, want [4]", got)
	}
	if got := ids(t, c.next(t)); !slices.Equal(got, []uint16{11, 12}) {
		t.Errorf("c's frame has packets %v, want [11 12]", got)
	}
	d := p.Drops()
	if d.NoRoute != 1 || d.NotConnected != 1 || d.Malformed != 1 {
		t.Errorf("drops %+v, want 1 no-route, 1 not-connected, 1 malformed", d)
	}
}

func TestBurstLargerThanAFrameIsSplit(t *testing.T) {
	p, dev := newTestPump(t, Config{})
	_, b := addRemote(t, p, "b", Policy{})
	var burst [][]byte
	for i := range 5 {
		burst = append(burst, fromKernel(packet("192.168.88.1", "10.0.1.1", uint16(i), 65000), Offload{}))
	}
	dev.bursts <- burst
	first, second := ids(t, b.next(t)), ids(t, b.next(t))
	if !slices.Equal(first, []uint16{0, 1, 2, 3}) || !slices.Equal(second, []uint16{4}) {
		t.Errorf("frames %v and %v, want 4 packets of 64 KB and then 1", first, second)
	}
}

func TestPeerPacketsAreCheckedAndWrittenWithTheirOffload(t *testing.T) {
	p, dev := newTestPump(t, Config{})
	pol := Policy{Filter: func(p Packet) Verdict {
		switch {
		case !netip.MustParsePrefix("10.0.1.0/24").Contains(p.Src):
			return Spoofed
		case p.Dst == netip.MustParseAddr("192.168.88.77"):
			return Denied
		}
		return Pass
	}}
	pr, b := addRemote(t, p, "b", pol)
	gso := Offload{PartialChecksum: true, GSO: GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	super := ipv4(protoTCP, 32, 5000)
	copy(super[12:16], []byte{10, 0, 1, 5})
	badLength := packet("10.0.1.5", "192.168.88.2", 3, 50)
	badLength[3]++
	batch := NewBatch()
	for _, e := range []struct {
		pkt []byte
		o   Offload
	}{
		{super, gso},
		{packet("10.0.2.5", "192.168.88.2", 1, 50), Offload{}},  // spoofed
		{packet("10.0.1.5", "192.168.88.77", 2, 50), Offload{}}, // denied
		{badLength, Offload{}},
		{packet("10.0.1.5", "192.168.88.2", 4, 50), Offload{}},
	} {
		if err := batch.Append(e.pkt, e.o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.conn.Write(batch.Frame()); err != nil {
		t.Fatal(err)
	}
	// The kernel's view: needs checksum, TCPv4 GSO, headers of 20+32 bytes.
	virtio := []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	for i, v := range []uint16{52, 1448, 20, 16} {
		vnet.PutUint16(virtio[2+2*i:], v)
	}
	want := []struct {
		virtio []byte
		id     uint16
	}{
		{virtio, 0},
		{make([]byte, virtioHdrLen), 4},
	}
	for i, w := range want {
		select {
		case got := <-dev.written:
			if string(got[:virtioHdrLen]) != string(w.virtio) || ipID(got[virtioHdrLen:]) != w.id {
				t.Errorf("write %d: virtio %v, id %d; want %v, %d", i, got[:virtioHdrLen], ipID(got[virtioHdrLen:]), w.virtio, w.id)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("write %d missing", i)
		}
	}
	// Counters are added after the batch.
	if !waitUntil(func() bool {
		s := pr.Stats()
		return s.RxPackets == 2 && s.Drops.Spoofed == 1 && s.Drops.IngressDenied == 1 && s.Drops.Malformed == 1
	}) {
		t.Errorf("peer stats %+v", pr.Stats())
	}
	// Then garbage: the peer is told and the connection ends.
	_, _ = b.conn.Write([]byte("GET / HTTP/1.1\r\n"))
	f := b.next(t)
	ce, err := ParseClose(f.Payload)
	if f.Type != FrameClose || err != nil || ce.Code != CloseProtocolError {
		t.Fatalf("got %s %q, want CLOSE protocol error", f.Type, f.Payload)
	}
	<-pr.Done()
	if !errors.Is(pr.Err(), ErrBadMagic) {
		t.Errorf("peer ended with %v", pr.Err())
	}
}

func TestNilFilterDeniesEverything(t *testing.T) {
	p, _ := newTestPump(t, Config{})
	pr, b := addRemote(t, p, "b", Policy{})
	batch := NewBatch()
	_ = batch.Append(packet("10.0.1.5", "192.168.88.2", 1, 50), Offload{})
	if _, err := b.conn.Write(batch.Frame()); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(func() bool { return pr.Stats().Drops.IngressDenied == 1 }) || pr.Stats().RxPackets != 0 {
		s := pr.Stats()
		t.Errorf("stats %+v", s)
	}
}

func TestKeepalivesAndTimeout(t *testing.T) {
	p, _ := newTestPump(t, Config{Keepalive: 50 * time.Millisecond, Timeout: 300 * time.Millisecond})
	start := time.Now()
	pr, b := addRemote(t, p, "b", Policy{})
	select {
	case f := <-b.frames:
		if f.Type != FrameKeepalive {
			t.Errorf("idle connection sent %s", f.Type)
		}
	case <-time.After(time.Second):
		t.Fatal("no KEEPALIVE from an idle connection")
	}
	// The remote never sends anything: a dead peer.
	select {
	case <-pr.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("silent peer not noticed")
	}
	if !errors.Is(pr.Err(), os.ErrDeadlineExceeded) || time.Since(start) < 200*time.Millisecond {
		t.Errorf("ended after %v with %v", time.Since(start), pr.Err())
	}
	if p.Peer("b") != nil {
		t.Error("dead peer still listed")
	}
}

func TestNewerConnectionReplacesTheOld(t *testing.T) {
	p, _ := newTestPump(t, Config{})
	old, oldRemote := addRemote(t, p, "b", Policy{})
	cur, _ := addRemote(t, p, "b", Policy{})
	f := oldRemote.next(t)
	if ce, err := ParseClose(f.Payload); f.Type != FrameClose || err != nil || ce.Code != CloseReplaced {
		t.Errorf("old connection got %s %q", f.Type, f.Payload)
	}
	<-old.Done()
	if !errors.Is(old.Err(), ErrReplaced) || p.Peer("b") != cur {
		t.Errorf("old ended with %v; current peer is the new one: %v", old.Err(), p.Peer("b") == cur)
	}
}

func TestCloseTellsThePeers(t *testing.T) {
	p, _ := newTestPump(t, Config{})
	pr, b := addRemote(t, p, "b", Policy{})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	f := b.next(t)
	if ce, err := ParseClose(f.Payload); f.Type != FrameClose || err != nil || *ce != (CloseError{CloseNormal, "shutting down"}) {
		t.Errorf("got %s %q", f.Type, f.Payload)
	}
	if !errors.Is(pr.Err(), ErrRemoved) {
		t.Errorf("peer ended with %v", pr.Err())
	}
	if _, err := p.AddPeer("c", nil, Policy{}); err == nil {
		t.Error("AddPeer after Close succeeded")
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	p, dev := newTestPump(t, Config{QueueLen: 1})
	local, far := net.Pipe() // nobody reads far yet: the writer blocks
	pr, err := p.AddPeer("b", local, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		dev.bursts <- [][]byte{fromKernel(packet("192.168.88.1", "10.0.1.1", uint16(i), 100), Offload{})}
	}
	if !waitUntil(func() bool { return pr.Stats().Drops.QueueFull > 0 }) || p.Drops().QueueFull == 0 {
		t.Errorf("no queue-full drops: peer %+v, pump %+v", pr.Stats().Drops, p.Drops())
	}
	newRemote(t, far) // drain, so Close is quick
}

// waitUntil polls cond for up to 3 seconds.
func waitUntil(cond func() bool) bool {
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// An ICMP error the kernel sent from an address the peer does not accept
// from us leaves with the local cluster address; other packets, and errors
// from an accepted source, keep theirs.
func TestICMPErrorsLeaveWithAnAcceptedSource(t *testing.T) {
	p, dev := newTestPump(t, Config{LocalAddresses: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.168.88.9/24")} }})
	_, b := addRemote(t, p, "b", Policy{})
	unreachable := func(src string) []byte {
		pkt := icmp(3, src)
		copy(pkt[16:20], netip.MustParseAddr("10.0.1.1").AsSlice())
		copy(pkt[28+12:28+16], pkt[16:20])
		return withChecksum(pkt)
	}
	echo := icmp(0, "10.244.0.1")
	copy(echo[16:20], netip.MustParseAddr("10.0.1.1").AsSlice())
	dev.bursts <- [][]byte{fromKernel(unreachable("10.244.0.1"), Offload{}), fromKernel(unreachable("192.168.88.9"), Offload{}),
		fromKernel(withChecksum(echo), Offload{})}
	f := b.next(t)
	var srcs []string
	it := NewPacketIter(f.Payload)
	for it.Next() {
		pkt := it.Packet()
		srcs = append(srcs, netip.AddrFrom4([4]byte(pkt[12:16])).String())
		if !ipChecksumOK(pkt) {
			t.Errorf("packet from %s: bad header checksum", srcs[len(srcs)-1])
		}
	}
	if want := []string{"192.168.88.9", "192.168.88.9", "10.244.0.1"}; !slices.Equal(srcs, want) {
		t.Errorf("sources at the peer %v, want %v", srcs, want)
	}
}
