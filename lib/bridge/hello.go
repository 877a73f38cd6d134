package bridge

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unicode/utf8"
)

// Hello is what each side tells the other when a connection starts.
type Hello struct {
	// MinVersion and MaxVersion are the wire format versions the sender
	// speaks; both sides use the highest common one.
	MinVersion, MaxVersion uint8
	// ClusterAddress is the sender's cluster address with the mesh prefix
	// length, e.g. 192.168.88.1/24.
	ClusterAddress netip.Prefix
	// ServiceCIDR is the sender's service network; invalid (zero) when not
	// announced.
	ServiceCIDR netip.Prefix
	// Port is the port the sender is reachable on from other members
	// (the advertised port); 0 when not announced.
	Port uint16
	DNS  *DNSInfo // optional
	API  *APIInfo // optional
	// Replace asks the receiver to put this connection in place of the
	// one it has for the sender, whatever the tie-break says: the sender
	// reconnects on purpose (its certificate changed). Receivers that do
	// not know the extension apply the tie-break.
	Replace bool
}

// DNSInfo lets the peer forward queries for the sender's cluster domain.
type DNSInfo struct {
	ClusterDomain string
	DNSIP         netip.Addr // invalid (zero) when not announced
}

// APIInfo gives the peer access to the sender's API server.
type APIInfo struct {
	Server string
	Token  string
	CA     []byte // PEM
}

// Extension types of a HELLO. Receivers skip types they do not know.
const (
	extDNS     = 1
	extAPI     = 2
	extReplace = 3
)

// Validate reports whether h can be sent: the encoder and the parser apply
// the same rules.
func (h *Hello) Validate() error {
	if h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return fmt.Errorf("HELLO: %w: versions %d..%d", ErrMalformed, h.MinVersion, h.MaxVersion)
	}
	if err := checkPrefix(h.ClusterAddress, false); err != nil {
		return fmt.Errorf("HELLO: cluster address: %w", err)
	}
	if h.ClusterAddress.Addr().IsUnspecified() {
		return fmt.Errorf("HELLO: cluster address: %w: unspecified address", ErrMalformed)
	}
	if h.ServiceCIDR.IsValid() {
		if err := checkPrefix(h.ServiceCIDR, true); err != nil {
			return fmt.Errorf("HELLO: service CIDR: %w", err)
		}
	}
	if d := h.DNS; d != nil {
		if d.DNSIP.IsValid() && (d.DNSIP.Is4In6() || d.DNSIP.Zone() != "") {
			return fmt.Errorf("HELLO: DNS IP %s: %w: IPv4-mapped or zoned", d.DNSIP, ErrMalformed)
		}
		if !utf8.ValidString(d.ClusterDomain) {
			return fmt.Errorf("HELLO: cluster domain: %w: not UTF-8", ErrMalformed)
		}
	}
	if a := h.API; a != nil && (!utf8.ValidString(a.Server) || !utf8.ValidString(a.Token)) {
		return fmt.Errorf("HELLO: API server or token: %w: not UTF-8", ErrMalformed)
	}
	return nil
}

// checkPrefix accepts plain IPv4 or IPv6 prefixes (no IPv4-mapped IPv6, no
// zone); masked requires the host bits to be zero.
func checkPrefix(p netip.Prefix, masked bool) error {
	if !p.IsValid() {
		return fmt.Errorf("%w: missing or invalid prefix", ErrMalformed)
	}
	if a := p.Addr(); a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("%w: %s is IPv4-mapped or zoned", ErrMalformed, p)
	}
	if masked && p.Masked() != p {
		return fmt.Errorf("%w: %s has host bits set", ErrMalformed, p)
	}
	return nil
}

// AppendHello appends a HELLO frame to dst.
func AppendHello(dst []byte, h Hello) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]byte, FrameHeaderLen)...)
	dst = append(dst, h.MinVersion, h.MaxVersion)
	dst = binary.BigEndian.AppendUint16(dst, h.Port)
	dst = appendPrefix(dst, h.ClusterAddress)
	dst = appendPrefix(dst, h.ServiceCIDR)
	var err error
	if d := h.DNS; d != nil {
		var v []byte
		v = appendString16(v, d.ClusterDomain)
		v = appendAddr(v, d.DNSIP)
		if dst, err = appendExt(dst, extDNS, v); err != nil {
			return dst[:start], err
		}
	}
	if a := h.API; a != nil {
		var v []byte
		v = appendString16(v, a.Server)
		v = appendString16(v, a.Token)
		v = appendString16(v, string(a.CA))
		if dst, err = appendExt(dst, extAPI, v); err != nil {
			return dst[:start], err
		}
	}
	if h.Replace {
		if dst, err = appendExt(dst, extReplace, nil); err != nil {
			return dst[:start], err
		}
	}
	n := len(dst) - start - FrameHeaderLen
	if n > MaxHelloPayload {
		return dst[:start], fmt.Errorf("HELLO: %w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxHelloPayload)
	}
	putFrameHeader(dst[start:], FrameHello, n)
	return dst, nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, 0)
	}
	s := a.AsSlice()
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendPrefix(b []byte, p netip.Prefix) []byte {
	if !p.IsValid() {
		return append(b, 0)
	}
	return append(appendAddr(b, p.Addr()), byte(p.Bits()))
}

