package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// A fence message counts only with the cluster's key, for the holder's own
// lease, identity and holding period: a pod without the key cannot stop
// the active broker, and a recorded request cannot stop a later holding
// period of the same broker.
func TestFenceMessageIsAuthenticatedAndBoundToTheHolder(t *testing.T) {
	key, other := deriveFenceKey([]byte("cluster a's key")), deriveFenceKey([]byte("cluster b's key"))
	acquired := time.Date(2026, 12, 7, 8, 0, 0, 123456000, time.UTC)
	req := fenceMsg{Kind: fenceRequest, Epoch: 7, TargetAcquired: acquired.UnixMicro(), Lease: "kubelink-broker", Target: "broker-0", Sender: "broker-1"}
	req.Nonce[0] = 42
	b, err := req.marshal(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseFence(b, key)
	if err != nil || got != req {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, req)
	}
	if err := fenceFor(got, "kubelink-broker", "broker-0", acquired); err != nil {
		t.Errorf("a request for the holding period refused: %v", err)
	}
	// As the holder keeps it (nanoseconds) and the Lease stores it
	// (microseconds): the same period.
	if err := fenceFor(got, "kubelink-broker", "broker-0", acquired.Add(789)); err != nil {
		t.Errorf("a request for the holding period, acquired in the same microsecond, refused: %v", err)
	}
	if _, err := parseFence(b, other); !errors.Is(err, errFenceMAC) {
		t.Errorf("under another cluster's key: %v, want %v", err, errFenceMAC)
	}
	for i := range b {
		flipped := append([]byte(nil), b...)
		flipped[i] ^= 1
		if _, err := parseFence(flipped, key); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	for n := range len(b) {
		if _, err := parseFence(b[:n], key); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	for _, c := range []struct {
		lease, id string
		acquired  time.Time
		want      string
	}{
		{"kubelink-broker", "broker-0", acquired.Add(time.Microsecond), "a replay?"},
		{"kubelink-broker", "broker-0", acquired.Add(time.Hour), "a replay?"},
		{"other-lease", "broker-0", acquired, "for lease"},
		{"kubelink-broker", "broker-2", acquired, "for \"broker-0\""},
	} {
		if err := fenceFor(got, c.lease, c.id, c.acquired); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("holder %s/%s acquired at %s: %v, want an error with %q", c.lease, c.id, c.acquired, err, c.want)
		}
	}
	ack := got
	ack.Kind = fenceAck
	if err := fenceFor(ack, "kubelink-broker", "broker-0", acquired); err == nil {
		t.Error("an acknowledgement counted as a request")
	}
	long := req
	long.Sender = strings.Repeat("x", 256)
	if _, err := long.marshal(key); err == nil {
		t.Error("a 256-byte identity was encoded")
	}
}

// Over real UDP: the holder gets the request, stops (here: 200 ms), then
// acknowledges, and the new holder's wait ends with the acknowledgement,
// not before. A request under another key reaches nobody and goes
// unanswered; a port nobody listens on is refused at once.
func TestFenceWaitsForTheHolderToStop(t *testing.T) {
	key := deriveFenceKey([]byte("cluster a's key"))
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	out := make(chan fenced, 1)
	acquired := time.Now()
	go serveFence(conn, func() ([]byte, error) { return key, nil }, "kubelink-broker", "broker-0", acquired, out, slog.New(slog.DiscardHandler))
	const stopping = 200 * time.Millisecond
	go func() {
		f := <-out
		time.Sleep(stopping)
		f.ack()
	}()
	req := fenceMsg{Epoch: 4, TargetAcquired: acquired.UnixMicro(), Lease: "kubelink-broker", Target: "broker-0", Sender: "broker-1"}

	// The wrong key first: nothing reaches the holder.
	start := time.Now()
	res, err := sendFence(context.Background(), addr, req, deriveFenceKey([]byte("a guess")), 300*time.Millisecond)
	if err != nil || res != fenceUnanswered {
		t.Fatalf("under a wrong key: %v, %v; want %v", res, err, fenceUnanswered)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("an unanswered fence returned after %s, want the wait of 300ms", took)
	}
	stale := req
	stale.TargetAcquired -= int64(time.Minute / time.Microsecond)
	if res, err := sendFence(context.Background(), addr, stale, key, 300*time.Millisecond); err != nil || res != fenceUnanswered {
		t.Fatalf("a request for an earlier holding period: %v, %v; want %v", res, err, fenceUnanswered)
	}

	start = time.Now()
	res, err = sendFence(context.Background(), addr, req, key, 5*time.Second)
	took := time.Since(start)
	if err != nil || res != fenceAcked {
		t.Fatalf("fence: %v, %v; want %v", res, err, fenceAcked)
	}
	if took < stopping || took > 3*time.Second {
		t.Errorf("acknowledged after %s: want after the holder's stop (%s), well before the wait", took, stopping)
	}

	closed, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	nobody := closed.LocalAddr().(*net.UDPAddr).AddrPort()
	closed.Close()
	start = time.Now()
	res, err = sendFence(context.Background(), netip.AddrPortFrom(nobody.Addr(), nobody.Port()), req, key, 5*time.Second)
	if err != nil || res != fenceRefused {
		t.Fatalf("to a port nobody listens on: %v, %v; want %v", res, err, fenceRefused)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a refused fence took %s, want at once", took)
	}
}
