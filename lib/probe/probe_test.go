package probe

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

var lo = netip.MustParseAddr("127.0.0.1")

// The real sockets run on loopback: a responder on one port, a prober
// pointed at it. Stopping the responder must turn the target Down within
// DownAfter plus one interval, and restarting it must bring it Up again.
func TestProberDetectsDownAndUpWithinBounds(t *testing.T) {
	r, err := Listen(lo, 0)
	if err != nil {
		t.Fatal(err)
	}
	port := int(r.Addr().Port())
	var mu sync.Mutex
	var changes []bool
	p := New(Config{Interval: 50 * time.Millisecond, DownAfter: 150 * time.Millisecond, Port: port, OnChange: func(_ netip.Addr, res Result) {
		mu.Lock()
		changes = append(changes, res.Up)
		mu.Unlock()
	}})
	defer p.Close()
	p.Set(map[netip.Addr]netip.Addr{lo: lo})

	waitFor(t, "Up", time.Second, func() bool { res, _ := p.Result(lo); return res.Up })
	res, _ := p.Result(lo)
	if res.RTT.Last <= 0 || res.RTT.Min > res.RTT.Avg || res.RTT.Avg > res.RTT.Max {
		t.Errorf("rtt stats inconsistent: %+v", res.RTT)
	}

	r.Close()
	start := time.Now()
	waitFor(t, "Down", time.Second, func() bool { res, _ := p.Result(lo); return !res.Up })
	if d := time.Since(start); d > 150*time.Millisecond+2*50*time.Millisecond {
		t.Errorf("Down detected after %s, want within DownAfter + one interval", d)
	}

	r2, err := Listen(lo, port)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	waitFor(t, "Up again", time.Second, func() bool { res, _ := p.Result(lo); return res.Up })
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 3 || !changes[0] || changes[1] || !changes[2] {
		t.Errorf("OnChange sequence = %v, want [true false true]", changes)
	}
}

func TestUnknownTargetAndRemovedTarget(t *testing.T) {
	p := New(Config{Interval: 20 * time.Millisecond, Port: 1})
	defer p.Close()
	other := netip.MustParseAddr("127.0.0.2")
	p.Set(map[netip.Addr]netip.Addr{other: lo})
	if _, ok := p.Result(other); !ok {
		t.Fatal("target not registered")
	}
	time.Sleep(60 * time.Millisecond)
	if res, _ := p.Result(other); res.Up || res.Sent == 0 {
		t.Errorf("no responder: %+v, want Down with probes sent", res)
	}
	p.Set(nil)
	if _, ok := p.Result(other); ok {
		t.Error("removed target still reported")
	}
}

func TestRTTStats(t *testing.T) {
	var s RTTStats
	for i, d := range []time.Duration{4, 2, 6} {
		s.add(d*time.Millisecond, uint64(i+1))
	}
	want := RTTStats{Last: 6 * time.Millisecond, Min: 2 * time.Millisecond, Avg: 4 * time.Millisecond, Max: 6 * time.Millisecond}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The socket of a source address no target uses any more is closed (it was
// kept, with its receiver, for every mesh that ever existed; issue #33): the
// address and port can be bound again, and its receiver ends.
func TestUnusedSourceSocketIsClosed(t *testing.T) {
	src := netip.MustParseAddr("127.0.0.3")
	sport := 30000 + os.Getpid()%20000
	p := New(Config{Interval: 20 * time.Millisecond, Port: 1, SourcePort: sport})
	defer p.Close()
	p.Set(map[netip.Addr]netip.Addr{netip.MustParseAddr("127.0.0.2"): src})
	deadline := time.Now().Add(2 * time.Second)
	for {
		if res, _ := p.Result(netip.MustParseAddr("127.0.0.2")); res.Sent > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no probe sent from the source socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(sport)))); err == nil {
		c.Close()
		t.Fatal("the prober's source socket is not bound while in use")
	}
	p.Set(nil)
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(sport))))
	if err != nil {
		t.Fatalf("the source socket was not closed when no target used it: %v", err)
	}
	c.Close()
}

// A held target gets one probe per HoldInterval; released, it is probed
// every Interval again, and the first probe of a new target is never held.
func TestHeldTargetIsProbedOncePerHoldInterval(t *testing.T) {
	r, err := Listen(lo, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var hold sync.Map // addr → bool
	hold.Store(lo, true)
	p := New(Config{Interval: 20 * time.Millisecond, HoldInterval: 300 * time.Millisecond, Port: int(r.Addr().Port()),
		Hold: func(a netip.Addr) bool { v, _ := hold.Load(a); return v.(bool) }})
	defer p.Close()
	p.Set(map[netip.Addr]netip.Addr{lo: lo})

	// The first probe goes out at once (it is what starts a handshake).
	waitFor(t, "the first probe's reply", time.Second, func() bool { res, _ := p.Result(lo); return res.Received == 1 })
	// Over 1 s, held: one probe per 300 ms (4 at most with the first), not
	// one per 20 ms (50).
	time.Sleep(time.Second)
	res, _ := p.Result(lo)
	if res.Sent < 2 || res.Sent > 5 {
		t.Errorf("held for 1 s with HoldInterval 300 ms: %d probes sent, want 2–5", res.Sent)
	}
	hold.Store(lo, false)
	before := res.Sent
	time.Sleep(500 * time.Millisecond)
	res, _ = p.Result(lo)
	if n := res.Sent - before; n < 10 {
		t.Errorf("released for 500 ms at a 20 ms interval: %d probes sent, want at least 10", n)
	}
}