func appendString16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendExt(b []byte, typ uint16, v []byte) ([]byte, error) {
	// Each string inside is bounded by the extension's own 16-bit length.
	if len(v) > 0xffff {
		return b, fmt.Errorf("HELLO: %w: extension %d of %d bytes, limit 65535", ErrFrameTooLarge, typ, len(v))
	}
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...), nil
}

// ParseHello decodes and validates the payload of a HELLO frame. Unknown
// extensions are skipped.
func ParseHello(p []byte) (Hello, error) {
	if len(p) > MaxHelloPayload {
		return Hello{}, fmt.Errorf("HELLO: %w: %d bytes, limit %d", ErrFrameTooLarge, len(p), MaxHelloPayload)
	}
	r := reader{b: p}
	var h Hello
	h.MinVersion, h.MaxVersion = r.u8(), r.u8()
	h.Port = r.u16()
	h.ClusterAddress = r.prefix()
	h.ServiceCIDR = r.prefix()
	seen := map[uint16]bool{}
	for r.err == nil && len(r.b) > 0 {
		typ, n := r.u16(), r.u16()
		v := reader{b: r.bytes(int(n))}
		if r.err != nil {
			break
		}
		if typ != extDNS && typ != extAPI && typ != extReplace {
			continue
		}
		if seen[typ] {
			return Hello{}, fmt.Errorf("HELLO: %w: extension %d twice", ErrMalformed, typ)
		}
		seen[typ] = true
		switch typ {
		case extReplace:
			h.Replace = true
		case extDNS:
			h.DNS = &DNSInfo{ClusterDomain: v.string16(), DNSIP: v.addr()}
		case extAPI:
			h.API = &APIInfo{Server: v.string16(), Token: v.string16(), CA: []byte(v.string16())}
		}
		if v.err == nil && len(v.b) > 0 {
			v.err = fmt.Errorf("%w: %d bytes after the last field", ErrMalformed, len(v.b))
		}
		if v.err != nil {
			return Hello{}, fmt.Errorf("HELLO: extension %d: %w", typ, v.err)
		}
	}
	if r.err != nil {
		return Hello{}, fmt.Errorf("HELLO: %w", r.err)
	}
	if err := h.Validate(); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// Negotiate returns the highest wire format version both sides speak.
func Negotiate(local, remote Hello) (uint8, error) {
	v := min(local.MaxVersion, remote.MaxVersion)
	if v < max(local.MinVersion, remote.MinVersion) {
		return 0, fmt.Errorf("%w: peer speaks %d..%d, this side %d..%d", ErrVersion, remote.MinVersion, remote.MaxVersion, local.MinVersion, local.MaxVersion)
	}
	return v, nil
}

// reader consumes a byte slice; the first failure sticks and later reads
// return zero values, so parsers check the error once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: need %d bytes, have %d", ErrTruncated, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) string16() string { return string(r.bytes(int(r.u16()))) }

func (r *reader) addr() netip.Addr {
	n := int(r.u8())
	if r.err != nil || n == 0 {
		return netip.Addr{}
	}
	if n != 4 && n != 16 {
		r.err = fmt.Errorf("%w: address length %d", ErrMalformed, n)
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.bytes(n))
	return a
}

func (r *reader) prefix() netip.Prefix {
	a := r.addr()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := int(r.u8())
	if r.err != nil {
		return netip.Prefix{}
	}
	if bits > a.BitLen() {
		r.err = fmt.Errorf("%w: prefix length %d for %s", ErrMalformed, bits, a)
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

// SameHello tells whether two HELLOs announce the same (Replace aside; of
// the API extension only whether it is present).
func SameHello(a, b Hello) bool {
	if a.MinVersion != b.MinVersion || a.MaxVersion != b.MaxVersion || a.ClusterAddress != b.ClusterAddress ||
		a.ServiceCIDR != b.ServiceCIDR || a.Port != b.Port || (a.DNS == nil) != (b.DNS == nil) || (a.API == nil) != (b.API == nil) {
		return false
	}
	return a.DNS == nil || *a.DNS == *b.DNS
}
