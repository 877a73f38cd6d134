package bridge

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// testCA is a throwaway CA for mutual TLS between the test's bridges.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubelink test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a certificate usable as server and client, as bridges use
// one certificate for both directions.
func (ca *testCA) issue(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return ca.issueWithURIs(t, cn)
}

// issueWithURIs is issue with URI SANs (a member's identity).
func (ca *testCA) issueWithURIs(t testing.TB, cn string, uris ...string) tls.Certificate {
	t.Helper()
	var us []*url.URL
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, p)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		URIs:         us,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) serverConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS13,
	}
}

func (ca *testCA) clientConfig(cert tls.Certificate, server string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca.pool,
		ServerName:   server,
		MinVersion:   tls.VersionTLS13,
	}
}

// sink accepts TCP connections in a namespace, reads everything and
// answers with the CRC-32C of it (fast enough not to limit throughput).
type sink struct{ port int }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func startSink(t *testing.T, ns *nstest.Namespace) sink {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", ":0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				h := crc32.New(castagnoli)
				if _, err := io.CopyBuffer(h, c, make([]byte, 256<<10)); err == nil {
					_, _ = c.Write(h.Sum(nil))
				}
			})
		}
	})
	return sink{port: l.Addr().(*net.TCPAddr).Port}
}

// randomData is reproducible test data, generated fast.
func randomData(n int) []byte {
	data := make([]byte, n)
	var seed [32]byte
	_, _ = mrand.NewChaCha8(seed).Read(data)
	return data
}

// transfer sends data from ns to the sink at host, checks the digest and
// returns the time it took.
func transfer(ns *nstest.Namespace, host string, s sink, data []byte, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	var c net.Conn
	if err := ns.Do(func() (err error) {
		d := net.Dialer{Deadline: deadline}
		c, err = d.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(s.port)))
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("close send side: %w", err)
	}
	got, err := io.ReadAll(c)
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("read digest: %w", err)
	}
	if want := crc32.Checksum(data, castagnoli); !bytes.Equal(got, binary.BigEndian.AppendUint32(nil, want)) {
		return 0, fmt.Errorf("digest %x, want %08x: data corrupted or cut short", got, want)
	}
	return elapsed, nil
}

func gbits(n int, d time.Duration) float64 { return float64(n) * 8 / d.Seconds() / 1e9 }

// udpListener receives datagrams inside a namespace.
func udpListener(t *testing.T, ns *nstest.Namespace) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// sendUDP sends one datagram from ns with a normal socket.
func sendUDP(t *testing.T, ns *nstest.Namespace, dst netip.AddrPort, payload string) {
	t.Helper()
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	}); err != nil {
		t.Fatalf("send UDP to %s: %v", dst, err)
	}
}

// receiveUntil returns the payloads that arrive up to and including last,
// or until wait is over.
func receiveUntil(pc net.PacketConn, last string, wait time.Duration) []string {
	var got []string
	buf := make([]byte, 2048)
	_ = pc.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
		if string(buf[:n]) == last {
			return got
		}
	}
}
