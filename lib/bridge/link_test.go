package bridge

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

var (
	mesh4 = netip.MustParsePrefix("192.168.88.0/24")
	mesh6 = netip.MustParsePrefix("fd88::/64")
)

// bridgeEnd is one cluster of the test: a namespace with a veth towards
// the other, a tun device with the cluster addresses and a pump.
type bridgeEnd struct {
	ns               *nstest.Namespace
	id, peerID       string
	underlay         netip.Addr
	cluster4         netip.Prefix
	cluster6         netip.Prefix
	cert             tls.Certificate
	tun              *TUN
	pump             *Pump
	peer             *Peer
	hello, peerHello Hello
}

func newEnd(t testing.TB, id, peerID string, host byte) *bridgeEnd {
	return &bridgeEnd{
		ns: nstest.New(t, id), id: id, peerID: peerID,
		underlay: netip.AddrFrom4([4]byte{10, 98, 0, host}),
		cluster4: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 88, host}), 24),
		cluster6: netip.PrefixFrom(netip.MustParseAddr("fd88::"+strconv.Itoa(int(host))), 64),
	}
}

func (e *bridgeEnd) open(t testing.TB) {
	t.Helper()
	name := nstest.UniqueName("br")
	if err := e.ns.Do(func() (err error) { e.tun, err = OpenTUN(name, 1500); return err }); err != nil {
		t.Fatalf("open tun in %s: %v", e.ns.Name, err)
	}
	t.Cleanup(func() { _ = e.tun.Close() })
	e.ns.Run(t, "ip", "addr", "add", e.cluster4.String(), "dev", name)
	e.ns.Run(t, "ip", "addr", "add", e.cluster6.String(), "dev", name, "nodad")
	e.ns.Run(t, "ip", "link", "set", name, "up")
	route := func(dst netip.Addr) string {
		if mesh4.Contains(dst) || mesh6.Contains(dst) {
			return e.peerID
		}
		return ""
	}
	var err error
	e.pump, err = NewPump(e.tun, Config{Route: route, Keepalive: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.pump.Close() })
	e.hello = Hello{
		MinVersion: 1, MaxVersion: Version, ClusterAddress: e.cluster4, Port: 8088,
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		DNS:         &DNSInfo{ClusterDomain: e.id + ".cluster.local", DNSIP: netip.MustParseAddr("10.96.0.10")},
	}
}

// policyFor lets the other end use only its own cluster addresses and
// reach everything but 192.168.88.77.
func policyFor(other *bridgeEnd) Policy {
	denied := netip.MustParseAddr("192.168.88.77")
	return Policy{Filter: func(p Packet) Verdict {
		switch {
		case p.Src != other.cluster4.Addr() && p.Src != other.cluster6.Addr():
			return Spoofed
		case p.Dst == denied:
			return Denied
		}
		return Pass
	}}
}

