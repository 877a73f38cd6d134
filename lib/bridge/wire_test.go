package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func header(magic string, version byte, t FrameType, n uint32) []byte {
	b := append([]byte(magic), version, byte(t))
	return binary.BigEndian.AppendUint32(b, n)
}

func TestParseFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		typ     FrameType
		n       int
		wantErr error
		inMsg   string
	}{
		{name: "packets", in: header("kl", 1, FramePackets, 1000), typ: FramePackets, n: 1000},
		{name: "largest packets frame", in: header("kl", 1, FramePackets, MaxFramePayload), typ: FramePackets, n: MaxFramePayload},
		{name: "empty keepalive", in: header("kl", 1, FrameKeepalive, 0), typ: FrameKeepalive},
		{name: "unknown type is skippable", in: header("kl", 1, 99, 17), typ: 99, n: 17},
		{name: "short", in: []byte("kl\x01"), wantErr: ErrTruncated, inMsg: "3 of 8 bytes"},
		{name: "bad magic", in: header("GE", 1, FramePackets, 0), wantErr: ErrBadMagic},
		{name: "old kubelink framing", in: []byte{0x00, 0x40, 0x00, 0x45, 0, 0, 0, 0}, wantErr: ErrBadMagic},
		{name: "newer version", in: header("kl", 2, FramePackets, 0), wantErr: ErrVersion, inMsg: "version 2"},
		{name: "packets too large", in: header("kl", 1, FramePackets, MaxFramePayload+1), wantErr: ErrFrameTooLarge},
		{name: "unknown type too large", in: header("kl", 1, 99, MaxFramePayload+1), wantErr: ErrFrameTooLarge},
		{name: "keepalive with payload", in: header("kl", 1, FrameKeepalive, 1), wantErr: ErrFrameTooLarge, inMsg: "KEEPALIVE"},
		{name: "hello too large", in: header("kl", 1, FrameHello, MaxHelloPayload+1), wantErr: ErrFrameTooLarge},
		{name: "close too large", in: header("kl", 1, FrameClose, 2+MaxCloseReason), wantErr: ErrFrameTooLarge},
		{name: "4 GiB", in: header("kl", 1, FramePackets, 0xffffffff), wantErr: ErrFrameTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, n, err := ParseFrameHeader(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.inMsg) {
					t.Fatalf("error %v, want %v containing %q", err, tc.wantErr, tc.inMsg)
				}
				return
			}
			if err != nil || typ != tc.typ || n != tc.n {
				t.Fatalf("got %v, %d, %v; want %v, %d", typ, n, err, tc.typ, tc.n)
			}
		})
	}
}

func TestDecodeFrameSplitsAStream(t *testing.T) {
	stream := AppendKeepalive(nil)
	stream = AppendClose(stream, CloseRejected, "unknown link")
	stream = append(stream, AppendKeepalive(nil)[:5]...)
	f, rest, err := DecodeFrame(stream)
	if err != nil || f.Type != FrameKeepalive || len(f.Payload) != 0 {
		t.Fatalf("first frame %v %q %v", f.Type, f.Payload, err)
	}
	f, rest, err = DecodeFrame(rest)
	if err != nil || f.Type != FrameClose {
		t.Fatalf("second frame %v %v", f.Type, err)
	}
	ce, err := ParseClose(f.Payload)
	if err != nil || *ce != (CloseError{Code: CloseRejected, Reason: "unknown link"}) {
		t.Fatalf("CLOSE %+v %v", ce, err)
	}
	if _, _, err = DecodeFrame(rest); !errors.Is(err, ErrTruncated) {
		t.Fatalf("cut frame: %v, want ErrTruncated", err)
	}
	cut := AppendClose(nil, CloseNormal, "bye")
	if _, _, err = DecodeFrame(cut[:len(cut)-1]); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "payload 3 of 4") {
		t.Fatalf("cut payload: %v", err)
	}
}

