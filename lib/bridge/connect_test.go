package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

func TestBackoff(t *testing.T) {
	const minD, maxD = 250 * time.Millisecond, 30 * time.Second
	want := []time.Duration{250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000}
	for i, w := range want {
		n := i + 1
		if got := Backoff(n, minD, maxD, 0); got != w*time.Millisecond {
			t.Errorf("attempt %d without jitter: %v, want %v", n, got, w*time.Millisecond)
		}
		lo := Backoff(n, minD, maxD, 0.999999)
		if lo < w*time.Millisecond/2 || lo > w*time.Millisecond {
			t.Errorf("attempt %d with full jitter: %v, want within [%v, %v]", n, lo, w*time.Millisecond/2, w*time.Millisecond)
		}
	}
	if got := Backoff(1000, minD, maxD, 0); got != maxD {
		t.Errorf("attempt 1000: %v, want the cap", got)
	}
}

func TestKeepNew(t *testing.T) {
	low, high := netip.MustParsePrefix("192.168.88.1/24"), netip.MustParsePrefix("192.168.88.2/24")
	for _, c := range []struct {
		local, remote        netip.Prefix
		newOut, oldOut, keep bool
	}{
		// The lower side keeps what it dialed, the higher side what it accepted.
		{low, high, true, false, true},
		{low, high, false, true, false},
		{high, low, false, true, true},
		{high, low, true, false, false},
		// Same direction: a reconnect replaces the old connection.
		{low, high, true, true, true},
		{low, high, false, false, true},
		{high, low, true, true, true},
		{high, low, false, false, true},
	} {
		if got := KeepNew(c.local, c.remote, c.newOut, c.oldOut); got != c.keep {
			t.Errorf("local %s, remote %s, new outbound %v, old outbound %v: keep new %v, want %v", c.local, c.remote, c.newOut, c.oldOut, got, c.keep)
		}
	}
	// Both sides agree on which of two crossing connections stays: X is
	// dialed by low (outbound there, inbound on high), Y by high.
	for _, xFirst := range []bool{true, false} {
		lowKeepsX, highKeepsX := KeepNew(low, high, true, false), KeepNew(high, low, false, true)
		if !xFirst {
			lowKeepsX, highKeepsX = !KeepNew(low, high, false, true), !KeepNew(high, low, true, false)
		}
		if !lowKeepsX || !highKeepsX {
			t.Errorf("X installed first %v: low keeps X %v, high keeps X %v; both should", xFirst, lowKeepsX, highKeepsX)
		}
	}
}

const bridgePort = 8443

// connEnd is a bridgeEnd run by a Connector with certificates from a
// directory.
type connEnd struct {
	*bridgeEnd
	dir    string
	certs  *Certs
	conn   *Connector
	mu     sync.Mutex
	events []LinkStatus
	// onUnknown is passed to the Connector; noLinks starts it without the
	// link to the other end.
	onUnknown func(UnknownPeer) error
	noLinks   bool
	// peerIdentity, when set, is the identity the link to the other end
	// pins (Link.Identity).
	peerIdentity string
}

