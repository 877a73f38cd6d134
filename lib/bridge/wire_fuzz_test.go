package bridge

import (
	"bytes"
	"reflect"
	"testing"
)

// frameSeeds are valid frames of every type plus near misses.
func frameSeeds(t testing.TB) [][]byte {
	hello, err := AppendHello(nil, fullHello)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	for _, p := range []struct {
		pkt []byte
		o   Offload
	}{
		// Small, so the fuzzer's minimizer is quick.
		{ipv4(protoTCP, 32, 40), Offload{PartialChecksum: true, GSO: GSOTCPv4, GSOSize: 16, CsumStart: 20, CsumOffset: 16}},
		{ipv4(1, 8, 8), Offload{}},
		{ipv6(protoUDP, 8, 8), Offload{PartialChecksum: true, CsumStart: 40, CsumOffset: 6}},
	} {
		if err := b.Append(p.pkt, p.o); err != nil {
			t.Fatal(err)
		}
	}
	packets := bytes.Clone(b.Frame())
	return [][]byte{
		hello,
		packets,
		AppendKeepalive(nil),
		AppendClose(nil, CloseRejected, "unknown link"),
		append(header("kl", 1, 42, 3), 1, 2, 3), // unknown type
		packets[:len(packets)-1],
		hello[:FrameHeaderLen+5],
		header("kl", 2, FramePackets, 0),
	}
}

// FuzzDecodeFrame: the decoder never panics, and whatever it accepts
// re-encodes to exactly the same bytes (HELLO: to a stable encoding, since
// unknown extensions are dropped). Packets it accepts are also run through
// the receive checks.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, rest, err := DecodeFrame(data)
		if err != nil {
			return
		}
		frame := data[:len(data)-len(rest)]
		switch fr.Type {
		case FramePackets:
			checkPacketsRoundTrip(t, fr.Payload, frame)
		case FrameHello:
			if h, err := ParseHello(fr.Payload); err == nil {
				checkHelloStable(t, h)
			}
		case FrameClose:
			ce, err := ParseClose(fr.Payload)
			if err == nil && !bytes.Equal(AppendClose(nil, ce.Code, ce.Reason), frame) {
				t.Fatalf("CLOSE %+v does not re-encode to %x", ce, frame)
			}
		case FrameKeepalive:
			if !bytes.Equal(AppendKeepalive(nil), frame) {
				t.Fatalf("KEEPALIVE %x", frame)
			}
		}
	})
}

// fuzzBatch is reused: a fresh 256 KiB batch per input would make the
// fuzzer (and its minimizer) crawl. Inputs run one at a time per process.
var fuzzBatch = NewBatch()

func checkPacketsRoundTrip(t *testing.T, payload, frame []byte) {
	b := fuzzBatch
	b.Reset()
	it := NewPacketIter(payload)
	for it.Next() {
		pkt, o := it.Packet(), it.Offload()
		if err := b.Append(pkt, o); err != nil {
			t.Fatalf("decoded packet refused by the encoder: %v (%+v, %d bytes)", err, o, len(pkt))
		}
		if info, err := inspect(pkt, o); err == nil {
			h := make([]byte, virtioHdrLen)
			putVirtio(h, o, info.hdrLen)
			if back, err := offloadFromVirtio(h); err != nil || back != o {
				t.Fatalf("offload %+v became %+v, %v through virtio", o, back, err)
			}
		}
	}
	if it.Err() == nil && !bytes.Equal(b.Frame(), frame) {
		t.Fatalf("PACKETS frame does not re-encode to the same bytes")
	}
}

func checkHelloStable(t *testing.T, h Hello) {
	enc, err := AppendHello(nil, h)
	if err != nil {
		t.Fatalf("parsed HELLO %+v cannot be encoded: %v", h, err)
	}
	fr, _, err := DecodeFrame(enc)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ParseHello(fr.Payload)
	if err != nil || !reflect.DeepEqual(h, h2) {
		t.Fatalf("HELLO %+v re-parsed as %+v, %v", h, h2, err)
	}
	if enc2, _ := AppendHello(nil, h2); !bytes.Equal(enc, enc2) {
		t.Fatal("HELLO encoding not stable")
	}
}

// FuzzParseHello: the HELLO parser never panics, and what it accepts
// encodes and parses back to the same value.
func FuzzParseHello(f *testing.F) {
	for _, s := range frameSeeds(f)[:1] {
		f.Add(s[FrameHeaderLen:])
	}
	f.Add(helloBytes())
	f.Add(helloBytes(0, 9, 0, 2, 0xaa, 0xbb, 0, 1, 0, 3, 0, 0, 0))
	f.Add(helloBytes(0, 2, 0, 7, 0, 0, 0, 1, 'x', 0, 0))
	f.Add([]byte{1, 2, 1, 187, 16, 0xfd, 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 64, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := ParseHello(data); err == nil {
			checkHelloStable(t, h)
		}
	})
}