func TestCloseReasonIsBoundedAndUTF8(t *testing.T) {
	long := strings.Repeat("ä", MaxCloseReason) // 2 bytes each
	f, _, err := DecodeFrame(AppendClose(nil, CloseProtocolError, long+"\xff"))
	if err != nil {
		t.Fatal(err)
	}
	ce, err := ParseClose(f.Payload)
	if err != nil || len(ce.Reason) != MaxCloseReason || ce.Code != CloseProtocolError {
		t.Fatalf("reason of %d bytes, %v", len(ce.Reason), err)
	}
	if _, err := ParseClose([]byte{0, 0xff}); !errors.Is(err, ErrMalformed) {
		t.Errorf("invalid UTF-8 reason: %v", err)
	}
	if _, err := ParseClose(nil); !errors.Is(err, ErrTruncated) {
		t.Errorf("empty CLOSE: %v", err)
	}
	if got := (&CloseError{Code: 77}).Error(); got != "closed by peer: code 77" {
		t.Errorf("unknown code shows as %q", got)
	}
}

var (
	tcpGSO = Offload{PartialChecksum: true, GSO: GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	udpSum = Offload{PartialChecksum: true, CsumStart: 40, CsumOffset: 6}
)

func TestBatchRoundTrip(t *testing.T) {
	packets := []struct {
		data []byte
		o    Offload
	}{
		{bytes.Repeat([]byte{0x45}, 60), Offload{}},
		{bytes.Repeat([]byte{0x45}, 65000), tcpGSO},
		{bytes.Repeat([]byte{0x60}, 48), udpSum},
		{bytes.Repeat([]byte{0x60}, MaxPacketLen), Offload{PartialChecksum: true, GSO: GSOTCPv6, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}},
	}
	b := NewBatch()
	for _, p := range packets {
		if err := b.Append(p.data, p.o); err != nil {
			t.Fatal(err)
		}
	}
	f, rest, err := DecodeFrame(b.Frame())
	if err != nil || len(rest) != 0 || f.Type != FramePackets {
		t.Fatalf("decode: %v, %d bytes left", err, len(rest))
	}
	it := NewPacketIter(f.Payload)
	i := 0
	for ; it.Next(); i++ {
		if !bytes.Equal(it.Packet(), packets[i].data) || it.Offload() != packets[i].o {
			t.Errorf("packet %d: %d bytes, %+v; want %d bytes, %+v", i, len(it.Packet()), it.Offload(), len(packets[i].data), packets[i].o)
		}
	}
	if it.Err() != nil || i != len(packets) || b.Len() != len(packets) {
		t.Fatalf("%d packets (batch says %d), err %v; want %d", i, b.Len(), it.Err(), len(packets))
	}
	b.Reset()
	if b.Len() != 0 || b.Size() != 0 {
		t.Errorf("reset batch: %d packets, %d bytes", b.Len(), b.Size())
	}
}

func TestBatchFillsUpToTheFrameLimit(t *testing.T) {
	b := NewBatch()
	pkt := make([]byte, 1000)
	pkt[0] = 0x45
	n := 0
	for ; ; n++ {
		err := b.Append(pkt, Offload{})
		if errors.Is(err, ErrBatchFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := MaxFramePayload / (PacketHeaderLen + len(pkt)); n != want || b.Size() > MaxFramePayload {
		t.Fatalf("%d packets (%d bytes) fit, want %d", n, b.Size(), want)
	}
	if _, _, err := DecodeFrame(b.Frame()); err != nil {
		t.Fatalf("full batch does not decode: %v", err)
	}
}

func TestBatchRefusesWhatThePeerWouldReject(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		o    Offload
	}{
		{"empty packet", 0, Offload{}},
		{"oversized packet", MaxPacketLen + 1, Offload{}},
		{"GSO without partial checksum", 100, Offload{GSO: GSOTCPv4, GSOSize: 1400}},
		{"GSO without segment size", 100, Offload{PartialChecksum: true, GSO: GSOTCPv4, CsumStart: 20, CsumOffset: 16}},
		{"checksum beyond the packet", 30, Offload{PartialChecksum: true, CsumStart: 20, CsumOffset: 16}},
		{"unknown GSO type", 100, Offload{PartialChecksum: true, GSO: 9, GSOSize: 1, CsumStart: 20, CsumOffset: 6}},
		{"segment size without GSO", 100, Offload{PartialChecksum: true, GSOSize: 1400, CsumStart: 20, CsumOffset: 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := NewBatch().Append(make([]byte, tc.size), tc.o); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Append: %v, want ErrMalformed", err)
			}
		})
	}
}

// entry builds one packet entry by hand: length, flags, GSO type, then
// eight bytes of GSO size and checksum fields.
func entry(n uint32, flags, gso byte, rest [6]byte, data int) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	b = append(b, flags, gso)
	b = append(b, rest[:]...)
	return append(b, make([]byte, data)...)
}