func newConnEnd(t *testing.T, e *bridgeEnd, ca *testCA, cn string) *connEnd {
	t.Helper()
	ce := &connEnd{bridgeEnd: e, dir: t.TempDir()}
	writeCertDir(t, ce.dir, ca, ca.issue(t, cn))
	var err error
	if ce.certs, err = LoadCerts(ce.dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ce.certs.Watch(ctx, 100*time.Millisecond, nil, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return ce
}

// start runs a Connector with a link to other and a listener on the
// bridge port.
func (ce *connEnd) start(t *testing.T, other *connEnd) {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if host == other.id+".kubelink.test" {
			addr = net.JoinHostPort(other.underlay.String(), port)
		}
		var c net.Conn
		err = ce.ns.Do(func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	var err error
	ce.conn, err = NewConnector(ConnectorConfig{
		Pump: ce.pump, Certs: ce.certs, Hello: ce.hello, Dial: dial, OnUnknown: ce.onUnknown,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, HandshakeTimeout: 3 * time.Second,
		OnChange: func(id string, st LinkStatus) {
			ce.mu.Lock()
			ce.events = append(ce.events, st)
			ce.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	if err := ce.ns.Do(func() (err error) {
		l, err = net.Listen("tcp4", netip.AddrPortFrom(ce.underlay, bridgePort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = ce.conn.Serve(l) }()
	conn := ce.conn
	t.Cleanup(func() { conn.Close(); <-served })
	if !ce.noLinks {
		ce.conn.SetLinks([]Link{ce.linkTo(other)})
	}
}

func (ce *connEnd) linkTo(other *connEnd) Link {
	return Link{
		ID: other.id, Endpoint: net.JoinHostPort(other.id+".kubelink.test", "8443"), Identity: ce.peerIdentity,
		ClusterAddress: other.cluster4, Policy: policyFor(other.bridgeEnd),
	}
}

func (ce *connEnd) status(t *testing.T) LinkStatus {
	t.Helper()
	st, ok := ce.conn.Status(ce.peerID)
	if !ok {
		t.Fatalf("%s: no link %s", ce.id, ce.peerID)
	}
	return st
}

// waitStatus waits up to d for the link to satisfy cond.
func (ce *connEnd) waitStatus(t *testing.T, d time.Duration, what string, cond func(LinkStatus) bool) LinkStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := ce.status(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: link %s not %s within %v: %+v", ce.id, ce.peerID, what, d, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connected(st LinkStatus) bool { return st.State == Connected }

// settled waits until both ends use one connection that stays for 500ms
// (a dial in flight may still replace the first one, by the tie-break).
func settled(t *testing.T, low, high *connEnd) (LinkStatus, LinkStatus) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var pl, ph *Peer
	var stableSince time.Time
	for {
		sl, sh := low.status(t), high.status(t)
		l, h := low.pump.Peer(low.peerID), high.pump.Peer(high.peerID)
		ok := sl.State == Connected && sh.State == Connected && sl.Outbound != sh.Outbound && l != nil && h != nil
		switch {
		case !ok || l != pl || h != ph:
			pl, ph, stableSince = l, h, time.Now()
		case time.Since(stableSince) >= 500*time.Millisecond:
			return sl, sh
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled on one connection within 5s (the connections keep replacing each other?): %s %+v, %s %+v", low.id, sl, high.id, sh)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func twoConnEnds(t *testing.T, caA, caB *testCA) (*connEnd, *connEnd) {
	a, b := newEnd(t, "a", "b", 1), newEnd(t, "b", "a", 2)
	nstest.Veth(t, a.ns, "eth0", netip.PrefixFrom(a.underlay, 24).String(), b.ns, "eth0", netip.PrefixFrom(b.underlay, 24).String())
	a.open(t)
	b.open(t)
	return newConnEnd(t, a, caA, "a.kubelink.test"), newConnEnd(t, b, caB, "b.kubelink.test")
}

func TestConnectorsBetweenNamespaces(t *testing.T) {
	nstest.RequireRoot(t)
	ca := newTestCA(t)
	a, b := twoConnEnds(t, ca, ca)
	a.start(t, b)
	b.start(t, a)
	srv := startSink(t, b.ns)
	outer := t

	t.Run("both dial, one connection stays, traffic flows", func(t *testing.T) {
		sa := a.waitStatus(t, 5*time.Second, "Connected", connected)
		sb := b.waitStatus(t, 5*time.Second, "Connected", connected)
		// a has the lower cluster address: the connection it dialed stays.
		sa, sb = settled(t, a, b)
		if sa.PeerHello.ClusterAddress != b.cluster4 || sb.PeerHello.ClusterAddress != a.cluster4 || sa.HandshakeTime <= 0 {
			t.Errorf("status a %+v, b %+v", sa, sb)
		}
		if _, err := transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(4<<20), 20*time.Second); err != nil {
			t.Fatalf("through the bridge: %v", err)
		}
	})

	t.Run("rotated certificate is used by new connections, old one stays", func(t *testing.T) {
		pa := a.pump.Peer("b")
		oldSerial := a.conn.PeerCertificate("b").SerialNumber.String()
		rotated := ca.issue(t, "b.kubelink.test")
		newSerial := serialOf(t, rotated)
		rotatedAt := time.Now()
		writeCertDir(t, b.dir, ca, rotated)

		// A new connection to b sees the new certificate within 5 s.
		probe := ca.clientConfig(ca.issue(t, "probe.kubelink.test"), "b.kubelink.test")
		var seen string
		for seen != newSerial {
			if time.Since(rotatedAt) > 5*time.Second {
				t.Fatalf("new connections still get serial %s 5s after the rotation, want %s", seen, newSerial)
			}
			if err := a.ns.Do(func() error {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp4", netip.AddrPortFrom(b.underlay, bridgePort).String(), probe)
				if err != nil {
					return err
				}
				defer c.Close()
				seen = c.ConnectionState().PeerCertificates[0].SerialNumber.String()
				return nil
			}); err != nil {
				t.Fatalf("probe connection: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("new certificate in use %v after the rotation", time.Since(rotatedAt).Round(time.Millisecond))
		if a.pump.Peer("b") != pa || pa.Err() != nil || a.conn.PeerCertificate("b").SerialNumber.String() != oldSerial {
			t.Fatalf("the existing connection was dropped or changed: %v", pa.Err())
		}
		if _, err := transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(1<<20), 10*time.Second); err != nil {
			t.Fatalf("through the bridge after the rotation: %v", err)
		}
		if n, last := b.conn.Rejected(); n == 0 || !strings.Contains(last, "no link") {
			t.Errorf("the probe (no link) was not rejected: %d, %q", n, last)
		}

		// The connector's own next connection uses it too.
		a.pump.RemovePeer("b", "test: reconnect")
		<-pa.Done()
		a.waitStatus(t, 5*time.Second, "reconnected", func(LinkStatus) bool {
			c := a.conn.PeerCertificate("b")
			return c != nil && c.SerialNumber.String() == newSerial
		})
	})

	t.Run("peer gone and back: redial with bounded backoff", func(t *testing.T) {
		a.mu.Lock()
		a.events = nil
		a.mu.Unlock()
		b.conn.Close()
		a.waitStatus(t, 3*time.Second, "Idle", func(st LinkStatus) bool { return st.State == Idle })
		time.Sleep(2500 * time.Millisecond)
		a.mu.Lock()
		var failures []int
		var maxDelay time.Duration
		for _, st := range a.events {
			if st.State == Idle && st.Failures > 0 {
				failures = append(failures, st.Failures)
				maxDelay = max(maxDelay, time.Until(st.NextDial))
			}
		}
		a.mu.Unlock()
		// 100ms, 200ms, 400ms, 800ms, 1s with up to half taken off.
		if len(failures) < 3 || len(failures) > 10 {
			t.Errorf("%d failed dials in 2.5s (%v): backoff not working", len(failures), failures)
		}
		if maxDelay > time.Second {
			t.Errorf("redial delay %v above the 1s cap", maxDelay)
		}
		st := a.status(t)
		if !strings.Contains(st.Reason, "refused") {
			t.Errorf("Idle reason %q, want the dial error", st.Reason)
		}
		back := time.Now()
		b.start(outer, a) // lives on after this subtest
		a.waitStatus(t, 3*time.Second, "Connected again", connected)
		b.waitStatus(t, 3*time.Second, "Connected again", connected)
		settled(t, a, b)
		t.Logf("reconnected %v after the peer came back", time.Since(back).Round(time.Millisecond))
		if _, err := transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(1<<20), 10*time.Second); err != nil {
			t.Fatalf("through the bridge after reconnecting: %v", err)
		}
	})

	t.Run("removing the link disconnects", func(t *testing.T) {
		settled(t, a, b)
		pa := a.pump.Peer("b")
		a.conn.SetLinks(nil)
		select {
		case <-pa.Done():
		case <-time.After(3 * time.Second):
			t.Fatal("peer still connected after its link was removed")
		}
		if got := a.conn.Links(); len(got) != 0 {
			t.Errorf("links %v", got)
		}
	})
}

func TestConnectorRejectsOtherCA(t *testing.T) {
	nstest.RequireRoot(t)
	ca, other := newTestCA(t), newTestCA(t)
	a, b := twoConnEnds(t, ca, other)
	// b trusts a's CA, so that a is the one to judge b's certificate when b
	// dials; a dialing b fails on b's certificate.
	writeCertDir(t, b.dir, ca, other.issue(t, "b.kubelink.test"))
	if _, err := b.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	a.start(t, b)
	b.start(t, a)
	// a dials b: b's certificate is not from a's CA.
	st := a.waitStatus(t, 5*time.Second, "Idle for the unknown CA", func(st LinkStatus) bool {
		return st.State == Idle && strings.Contains(st.Reason, "unknown authority")
	})
	t.Logf("a: %s", st.Reason)
	// b dials a: a refuses b's client certificate and counts it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, last := a.conn.Rejected()
		if n > 0 && strings.Contains(last, "unknown authority") {
			t.Logf("a rejected %d connection(s): %s", n, last)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a did not reject b's certificate: %d, %q", n, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.waitStatus(t, 5*time.Second, "Idle", func(st LinkStatus) bool { return st.State == Idle && st.Failures > 0 })
	if a.pump.Peer("b") != nil || b.pump.Peer("a") != nil {
		t.Fatal("a peer with a certificate from another CA got connected")
	}
}

// A link that pins an identity takes only a URI SAN as that identity, on
// the accepting side as on the dialing one: a member whose certificate (of
// the same CA) carries kubelink://default/b as its common name and DNS
// name, but not as a URI, is not b either way.
func TestConnectorIdentityIsAURIOnly(t *testing.T) {
	nstest.RequireRoot(t)
	ca := newTestCA(t)
	a, b := twoConnEnds(t, ca, ca)
	const identity = "kubelink://default/b"
	writeCertDir(t, b.dir, ca, ca.issue(t, identity))
	if _, err := b.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	a.peerIdentity = identity
	a.start(t, b)
	b.start(t, a)
	// b dials a: a finds no link for a certificate without the URI.
	sawRejection := false
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st := a.status(t); st.State == Connected || a.pump.Peer("b") != nil {
			t.Fatalf("a connected b, whose certificate names %s only as CN and DNS name: %+v", identity, st)
		}
		if _, last := a.conn.Rejected(); strings.Contains(last, "no link for peer") {
			sawRejection = true
		}
	}
	if !sawRejection {
		n, last := a.conn.Rejected()
		t.Errorf("a did not reject b's connections as no link's: %d rejected, last %q", n, last)
	}
	// a dials b: the server certificate has no such URI either.
	if st := a.status(t); !strings.Contains(st.Reason, "wrong peer identity") {
		t.Errorf("a's dial of b: %+v, want the wrong identity", st)
	}
	// With the identity as a URI SAN, b is b.
	writeCertDir(t, b.dir, ca, ca.issueWithURIs(t, "b.kubelink.test", identity))
	if _, err := b.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	a.waitStatus(t, 10*time.Second, "Connected with b's identity as a URI", connected)
}

// Unauthenticated work is bounded: connections that never finish TLS are
// cut after TLSTimeout, at most MaxPendingPerSource wait per address, and
// a newer connection over the limit evicts the oldest pending one (closed
// at once, counted as rejected): silent connections from one address —
// behind a NodePort, the address of a node every peer comes through —
// cannot keep a real peer out.
// serveAdmission starts a Connector for a.kubelink.test (of a new test CA,
// returned) that admits at most 3 pending handshakes per source and 8 in
// all, each for tlsTimeout, serving on a loopback listener.
func serveAdmission(t *testing.T, tlsTimeout time.Duration) (*Connector, net.Listener, *testCA) {
	t.Helper()
	p, _ := newTestPump(t, Config{})
	dir := t.TempDir()
	ca := newTestCA(t)
	writeCertDir(t, dir, ca, ca.issue(t, "a.kubelink.test"))
	certs, err := LoadCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConnector(ConnectorConfig{Pump: p, Certs: certs, TLSTimeout: tlsTimeout, MaxPending: 8, MaxPendingPerSource: 3,
		Hello: Hello{MinVersion: 1, MaxVersion: Version, ClusterAddress: netip.MustParsePrefix("192.168.0.11/24")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Serve(ln) }()
	return c, ln, ca
}

// closedWithin reports whether the server closed conn within d.
func closedWithin(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestServeBoundsUnauthenticatedConnections(t *testing.T) {
	c, ln, ca := serveAdmission(t, 400*time.Millisecond)
	var conns []net.Conn
	for range 5 {
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
		time.Sleep(20 * time.Millisecond) // accepted in order
	}
	start := time.Now()
	for i, conn := range conns[:2] {
		if !closedWithin(conn, 200*time.Millisecond) {
			t.Errorf("connection %d, the oldest over the per-source limit, was not evicted at once", i+1)
		}
	}
	for i, conn := range conns[2:] {
		if closedWithin(conn, 50*time.Millisecond) {
			t.Errorf("connection %d, among the newest within the limit, was closed before the TLS timeout", i+3)
		}
	}
	for i, conn := range conns[2:] {
		if !closedWithin(conn, 2*time.Second) {
			t.Errorf("connection %d without TLS was not cut after the TLS timeout", i+3)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("silent connections lived %s, want about the 400ms TLS timeout", took)
	}
	deadline := time.Now().Add(2 * time.Second)
	for n, _ := c.Rejected(); n < 5; n, _ = c.Rejected() {
		if time.Now().After(deadline) {
			t.Fatalf("rejected %d connections, want 5", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Three silent connections hold every slot of the address; a real peer
	// dialing from it still gets through TLS, over and over.
	for range 3 {
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	time.Sleep(50 * time.Millisecond)
	peerCert := ca.issueWithURIs(t, "b.kubelink.test", "kubelink://default/b")
	for i := range 3 {
		tc, err := tls.Dial("tcp4", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{peerCert}, RootCAs: ca.pool,
			ServerName: "a.kubelink.test", MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatalf("peer's dial %d with 3 silent connections from its address: %v", i+1, err)
		}
		// TLS 1.3: the server checks the client certificate after the
		// client's handshake ended; its CLOSE (no link for this peer, as
		// this side has none) shows it got past admission and TLS.
		_ = tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(tc)
		tc.Close()
		if !strings.Contains(string(b), "no link for peer") {
			t.Errorf("peer's dial %d: the server answered %q (%v), want its CLOSE naming no link for the peer", i+1, b, err)
		}
	}
}

// Over the per-source limit, a pending connection that has sent nothing is
// evicted before an older one whose TLS handshake is under way: a host
// that keeps silent connections at the limit behind a peer's address (a
// NodePort gives both the node's) cannot evict the peer in the middle of
// its handshake.
func TestEvictionPrefersSilentConnections(t *testing.T) {
	c, ln, _ := serveAdmission(t, 3*time.Second)
	dial := func() net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		time.Sleep(30 * time.Millisecond) // accepted (and read) in order
		return conn
	}
	// The oldest: a handshake under way (a TLS record header announcing
	// a ClientHello whose rest has not arrived yet).
	talker := dial()
	if _, err := talker.Write([]byte{0x16, 0x03, 0x01, 0x00, 0xc8}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	silent1, silent2 := dial(), dial()
	newest := dial() // the fourth from the address: one must go
	if !closedWithin(silent1, 300*time.Millisecond) {
		t.Error("the oldest silent connection was not evicted by the newest")
	}
	for name, conn := range map[string]net.Conn{"the handshake under way": talker, "the second silent one": silent2, "the newest": newest} {
		if closedWithin(conn, 100*time.Millisecond) {
			t.Errorf("%s was closed; want only the oldest silent connection evicted", name)
		}
	}
	// All that talk: the oldest goes.
	for _, conn := range []net.Conn{silent2, newest} {
		if _, err := conn.Write([]byte{0x16, 0x03, 0x01, 0x00, 0xc8}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	dial()
	if !closedWithin(talker, 300*time.Millisecond) {
		t.Error("with every pending connection talking, the oldest was not evicted")
	}
	if _, last := c.Rejected(); !strings.Contains(last, "evicted by a newer connection: the oldest (under way; none was silent)") {
		t.Errorf("last rejection %q", last)
	}
}
