// Package bridge is the TLS "bridge" data plane: IP packets between one tun
// device and per-peer TLS connections, in kubelink's own versioned wire
// format (docs/bridge-protocol.md). Packets travel in batches, and GSO
// super-packets of up to 64 KiB travel whole, which is where the speed is.
package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Wire format constants; docs/bridge-protocol.md is the reference.
const (
	// Version is the wire format version this package speaks.
	Version = 1
	// FrameHeaderLen is magic (2), version (1), type (1), payload length (4).
	FrameHeaderLen = 8
	// MaxFramePayload bounds every frame, so a receiver needs at most this
	// much memory per frame. Several 64 KiB GSO packets fit.
	MaxFramePayload = 256 << 10
	// MaxHelloPayload bounds a HELLO (a CA bundle is the largest part).
	MaxHelloPayload = 64 << 10
	// MaxCloseReason bounds the text of a CLOSE frame.
	MaxCloseReason = 1024
	// PacketHeaderLen precedes each packet in a PACKETS frame.
	PacketHeaderLen = 12
	// MaxPacketLen is the largest IPv6 packet without jumbograms, which
	// also covers a 64 KiB GSO super-packet.
	MaxPacketLen = 40 + 65535
)

const magic0, magic1 = 'k', 'l'

// FrameType says what a frame carries.
type FrameType uint8

// Frame types. Receivers skip frames of types they do not know, so new
// optional types can be added without a new version.
const (
	FrameHello     FrameType = 1
	FramePackets   FrameType = 2
	FrameKeepalive FrameType = 3
	FrameClose     FrameType = 4
)

func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "HELLO"
	case FramePackets:
		return "PACKETS"
	case FrameKeepalive:
		return "KEEPALIVE"
	case FrameClose:
		return "CLOSE"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Decoding errors; the returned errors wrap one of these with details.
var (
	ErrTruncated     = errors.New("truncated")
	ErrBadMagic      = errors.New("not a kubelink bridge frame (bad magic)")
	ErrVersion       = errors.New("unsupported wire format version")
	ErrFrameTooLarge = errors.New("frame too large")
	ErrMalformed     = errors.New("malformed")
	// ErrBatchFull means a packet does not fit into the batch any more.
	ErrBatchFull = errors.New("batch full")
)

// maxPayload is the largest payload a frame of type t may carry.
func maxPayload(t FrameType) int {
	switch t {
	case FrameHello:
		return MaxHelloPayload
	case FrameKeepalive:
		return 0
	case FrameClose:
		return 1 + MaxCloseReason
	}
	return MaxFramePayload
}

// ParseFrameHeader checks a frame header and returns the frame's type and
// payload length, which is already checked against the limit for the type.
func ParseFrameHeader(b []byte) (FrameType, int, error) {
	if len(b) < FrameHeaderLen {
		return 0, 0, fmt.Errorf("frame header: %w: %d of %d bytes", ErrTruncated, len(b), FrameHeaderLen)
	}
	if b[0] != magic0 || b[1] != magic1 {
		return 0, 0, fmt.Errorf("frame header %x: %w", b[:2], ErrBadMagic)
	}
	if b[2] != Version {
		return 0, 0, fmt.Errorf("frame header: %w %d (this side speaks %d)", ErrVersion, b[2], Version)
	}
	t := FrameType(b[3])
	n := binary.BigEndian.Uint32(b[4:8])
	if max := maxPayload(t); n > uint32(max) {
		return 0, 0, fmt.Errorf("%s frame: %w: payload %d bytes, limit %d", t, ErrFrameTooLarge, n, max)
	}
	return t, int(n), nil
}

func putFrameHeader(b []byte, t FrameType, n int) {
	b[0], b[1], b[2], b[3] = magic0, magic1, Version, byte(t)
	binary.BigEndian.PutUint32(b[4:8], uint32(n))
}

// Frame is a decoded frame; Payload aliases the input.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// DecodeFrame takes one frame off the front of b and returns it with the
// rest of b.
func DecodeFrame(b []byte) (Frame, []byte, error) {
	t, n, err := ParseFrameHeader(b)
	if err != nil {
		return Frame{}, b, err
	}
	if len(b)-FrameHeaderLen < n {
		return Frame{}, b, fmt.Errorf("%s frame: %w: payload %d of %d bytes", t, ErrTruncated, len(b)-FrameHeaderLen, n)
	}
	end := FrameHeaderLen + n
	return Frame{Type: t, Payload: b[FrameHeaderLen:end:end]}, b[end:], nil
}

// AppendKeepalive appends a KEEPALIVE frame to dst.
func AppendKeepalive(dst []byte) []byte {
	var h [FrameHeaderLen]byte
	putFrameHeader(h[:], FrameKeepalive, 0)
	return append(dst, h[:]...)
}

// CloseCode says why a connection is being closed.
type CloseCode uint8

// Close codes; receivers show unknown codes as numbers.
const (
	CloseNormal             CloseCode = 0 // shutdown or peer removed
	CloseProtocolError      CloseCode = 1 // the receiver could not decode a frame
	CloseUnsupportedVersion CloseCode = 2 // no common wire format version
	CloseRejected           CloseCode = 3 // authenticated, but not wanted (unknown link, bad HELLO)
	CloseReplaced           CloseCode = 4 // a newer connection to the same peer took over
)

func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseProtocolError:
		return "protocol error"
	case CloseUnsupportedVersion:
		return "unsupported version"
	case CloseRejected:
		return "rejected"
	case CloseReplaced:
		return "replaced"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// CloseError is the content of a CLOSE frame; as an error it is what the
// peer said when it hung up.
type CloseError struct {
	Code   CloseCode
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return "closed by peer: " + e.Code.String()
	}
	return "closed by peer: " + e.Code.String() + ": " + e.Reason
}

// AppendClose appends a CLOSE frame to dst. A reason longer than
// MaxCloseReason is cut at a character boundary.
func AppendClose(dst []byte, code CloseCode, reason string) []byte {
	reason = truncateUTF8(strings.ToValidUTF8(reason, "?"), MaxCloseReason)
	var h [FrameHeaderLen]byte
	putFrameHeader(h[:], FrameClose, 1+len(reason))
	dst = append(dst, h[:]...)
	dst = append(dst, byte(code))
	return append(dst, reason...)
}

// ParseClose decodes the payload of a CLOSE frame.
func ParseClose(p []byte) (*CloseError, error) {
	if len(p) < 1 {
		return nil, fmt.Errorf("CLOSE frame: %w: no close code", ErrTruncated)
	}
	if len(p) > 1+MaxCloseReason {
		return nil, fmt.Errorf("CLOSE frame: %w: reason of %d bytes, limit %d", ErrFrameTooLarge, len(p)-1, MaxCloseReason)
	}
	if !utf8.Valid(p[1:]) {
		return nil, fmt.Errorf("CLOSE frame: %w: reason is not UTF-8", ErrMalformed)
	}
	return &CloseError{Code: CloseCode(p[0]), Reason: string(p[1:])}, nil
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
