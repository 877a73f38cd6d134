package bridge

import (
	"encoding/binary"
	"fmt"
)

// GSOType says how a super-packet is cut into segments by whoever finally
// sends it on a wire (or not at all, when it is delivered locally).
type GSOType uint8

// GSO types (our own numbering, not the kernel's).
const (
	GSONone  GSOType = 0
	GSOTCPv4 GSOType = 1
	GSOTCPv6 GSOType = 2
	GSOUDP   GSOType = 3 // UDP segmentation (USO), IPv4 or IPv6
)

const flagPartialChecksum = 0x01

// Offload is the per-packet metadata that lets GSO super-packets and
// packets with a pending checksum cross the bridge without being segmented
// or checksummed in user space: the receiving kernel finishes the job (or,
// delivering locally, does not need to).
type Offload struct {
	// PartialChecksum: the L4 checksum field holds only the pseudo-header
	// sum; the real one is computed over [CsumStart:] and stored at
	// CsumStart+CsumOffset.
	PartialChecksum bool
	GSO             GSOType
	GSOSize         uint16 // segment payload size (MSS) when GSO != GSONone
	CsumStart       uint16
	CsumOffset      uint16
}

// check enforces the structural rules of the wire format for a packet of
// n bytes; the data path checks the rest against the IP headers.
func (o Offload) check(n int) error {
	if !o.PartialChecksum {
		if o != (Offload{}) {
			return fmt.Errorf("%w: offload fields set without a partial checksum", ErrMalformed)
		}
		return nil
	}
	if int(o.CsumStart)+int(o.CsumOffset)+2 > n {
		return fmt.Errorf("%w: checksum at %d+%d beyond packet of %d bytes", ErrMalformed, o.CsumStart, o.CsumOffset, n)
	}
	switch o.GSO {
	case GSONone:
		if o.GSOSize != 0 {
			return fmt.Errorf("%w: GSO size %d without a GSO type", ErrMalformed, o.GSOSize)
		}
	case GSOTCPv4, GSOTCPv6, GSOUDP:
		if o.GSOSize == 0 {
			return fmt.Errorf("%w: GSO without a segment size", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: unknown GSO type %d", ErrMalformed, o.GSO)
	}
	return nil
}

func putPacketHeader(b []byte, n int, o Offload) {
	binary.BigEndian.PutUint32(b[0:4], uint32(n))
	b[4] = 0
	if o.PartialChecksum {
		b[4] = flagPartialChecksum
	}
	b[5] = byte(o.GSO)
	binary.BigEndian.PutUint16(b[6:8], o.GSOSize)
	binary.BigEndian.PutUint16(b[8:10], o.CsumStart)
	binary.BigEndian.PutUint16(b[10:12], o.CsumOffset)
}

// Batch is a PACKETS frame under construction in one reusable buffer:
// header and packets go to the peer in a single write.
type Batch struct {
	buf   []byte // frame header, then entries
	count int
}

// NewBatch returns an empty batch with room for MaxFramePayload bytes.
func NewBatch() *Batch {
	b := &Batch{buf: make([]byte, FrameHeaderLen, FrameHeaderLen+MaxFramePayload)}
	return b
}

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	b.buf = b.buf[:FrameHeaderLen]
	b.count = 0
}

// Len is the number of packets in the batch.
func (b *Batch) Len() int { return b.count }

// Size is the number of payload bytes in the batch.
func (b *Batch) Size() int { return len(b.buf) - FrameHeaderLen }

// Append copies a packet into the batch. It returns ErrBatchFull when the
// packet does not fit, and an error wrapping ErrMalformed when the packet
// could not be decoded by the peer.
func (b *Batch) Append(pkt []byte, o Offload) error {
	if len(pkt) == 0 || len(pkt) > MaxPacketLen {
		return fmt.Errorf("%w: packet of %d bytes (limit %d)", ErrMalformed, len(pkt), MaxPacketLen)
	}
	if err := o.check(len(pkt)); err != nil {
		return err
	}
	slot := b.reserve(len(pkt))
	if slot == nil {
		return ErrBatchFull
	}
	copy(slot[PacketHeaderLen:], pkt)
	b.commit(len(pkt), o)
	return nil
}

// reserve returns the free space for a packet of up to n bytes after its
// header, or nil when it does not fit. The data path reads from the tun
// device straight into it.
func (b *Batch) reserve(n int) []byte {
	end := len(b.buf) + PacketHeaderLen + n
	if end > cap(b.buf) {
		return nil
	}
	return b.buf[len(b.buf):end]
}

// commit appends the packet of n bytes placed into the reserved space.
func (b *Batch) commit(n int, o Offload) {
	at := len(b.buf)
	b.buf = b.buf[:at+PacketHeaderLen+n]
	putPacketHeader(b.buf[at:], n, o)
	b.count++
}

// Frame finishes the frame header and returns the whole frame. The slice
// is valid until the batch is changed.
func (b *Batch) Frame() []byte {
	putFrameHeader(b.buf, FramePackets, len(b.buf)-FrameHeaderLen)
	return b.buf
}

// PacketIter walks the packets of a PACKETS payload, checking every length
// against the payload; it never reads outside it.
type PacketIter struct {
	p   []byte
	off int
	n   int
	err error

	at      int // start of the current packet in p
	size    int
	offload Offload
}

// NewPacketIter starts at the first packet of a PACKETS payload.
func NewPacketIter(payload []byte) PacketIter { return PacketIter{p: payload} }

// Next moves to the next packet; false at the end or on an error (Err).
func (it *PacketIter) Next() bool {
	if it.err != nil || it.off == len(it.p) {
		return false
	}
	rest := it.p[it.off:]
	if len(rest) < PacketHeaderLen {
		return it.fail(fmt.Errorf("%w: %d bytes left, header needs %d", ErrTruncated, len(rest), PacketHeaderLen))
	}
	n := binary.BigEndian.Uint32(rest[0:4])
	if n == 0 || n > MaxPacketLen {
		return it.fail(fmt.Errorf("%w: length %d (limit %d)", ErrMalformed, n, MaxPacketLen))
	}
	if int(n) > len(rest)-PacketHeaderLen {
		return it.fail(fmt.Errorf("%w: length %d, %d bytes left", ErrTruncated, n, len(rest)-PacketHeaderLen))
	}
	if rest[4]&^flagPartialChecksum != 0 {
		return it.fail(fmt.Errorf("%w: unknown flags %#x", ErrMalformed, rest[4]))
	}
	o := Offload{
		PartialChecksum: rest[4]&flagPartialChecksum != 0,
		GSO:             GSOType(rest[5]),
		GSOSize:         binary.BigEndian.Uint16(rest[6:8]),
		CsumStart:       binary.BigEndian.Uint16(rest[8:10]),
		CsumOffset:      binary.BigEndian.Uint16(rest[10:12]),
	}
	if err := o.check(int(n)); err != nil {
		return it.fail(err)
	}
	it.at, it.size, it.offload = it.off+PacketHeaderLen, int(n), o
	it.off = it.at + int(n)
	it.n++
	return true
}

func (it *PacketIter) fail(err error) bool {
	it.err = fmt.Errorf("PACKETS frame: packet %d at byte %d: %w", it.n, it.off, err)
	return false
}

// Packet is the current packet; it aliases the payload.
func (it *PacketIter) Packet() []byte { return it.p[it.at : it.at+it.size : it.at+it.size] }

// Offload is the current packet's offload metadata.
func (it *PacketIter) Offload() Offload { return it.offload }

// Err is the reason the walk stopped early, or nil at a clean end.
func (it *PacketIter) Err() error { return it.err }
