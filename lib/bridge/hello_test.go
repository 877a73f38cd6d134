package bridge

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var fullHello = Hello{
	MinVersion: 1, MaxVersion: 1,
	ClusterAddress: netip.MustParsePrefix("192.168.88.1/24"),
	ServiceCIDR:    netip.MustParsePrefix("10.96.0.0/12"),
	Port:           8088,
	DNS:            &DNSInfo{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("10.96.0.10")},
	API:            &APIInfo{Server: "https://api.a.example:6443", Token: "tok", CA: []byte("-----BEGIN CERTIFICATE-----\n")},
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []Hello{
		fullHello,
		{MinVersion: 1, MaxVersion: 1, ClusterAddress: netip.MustParsePrefix("192.168.88.1/24")},
		{
			MinVersion: 1, MaxVersion: 3, Port: 443,
			ClusterAddress: netip.MustParsePrefix("fd88::1/64"),
			ServiceCIDR:    netip.MustParsePrefix("fd96::/108"),
			DNS:            &DNSInfo{ClusterDomain: "c.local"},
			API:            &APIInfo{CA: []byte{}},
		},
	} {
		b, err := AppendHello(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		f, rest, err := DecodeFrame(b)
		if err != nil || len(rest) != 0 || f.Type != FrameHello {
			t.Fatalf("decode %v: %v", h.ClusterAddress, err)
		}
		got, err := ParseHello(f.Payload)
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Errorf("got %+v, %v\nwant %+v", got, err, h)
		}
	}
}

// helloBytes is a HELLO payload: versions 1..1, port 80, 10.0.0.1/16, no
// service CIDR, then tail.
func helloBytes(tail ...byte) []byte {
	return append([]byte{1, 1, 0, 80, 4, 10, 0, 0, 1, 16, 0}, tail...)
}

func TestParseHelloRejectsMalformedInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr error
		inMsg   string
	}{
		{"empty", nil, ErrTruncated, ""},
		{"cut in the address", []byte{1, 1, 0, 80, 4, 10, 0}, ErrTruncated, "need 4 bytes, have 2"},
		{"no cluster address", []byte{1, 1, 0, 80, 0, 0}, ErrMalformed, "cluster address"},
		{"version 0", []byte{0, 1, 0, 80, 4, 10, 0, 0, 1, 16, 0}, ErrMalformed, "versions 0..1"},
		{"min above max", []byte{2, 1, 0, 80, 4, 10, 0, 0, 1, 16, 0}, ErrMalformed, "versions 2..1"},
		{"address of 5 bytes", []byte{1, 1, 0, 80, 5, 10, 0, 0, 1, 1, 16, 0}, ErrMalformed, "address length 5"},
		{"prefix longer than the address", []byte{1, 1, 0, 80, 4, 10, 0, 0, 1, 33, 0}, ErrMalformed, "prefix length 33"},
		{"unspecified cluster address", []byte{1, 1, 0, 80, 4, 0, 0, 0, 0, 0, 0}, ErrMalformed, "unspecified"},
		{"IPv4-mapped cluster address", append([]byte{1, 1, 0, 80, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 112}, 0), ErrMalformed, "IPv4-mapped"},
		{"service CIDR with host bits", []byte{1, 1, 0, 80, 4, 10, 0, 0, 1, 16, 4, 10, 96, 0, 1, 12}, ErrMalformed, "host bits"},
		{"extension cut", helloBytes(0, 1, 0, 9, 0, 1), ErrTruncated, ""},
		{"extension header cut", helloBytes(0, 1, 0), ErrTruncated, ""},
		{"DNS twice", helloBytes(0, 1, 0, 3, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0), ErrMalformed, "extension 1 twice"},
		{"bytes after the DNS fields", helloBytes(0, 1, 0, 4, 0, 0, 0, 7), ErrMalformed, "1 bytes after"},
		{"DNS domain cut", helloBytes(0, 1, 0, 3, 0, 9, 'x'), ErrTruncated, "extension 1"},
		{"DNS domain not UTF-8", helloBytes(0, 1, 0, 4, 0, 1, 0xff, 0), ErrMalformed, "not UTF-8"},
		{"API token not UTF-8", helloBytes(0, 2, 0, 7, 0, 0, 0, 1, 0xfe, 0, 0), ErrMalformed, "not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHello(tc.in)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.inMsg) {
				t.Fatalf("got %+v, %v; want %v containing %q", h, err, tc.wantErr, tc.inMsg)
			}
		})
	}
}

