package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func meshHello(addr string) Hello {
	return Hello{MinVersion: Version, MaxVersion: Version, ClusterAddress: netip.MustParsePrefix(addr)}
}

// The accepting side reads the peer's HELLO first and answers with the
// HELLO it chooses for it; the dialing side cannot tell.
func TestHandshakeAnswering(t *testing.T) {
	m1, m2 := meshHello("192.168.0.2/24"), meshHello("10.200.0.2/24")
	for _, c := range []struct {
		client, want Hello
	}{
		{meshHello("192.168.0.1/24"), m1},
		{meshHello("10.200.0.1/24"), m2},
	} {
		cl, srv := net.Pipe()
		got := make(chan Hello, 1)
		go func() {
			h, err := Handshake(cl, c.client, 2*time.Second)
			if err != nil {
				t.Error(err)
			}
			got <- h
		}()
		remote, local, err := HandshakeAnswering(srv, func(r Hello) Hello {
			if m2.ClusterAddress.Masked().Contains(r.ClusterAddress.Addr()) {
				return m2
			}
			return m1
		}, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if remote.ClusterAddress != c.client.ClusterAddress || local.ClusterAddress != c.want.ClusterAddress {
			t.Errorf("client %s: server read %s and answered %s, want %s", c.client.ClusterAddress, remote.ClusterAddress, local.ClusterAddress, c.want.ClusterAddress)
		}
		if h := <-got; h.ClusterAddress != c.want.ClusterAddress {
			t.Errorf("client %s received %s, want %s", c.client.ClusterAddress, h.ClusterAddress, c.want.ClusterAddress)
		}
		cl.Close()
		srv.Close()
	}

	// A peer speaking no common version gets CLOSE unsupported version.
	cl, srv := net.Pipe()
	defer cl.Close()
	old := meshHello("192.168.0.1/24")
	old.MinVersion, old.MaxVersion = Version+1, Version+1
	cerr := make(chan error, 1)
	go func() { _, err := Handshake(cl, old, 300*time.Millisecond); cerr <- err }()
	if _, _, err := HandshakeAnswering(srv, func(Hello) Hello { return m1 }, 300*time.Millisecond); !errors.Is(err, ErrVersion) {
		t.Errorf("answering a peer without a common version: %v", err)
	}
	srv.Close()
	<-cerr
}

// mmEnd is a Connector on loopback for the tests of several meshes.
type mmEnd struct {
	name string
	conn *Connector
	pump *Pump
	port int
}

// startMMEnd runs a Connector for name.kubelink.test; dials to
// x.kubelink.test go to 127.0.0.1 unless noDial, which makes this end only
// accept.
func startMMEnd(t *testing.T, ca *testCA, name string, def Hello, noDial bool, onUnknown func(UnknownPeer) error) *mmEnd {
	t.Helper()
	dir := t.TempDir()
	writeCertDir(t, dir, ca, ca.issue(t, name+".kubelink.test"))
	certs, err := LoadCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	pump, _ := newTestPump(t, Config{})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if noDial {
			return nil, errors.New("this end only accepts")
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	conn, err := NewConnector(ConnectorConfig{Pump: pump, Certs: certs, Hello: def, Dial: dial, OnUnknown: onUnknown,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, HandshakeTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = conn.Serve(l) }()
	t.Cleanup(func() { conn.Close(); <-served })
	return &mmEnd{name: name, conn: conn, pump: pump, port: l.Addr().(*net.TCPAddr).Port}
}

func (e *mmEnd) endpoint() string {
	return net.JoinHostPort(e.name+".kubelink.test", strconv.Itoa(e.port))
}

func waitLink(t *testing.T, e *mmEnd, id string, d time.Duration, cond func(LinkStatus) bool) LinkStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, _ := e.conn.Status(id)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: link %s: %+v", e.name, id, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A and B are both members of two meshes: each has a link to the other in
// each mesh, with the same endpoint and certificate, and announces on each
// link its cluster address in that mesh. B only accepts, so it must tell
// the links apart by the cluster address in A's HELLO and answer with its
// own address in the same mesh.
func TestConnectorServesSeveralMeshes(t *testing.T) {
	ca := newTestCA(t)
	a1, a2 := meshHello("192.168.0.1/24"), meshHello("10.200.0.1/24")
	b1, b2 := meshHello("192.168.0.2/24"), meshHello("10.200.0.2/24")
	a := startMMEnd(t, ca, "a", a1, false, nil)
	b := startMMEnd(t, ca, "b", b1, true, nil)
	b.conn.SetLinks([]Link{
		{ID: "a", Endpoint: a.endpoint(), ClusterAddress: a1.ClusterAddress}, // Local: the default
		{ID: "m2--a", Endpoint: a.endpoint(), ClusterAddress: a2.ClusterAddress, Local: &b2},
	})
	a.conn.SetLinks([]Link{
		{ID: "b", Endpoint: b.endpoint(), ClusterAddress: b1.ClusterAddress},
		{ID: "m2--b", Endpoint: b.endpoint(), ClusterAddress: b2.ClusterAddress, Local: &a2},
	})
	for _, c := range []struct {
		end        *mmEnd
		id         string
		peerAddr   Hello
		wantOutbnd bool
	}{
		{a, "b", b1, true}, {a, "m2--b", b2, true},
		{b, "a", a1, false}, {b, "m2--a", a2, false},
	} {
		st := waitLink(t, c.end, c.id, 5*time.Second, connected)
		if st.PeerHello.ClusterAddress != c.peerAddr.ClusterAddress || st.Outbound != c.wantOutbnd {
			t.Errorf("%s: link %s connected to %s (outbound %v), want %s (outbound %v)", c.end.name, c.id, st.PeerHello.ClusterAddress, st.Outbound, c.peerAddr.ClusterAddress, c.wantOutbnd)
		}
		if c.end.pump.Peer(c.id) == nil {
			t.Errorf("%s: link %s has no peer in the pump", c.end.name, c.id)
		}
	}
	if n, last := b.conn.Rejected(); n != 0 {
		t.Errorf("B rejected %d connections, last: %s", n, last)
	}

	// A link whose peer is not in its mesh at that address is still refused.
	b.conn.SetLinks([]Link{
		{ID: "a", Endpoint: a.endpoint(), ClusterAddress: a1.ClusterAddress},
		{ID: "m2--a", Endpoint: a.endpoint(), ClusterAddress: netip.MustParsePrefix("10.200.0.9/24"), Local: &b2},
	})
	st := waitLink(t, a, "m2--b", 5*time.Second, func(st LinkStatus) bool {
		return st.State == Idle && strings.Contains(st.Reason, "peer announces cluster address 10.200.0.1/24, link m2--a has 10.200.0.9/24")
	})
	t.Logf("A's link m2--b after B changed its side: %s", st.Reason)
	if st, _ := a.conn.Status("b"); st.State != Connected {
		t.Errorf("A's link b in the other mesh went %s: %s", st.State, st.Reason)
	}
}

// An unknown peer is answered with the HELLO of the mesh its cluster
// address is in, so that it gets to the auto-connect answer instead of
// rejecting a HELLO from another mesh.
func TestUnknownPeerIsAnsweredInItsMesh(t *testing.T) {
	ca := newTestCA(t)
	b1, b2 := meshHello("192.168.0.2/24"), meshHello("10.200.0.2/24")
	seen := make(chan UnknownPeer, 4)
	// C redials while the test runs, and the callback must never block
	// (Connector.Close waits for it): later calls past the buffer are dropped.
	b := startMMEnd(t, ca, "b", b1, true, func(u UnknownPeer) error {
		select {
		case seen <- u:
		default:
		}
		return nil
	})
	d := startMMEnd(t, ca, "d", meshHello("192.168.0.4/24"), true, nil)
	// B has links in both meshes, none for C.
	b.conn.SetLinks([]Link{
		{ID: "d", Endpoint: d.endpoint(), ClusterAddress: netip.MustParsePrefix("192.168.0.4/24")},
		{ID: "m2--d", Endpoint: d.endpoint(), ClusterAddress: netip.MustParsePrefix("10.200.0.4/24"), Local: &b2},
	})
	c := startMMEnd(t, ca, "c", meshHello("10.200.0.3/24"), false, nil)
	c.conn.SetLinks([]Link{{ID: "m2--b", Endpoint: b.endpoint(), ClusterAddress: b2.ClusterAddress}})
	select {
	case u := <-seen:
		if u.Hello.ClusterAddress.String() != "10.200.0.3/24" {
			t.Errorf("unknown peer announced %s", u.Hello.ClusterAddress)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B did not see C as an unknown peer")
	}
	st := waitLink(t, c, "m2--b", 5*time.Second, func(st LinkStatus) bool { return strings.Contains(st.Reason, "being created") })
	if strings.Contains(st.Reason, "peer announces") {
		t.Errorf("C rejected B's HELLO: %s", st.Reason)
	}
}
