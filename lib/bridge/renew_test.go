package bridge

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

func TestHelloReplaceExtension(t *testing.T) {
	h := fullHello
	h.Replace = true
	b, err := AppendHello(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHello(f.Payload)
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := ParseHello(helloBytes(0, 3, 0, 0, 0, 3, 0, 0)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "extension 3 twice") {
		t.Errorf("REPLACE twice: %v", err)
	}
	if _, err := ParseHello(helloBytes(0, 3, 0, 1, 7)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "bytes after") {
		t.Errorf("REPLACE with a value: %v", err)
	}
}

// After a certificate rotation, Renew moves the link to a new connection
// that presents the new certificate, without the link going Idle and
// without losing the counters of the old connection. b has the higher
// cluster address, so the tie-break alone would keep the old connection:
// the HELLO's Replace extension is what makes both sides take the new one.
func TestConnectorRenewMovesToTheNewCertificate(t *testing.T) {
	nstest.RequireRoot(t)
	ca := newTestCA(t)
	a, b := twoConnEnds(t, ca, ca)
	a.start(t, b)
	b.start(t, a)
	srv := startSink(t, b.ns)
	a.waitStatus(t, 5*time.Second, "Connected", connected)
	settled(t, a, b)
	if _, err := transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(1<<20), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := waitTxBytes(t, a.conn, "b", 1<<20)
	oldPeer := a.pump.Peer("b")
	a.mu.Lock()
	a.events = nil
	a.mu.Unlock()

	rotated := ca.issue(t, "b.kubelink.test")
	newSerial := serialOf(t, rotated)
	writeCertDir(t, b.dir, ca, rotated)
	if changed, err := b.certs.Reload(); err != nil || !changed {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	renewed := time.Now()
	// Traffic keeps flowing while the connection is replaced.
	var wg sync.WaitGroup
	var terr error
	wg.Go(func() {
		_, terr = transfer(a.ns, b.cluster4.Addr().String(), srv, randomData(8<<20), 20*time.Second)
	})
	b.conn.Renew()
	a.waitStatus(t, 5*time.Second, "on the new certificate", func(LinkStatus) bool {
		c := a.conn.PeerCertificate("b")
		return c != nil && c.SerialNumber.String() == newSerial
	})
	t.Logf("a sees b's new certificate %v after Renew", time.Since(renewed).Round(time.Millisecond))
	wg.Wait()
	if terr != nil {
		t.Fatalf("transfer during the renewal: %v", terr)
	}
	select {
	case <-oldPeer.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the old connection is still open")
	}
	a.mu.Lock()
	for _, st := range a.events {
		if st.State != Connected {
			t.Errorf("a's link went %s during the renewal: %s", st.State, st.Reason)
		}
	}
	a.mu.Unlock()
	if st := b.status(t); st.State != Connected {
		t.Errorf("b: %+v", st)
	}
	after := waitTxBytes(t, a.conn, "b", before.TxBytes+8<<20)
	if after.RxFrames <= before.RxFrames {
		t.Errorf("link counters lost across the renewal: before %+v, after %+v", before, after)
	}
}

// An authenticated peer without a link reaches OnUnknown with its HELLO
// and address; once the link exists, the two connect.
func TestConnectorAutoConnectCallback(t *testing.T) {
	nstest.RequireRoot(t)
	ca := newTestCA(t)
	a, b := twoConnEnds(t, ca, ca)
	got := make(chan UnknownPeer, 100)
	var refuse atomic.Bool
	a.noLinks = true
	a.onUnknown = func(p UnknownPeer) error {
		if refuse.Load() {
			return errors.New("cluster address outside the mesh")
		}
		select {
		case got <- p:
		default:
		}
		return nil
	}
	a.start(t, b)
	b.start(t, a)
	var p UnknownPeer
	select {
	case p = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("OnUnknown not called")
	}
	if p.Hello.ClusterAddress != b.cluster4 || !MatchIdentity(p.Identities, "b.kubelink.test") || p.Remote.Addr() != b.underlay {
		t.Errorf("unknown peer %+v", p)
	}
	b.waitStatus(t, 5*time.Second, "told a link is being made", func(st LinkStatus) bool {
		return st.State == Idle && strings.Contains(st.Reason, "being created")
	})
	if n, _ := a.conn.Rejected(); n != 0 {
		t.Errorf("an accepted unknown peer counted as rejected (%d)", n)
	}

	// A refusing callback rejects, counts, and tells the peer why.
	refuse.Store(true)
	b.waitStatus(t, 5*time.Second, "told why", func(st LinkStatus) bool {
		return st.State == Idle && strings.Contains(st.Reason, "cluster address outside the mesh")
	})
	if n, last := a.conn.Rejected(); n == 0 || !strings.Contains(last, "outside the mesh") {
		t.Errorf("rejected %d, %q", n, last)
	}

	a.conn.SetLinks([]Link{a.linkTo(b)})
	a.waitStatus(t, 5*time.Second, "Connected", connected)
	settled(t, a, b)
}

// The filter sees what the probe exemption of the policy needs: the UDP
// ports of a packet, and no ports for a fragment (which has no UDP header).
func TestFilterSeesUDPPortsButNotInFragments(t *testing.T) {
	local := netip.MustParseAddr("192.168.88.1")
	var seen Packet
	pol := Policy{Filter: func(p Packet) Verdict { seen = p; return Pass }}
	udp := func(sport, dport uint16, frag bool) []byte {
		pkt := make([]byte, 28)
		pkt[0], pkt[8], pkt[9] = 0x45, 64, protoUDP
		binary.BigEndian.PutUint16(pkt[2:4], 28)
		if frag {
			binary.BigEndian.PutUint16(pkt[6:8], 10) // offset 80: no UDP header here
		}
		copy(pkt[12:16], []byte{192, 168, 88, 2})
		copy(pkt[16:20], local.AsSlice())
		binary.BigEndian.PutUint16(pkt[20:22], sport)
		binary.BigEndian.PutUint16(pkt[22:24], dport)
		binary.BigEndian.PutUint16(pkt[24:26], 8)
		return pkt
	}
	peerAddr := netip.MustParseAddr("192.168.88.2")
	for _, c := range []struct {
		name string
		pkt  []byte
		want Packet
	}{
		{"probe", udp(40000, 8779, false), Packet{Src: peerAddr, Dst: local, UDP: true, SrcPort: 40000, DstPort: 8779}},
		{"reply", udp(8779, 8780, false), Packet{Src: peerAddr, Dst: local, UDP: true, SrcPort: 8779, DstPort: 8780}},
		{"fragment", udp(40000, 8779, true), Packet{Src: peerAddr, Dst: local}},
	} {
		info, err := inspect(c.pkt, Offload{})
		if err != nil {
			t.Fatal(err)
		}
		if v := pol.verdict(&info); v != Pass || seen != c.want {
			t.Errorf("%s: filter saw %+v (verdict %d), want %+v", c.name, seen, v, c.want)
		}
	}
}

// waitTxBytes waits (2 s at most) until the link has sent at least min bytes
// and fails the test otherwise. The writer counts a batch after its write
// returned, which may be after the peer already answered.
func waitTxBytes(t *testing.T, c *Connector, id string, min uint64) PeerStats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, _ := c.LinkStats(id)
		if st.TxBytes >= min {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s sent %d bytes, want at least %d (counters lost?)", id, st.TxBytes, min)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