// connect joins a (client) and b (server) with mutual TLS over the veth,
// exchanges HELLOs and adds each as the other's peer.
func connect(t testing.TB, ca *testCA, a, b *bridgeEnd) {
	t.Helper()
	var l net.Listener
	if err := b.ns.Do(func() (err error) {
		l, err = net.Listen("tcp4", netip.AddrPortFrom(b.underlay, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		conn  *tls.Conn
		hello Hello
		err   error
	}
	served := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- result{err: err}
			return
		}
		tc := tls.Server(c, ca.serverConfig(b.cert))
		h, err := Handshake(tc, b.hello, 5*time.Second)
		served <- result{tc, h, err}
	}()
	var raw net.Conn
	if err := a.ns.Do(func() (err error) {
		raw, err = net.DialTimeout("tcp4", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ac := tls.Client(raw, ca.clientConfig(a.cert, "b.kubelink.test"))
	ah, aerr := Handshake(ac, a.hello, 5*time.Second)
	br := <-served
	if aerr != nil || br.err != nil {
		t.Fatalf("handshake: client %v, server %v", aerr, br.err)
	}
	if cn := br.conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "a.kubelink.test" {
		t.Fatalf("server sees client certificate %q", cn)
	}
	a.peerHello, b.peerHello = ah, br.hello
	var err error
	if a.peer, err = a.pump.AddPeer(a.peerID, ac, policyFor(b)); err != nil {
		t.Fatal(err)
	}
	if b.peer, err = b.pump.AddPeer(b.peerID, br.conn, policyFor(a)); err != nil {
		t.Fatal(err)
	}
}

func TestBridgeBetweenNamespaces(t *testing.T) {
	nstest.RequireRoot(t)
	ca := newTestCA(t)
	a, b := newEnd(t, "a", "b", 1), newEnd(t, "b", "a", 2)
	a.cert, b.cert = ca.issue(t, "a.kubelink.test"), ca.issue(t, "b.kubelink.test")
	nstest.Veth(t, a.ns, "eth0", netip.PrefixFrom(a.underlay, 24).String(), b.ns, "eth0", netip.PrefixFrom(b.underlay, 24).String())
	a.open(t)
	b.open(t)
	connect(t, ca, a, b)
	if a.peerHello.ClusterAddress != b.cluster4 || b.peerHello.DNS == nil || b.peerHello.DNS.ClusterDomain != "a.cluster.local" {
		t.Fatalf("HELLOs not exchanged: a got %+v, b got %+v", a.peerHello, b.peerHello)
	}
	srv := startSink(t, b.ns)

	t.Run("64 MiB of TCP arrive intact, as GSO super-packets", func(t *testing.T) {
		mib := 64
		if s := os.Getenv("BRIDGE_TEST_MIB"); s != "" {
			mib, _ = strconv.Atoi(s)
		}
		data := randomData(mib << 20)
		before := a.peer.Stats()
		viaBridge, err := transfer(a.ns, b.cluster4.Addr().String(), srv, data, 30*time.Second)
		if err != nil {
			t.Fatalf("through the bridge: %v", err)
		}
		viaVeth, err := transfer(a.ns, b.underlay.String(), srv, data, 30*time.Second)
		if err != nil {
			t.Fatalf("plain veth: %v", err)
		}
		st := a.peer.Stats()
		packets, frames := st.TxPackets-before.TxPackets, st.TxFrames-before.TxFrames
		avg := (st.TxBytes - before.TxBytes) / max(packets, 1)
		t.Logf("THROUGHPUT %d MiB TCP: bridge %.2f Gbit/s (%v), plain veth %.2f Gbit/s (%v); bridge/veth %.2f; a→b %d packets in %d frames, %d bytes per packet on average",
			mib, gbits(len(data), viaBridge), viaBridge.Round(time.Millisecond), gbits(len(data), viaVeth), viaVeth.Round(time.Millisecond),
			viaVeth.Seconds()/viaBridge.Seconds(), packets, frames, avg)
		if avg <= 1500 {
			t.Errorf("average packet of %d bytes: GSO super-packets did not cross the bridge whole", avg)
		}
	})
	t.Run("TCP over IPv6", func(t *testing.T) {
		if _, err := transfer(a.ns, b.cluster6.Addr().String(), srv, randomData(4<<20), 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("spoofed source is dropped and counted", func(t *testing.T) {
		pc := udpListener(t, b.ns)
		dst := netip.AddrPortFrom(b.cluster4.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		before := b.pump.Drops().Spoofed
		a.ns.SendRawUDP(t, netip.MustParseAddr("192.168.88.99"), dst, "spoofed")
		// Same connection and order, so once this one is in, the spoofed
		// one has been judged.
		a.ns.SendRawUDP(t, a.cluster4.Addr(), dst, "genuine")
		if got := receiveUntil(pc, "genuine", 5*time.Second); !slices.Equal(got, []string{"genuine"}) {
			t.Errorf("received %q, want only the genuine datagram", got)
		}
		// Counters are added after each batch, maybe after the datagram.
		if !waitUntil(func() bool { return b.pump.Drops().Spoofed-before == 1 }) {
			t.Errorf("spoofed drops grew by %d, want 1", b.pump.Drops().Spoofed-before)
		}
		if b.peer.Stats().Drops.Spoofed == 0 {
			t.Error("the drop is not attributed to the peer")
		}
	})
	t.Run("denied destination is dropped and counted", func(t *testing.T) {
		pc := udpListener(t, b.ns)
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		before := b.pump.Drops().IngressDenied
		sendUDP(t, a.ns, netip.AddrPortFrom(netip.MustParseAddr("192.168.88.77"), port), "denied")
		sendUDP(t, a.ns, netip.AddrPortFrom(b.cluster4.Addr(), port), "allowed")
		if got := receiveUntil(pc, "allowed", 5*time.Second); !slices.Equal(got, []string{"allowed"}) {
			t.Errorf("received %q, want only the allowed datagram", got)
		}
		if !waitUntil(func() bool { return b.pump.Drops().IngressDenied-before == 1 }) {
			t.Errorf("ingress drops grew by %d, want 1", b.pump.Drops().IngressDenied-before)
		}
	})
	t.Run("idle connection lives on keepalives", func(t *testing.T) {
		time.Sleep(1500 * time.Millisecond) // longer than the 1 s timeout
		for _, e := range []*bridgeEnd{a, b} {
			if err := e.peer.Err(); err != nil || e.pump.Peer(e.peerID) != e.peer {
				t.Fatalf("%s: peer gone while idle: %v", e.id, err)
			}
			if since := time.Since(e.peer.Stats().LastReceived); since > 500*time.Millisecond {
				t.Errorf("%s: last frame %v ago, keepalives every 200ms", e.id, since)
			}
		}
	})
	t.Run("dead peer is noticed within the timeout", func(t *testing.T) {
		b.ns.Run(t, "ip", "link", "set", "eth0", "down")
		for _, e := range []*bridgeEnd{a, b} {
			select {
			case <-e.peer.Done():
				if !errors.Is(e.peer.Err(), os.ErrDeadlineExceeded) {
					t.Errorf("%s: peer ended with %v, want a timeout", e.id, e.peer.Err())
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("%s: peer still up 3s after its link went down", e.id)
			}
		}
		if ids := a.pump.Peers(); len(ids) != 0 {
			t.Errorf("a still lists peers %v", ids)
		}
		b.ns.Run(t, "ip", "link", "set", "eth0", "up")
	})
	t.Run("removed peer is told why", func(t *testing.T) {
		connect(t, ca, a, b)
		if _, err := transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(1<<20), 10*time.Second); err != nil {
			t.Fatalf("after reconnect: %v", err)
		}
		a.pump.RemovePeer("b", "link deleted")
		select {
		case <-b.peer.Done():
		case <-time.After(3 * time.Second):
			t.Fatal("b did not notice the removal")
		}
		var ce *CloseError
		if !errors.As(b.peer.Err(), &ce) || ce.Code != CloseNormal || ce.Reason != "link deleted" {
			t.Errorf("b's peer ended with %v, want CLOSE normal: link deleted", b.peer.Err())
		}
		<-a.peer.Done()
		if !errors.Is(a.peer.Err(), ErrRemoved) {
			t.Errorf("a's peer ended with %v, want ErrRemoved", a.peer.Err())
		}
	})
	t.Run("closing removes the tun device", func(t *testing.T) {
		for _, e := range []*bridgeEnd{a, b} {
			if err := e.pump.Close(); err != nil {
				t.Error(err)
			}
			if err := e.tun.Close(); err != nil {
				t.Error(err)
			}
			if out, err := e.ns.Command("ip", "link", "show", e.tun.Name()).CombinedOutput(); err == nil {
				t.Errorf("%s still there after Close:\n%s", e.tun.Name(), out)
			}
		}
	})
}