func TestPacketIterRejectsMalformedEntries(t *testing.T) {
	good := entry(20, 0, 0, [6]byte{}, 20)
	for _, tc := range []struct {
		name    string
		payload []byte
		good    int // packets before the bad one
		wantErr error
		inMsg   string
	}{
		{"header cut", append(good, 0, 0, 0), 1, ErrTruncated, "3 bytes left"},
		{"zero length", entry(0, 0, 0, [6]byte{}, 0), 0, ErrMalformed, "length 0"},
		{"longer than the frame", append(good, entry(100, 0, 0, [6]byte{}, 99)...), 1, ErrTruncated, "length 100, 99 bytes left"},
		{"longer than any packet", entry(MaxPacketLen+1, 0, 0, [6]byte{}, 0), 0, ErrMalformed, "limit"},
		{"unknown flag", entry(20, 0x82, 0, [6]byte{}, 20), 0, ErrMalformed, "flags 0x82"},
		{"fields without partial checksum", entry(20, 0, 0, [6]byte{0, 0, 0, 10}, 20), 0, ErrMalformed, "without a partial checksum"},
		{"checksum outside", entry(20, 1, 0, [6]byte{0, 0, 0, 18, 0, 1}, 20), 0, ErrMalformed, "beyond packet"},
		{"GSO with size 0", entry(60, 1, 1, [6]byte{0, 0, 0, 20, 0, 16}, 60), 0, ErrMalformed, "segment size"},
		{"unknown GSO type", entry(60, 1, 7, [6]byte{5, 0, 0, 20, 0, 16}, 60), 0, ErrMalformed, "GSO type 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := NewPacketIter(tc.payload)
			n := 0
			for it.Next() {
				n++
			}
			err := it.Err()
			if n != tc.good || !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.inMsg) {
				t.Fatalf("%d good packets, error %v; want %d, %v containing %q", n, err, tc.good, tc.wantErr, tc.inMsg)
			}
			if it.Next() {
				t.Error("Next after an error")
			}
		})
	}
	it := NewPacketIter(nil)
	if it.Next() || it.Err() != nil {
		t.Errorf("empty PACKETS payload: %v", it.Err())
	}
}

func TestOffloadSurvivesTheVirtioHeader(t *testing.T) {
	for _, o := range []Offload{
		{},
		{PartialChecksum: true, CsumStart: 20, CsumOffset: 16},
		tcpGSO,
		{PartialChecksum: true, GSO: GSOTCPv6, GSOSize: 1428, CsumStart: 40, CsumOffset: 16},
		{PartialChecksum: true, GSO: GSOUDP, GSOSize: 1200, CsumStart: 20, CsumOffset: 6},
	} {
		h := make([]byte, virtioHdrLen)
		putVirtio(h, o, 52)
		got, err := offloadFromVirtio(h)
		if err != nil || !reflect.DeepEqual(got, o) {
			t.Errorf("%+v came back as %+v, %v", o, got, err)
		}
	}
	// UFO (3) and ECN-marked TSO are not enabled, so the kernel must not
	// send them; if it does, the packet is refused, not misread.
	for _, gso := range []byte{3, 0x81} {
		if _, err := offloadFromVirtio([]byte{1, gso, 0, 0, 0, 0, 0, 0, 0, 0}); !errors.Is(err, ErrMalformed) {
			t.Errorf("virtio GSO type %#x: %v", gso, err)
		}
	}
}