func TestParseHelloSkipsUnknownExtensions(t *testing.T) {
	in := helloBytes(0, 9, 0, 2, 0xaa, 0xbb, 0, 1, 0, 3, 0, 0, 0, 0, 9, 0, 0)
	h, err := ParseHello(in)
	if err != nil {
		t.Fatal(err)
	}
	if h.DNS == nil || h.DNS.ClusterDomain != "" || h.DNS.DNSIP.IsValid() || h.API != nil {
		t.Errorf("got %+v", h)
	}
}

func TestAppendHelloRefusesWhatThePeerWouldReject(t *testing.T) {
	mapped := fullHello
	mapped.ClusterAddress = netip.MustParsePrefix("::ffff:10.0.0.1/120")
	hostBits := fullHello
	hostBits.ServiceCIDR = netip.MustParsePrefix("10.96.0.1/12")
	huge := fullHello
	huge.API = &APIInfo{CA: make([]byte, 70000)}
	for name, h := range map[string]Hello{"IPv4-mapped": mapped, "service host bits": hostBits, "huge CA": huge, "no version": {}} {
		if b, err := AppendHello([]byte("x"), h); err == nil || string(b) != "x" {
			t.Errorf("%s: appended %d bytes, error %v", name, len(b), err)
		}
	}
}

func TestNegotiatePicksTheHighestCommonVersion(t *testing.T) {
	v := func(lo, hi uint8) Hello { return Hello{MinVersion: lo, MaxVersion: hi} }
	if got, err := Negotiate(v(1, 3), v(2, 5)); got != 3 || err != nil {
		t.Errorf("1..3 with 2..5: %d, %v", got, err)
	}
	if _, err := Negotiate(v(1, 1), v(2, 2)); !errors.Is(err, ErrVersion) {
		t.Errorf("1..1 with 2..2: %v", err)
	}
}

// loopbackPair is a TCP connection over loopback (buffered, unlike
// net.Pipe, like the real thing).
func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestHandshake(t *testing.T) {
	other := fullHello
	other.ClusterAddress = netip.MustParsePrefix("192.168.88.2/24")
	other.API = nil
	t.Run("both sides learn the other's HELLO", func(t *testing.T) {
		a, b := loopbackPair(t)
		got := make(chan Hello, 1)
		go func() {
			h, err := Handshake(b, other, 2*time.Second)
			if err != nil {
				t.Error(err)
			}
			got <- h
		}()
		h, err := Handshake(a, fullHello, 2*time.Second)
		if err != nil || !reflect.DeepEqual(h, other) {
			t.Errorf("a got %+v, %v", h, err)
		}
		if h := <-got; !reflect.DeepEqual(h, fullHello) {
			t.Errorf("b got %+v", h)
		}
	})
	t.Run("versions without overlap end with a CLOSE", func(t *testing.T) {
		a, b := loopbackPair(t)
		future := other
		future.MinVersion, future.MaxVersion = 2, 2
		errc := make(chan error, 1)
		go func() { _, err := Handshake(b, future, 2*time.Second); errc <- err }()
		if _, err := Handshake(a, fullHello, 2*time.Second); !errors.Is(err, ErrVersion) {
			t.Errorf("a: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrVersion) {
			t.Errorf("b: %v", err)
		}
		// Each side also said so.
		_ = a.SetReadDeadline(time.Now().Add(2 * time.Second))
		var hdr [FrameHeaderLen]byte
		if _, err := a.Read(hdr[:]); err != nil || FrameType(hdr[3]) != FrameClose {
			t.Errorf("a did not get a CLOSE: %x %v", hdr, err)
		}
	})
	t.Run("a rejected peer learns why", func(t *testing.T) {
		a, b := loopbackPair(t)
		go func() { _ = SendClose(b, CloseRejected, "no link for CN x", time.Second) }()
		_, err := Handshake(a, fullHello, 2*time.Second)
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != CloseRejected || ce.Reason != "no link for CN x" {
			t.Errorf("got %v", err)
		}
	})
	t.Run("packets before the HELLO are a protocol error", func(t *testing.T) {
		a, b := loopbackPair(t)
		batch := NewBatch()
		_ = batch.Append(make([]byte, 20), Offload{})
		go func() { _, _ = b.Write(batch.Frame()) }()
		if _, err := Handshake(a, fullHello, 2*time.Second); err == nil || !strings.Contains(err.Error(), "PACKETS before") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a silent peer times out", func(t *testing.T) {
		a, _ := loopbackPair(t)
		start := time.Now()
		if _, err := Handshake(a, fullHello, 200*time.Millisecond); err == nil || time.Since(start) > 2*time.Second {
			t.Errorf("got %v after %v", err, time.Since(start))
		}
	})
}
