// Package probe measures links end to end: every interval a prober sends a
// small UDP datagram from the local cluster address to the peer's cluster
// address through the tunnel, and the peer's responder echoes it. A link
// whose replies stop for DownAfter is Down — within about two seconds with the
// defaults, where the original waited three minutes for a stale handshake.
package probe

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultPort is the UDP port of the responder on every cluster address.
const DefaultPort = 8779

// magic starts every probe datagram, so stray traffic is ignored.
var magic = [4]byte{'k', 'l', 'p', '1'}

const packetLen = 4 + 8 + 8 // magic, sequence, send time (ns)

// Responder echoes probe datagrams on one address.
type Responder struct {
	conn *net.UDPConn
	done chan struct{}
}

// Listen starts a responder on addr:port. It must be called in the network
// namespace that holds addr (the broker's).
func Listen(addr netip.Addr, port int) (*Responder, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, err
	}
	r := &Responder{conn: conn, done: make(chan struct{})}
	go r.serve()
	return r, nil
}

func (r *Responder) serve() {
	defer close(r.done)
	buf := make([]byte, 64)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n == packetLen && [4]byte(buf[:4]) == magic {
			_, _ = r.conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}
}

// Close stops the responder.
func (r *Responder) Close() error {
	err := r.conn.Close()
	<-r.done
	return err
}

// Addr is the local address the responder listens on.
func (r *Responder) Addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Result is the health of one target as seen by the prober.
type Result struct {
	// Up is true when a reply arrived within DownAfter.
	Up bool
	// Since is when Up last changed (zero before the first change).
	Since time.Time
	// LastReply is the arrival time of the latest reply.
	LastReply time.Time
	RTT       RTTStats
	Sent      uint64
	Received  uint64
}

// RTTStats summarise round-trip times (zero until the first reply).
type RTTStats struct {
	Last, Min, Avg, Max time.Duration
}

func (s *RTTStats) add(d time.Duration, n uint64) {
	s.Last = d
	if s.Min == 0 || d < s.Min {
		s.Min = d
	}
	if d > s.Max {
		s.Max = d
	}
	// Running mean over all replies.
	s.Avg += (d - s.Avg) / time.Duration(n)
}

// Config tunes a Prober.
type Config struct {
	// Interval between probes (default 500 ms).
	Interval time.Duration
	// DownAfter without a reply marks the target Down (default 3 intervals).
	DownAfter time.Duration
	// Port of the peer's responder (default DefaultPort).
	Port int
	// SourcePort is the local UDP port probes are sent from, on every
	// source address (0: an ephemeral one). A fixed port lets the ingress
	// policy admit exactly the replies to our probes and nothing else from
	// the responder's port.
	SourcePort int
	// OnChange is called (from the prober's goroutine) when a target goes Up
	// or Down; it must not block.
	OnChange func(target netip.Addr, r Result)
	// Hold, if set, is asked before each probe of a target; a target it
	// holds gets a probe only once every HoldInterval. It must be cheap
	// and not block. The WireGuard plane holds the peers without a session:
	// a probe to one starts a handshake and then waits in memory, and more
	// of them would only wait too (lib/wireguard, Device.Sessionless).
	Hold func(target netip.Addr) bool
	// HoldInterval between the probes of a held target (default 5 s,
	// WireGuard's handshake retry).
	HoldInterval time.Duration
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 3 * c.Interval
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.HoldInterval <= 0 {
		c.HoldInterval = 5 * time.Second
	}
}

// now is a seam for tests of the state logic.
var now = time.Now

// target is the state of one peer address.
type target struct {
	src    netip.Addr
	result Result
	seq    uint64
	// sentAt is when the last probe went out (zero: none yet).
	sentAt time.Time
}

// Prober probes a changing set of targets, each from a given source address.
type Prober struct {
	cfg      Config
	mu       sync.Mutex
	targets  map[netip.Addr]*target
	conns    map[netip.Addr]*net.UDPConn // by source address
	stop     chan struct{}
	loopDone chan struct{}
	wg       sync.WaitGroup // receivers
}

// New starts a prober. Call Set to give it targets and Close to stop it.
func New(cfg Config) *Prober {
	cfg.defaults()
	p := &Prober{cfg: cfg, targets: map[netip.Addr]*target{}, conns: map[netip.Addr]*net.UDPConn{},
		stop: make(chan struct{}), loopDone: make(chan struct{})}
	go p.loop()
	return p
}

// Set replaces the targets: map of peer address to the local source address
// to probe it from. Known targets keep their state.
func (p *Prober) Set(targets map[netip.Addr]netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a := range p.targets {
		if _, ok := targets[a]; !ok {
			delete(p.targets, a)
		}
	}
	for a, src := range targets {
		if t, ok := p.targets[a]; ok {
			t.src = src
		} else {
			p.targets[a] = &target{src: src}
		}
	}
	// A source address no target uses any more (a mesh that went) closes
	// its socket, which ends its receiver.
	used := map[netip.Addr]bool{}
	for _, t := range p.targets {
		used[t.src] = true
	}
	for src, c := range p.conns {
		if !used[src] {
			_ = c.Close()
			delete(p.conns, src)
		}
	}
}

// Result returns the state of a target.
func (p *Prober) Result(a netip.Addr) (Result, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[a]
	if !ok {
		return Result{}, false
	}
	return t.result, true
}

// Close stops probing and closes the sockets.
func (p *Prober) Close() {
	close(p.stop)
	<-p.loopDone // no new sockets after this
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close() // unblocks the receivers
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Prober) loop() {
	defer close(p.loopDone)
	// Probes go out every Interval, but Up/Down is re-evaluated more often,
	// so Down is declared within DownAfter (+ one short tick) of the last
	// reply rather than DownAfter + Interval.
	tick := time.NewTicker(min(p.cfg.Interval, evalEvery))
	defer tick.Stop()
	var nextSend time.Time
	for {
		t0 := now()
		send := !t0.Before(nextSend)
		if send {
			nextSend = t0.Add(p.cfg.Interval)
		}
		p.round(send)
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

// evalEvery bounds the delay between a missed reply and the Down verdict.
const evalEvery = 100 * time.Millisecond

// round sends one probe per target (when send) and re-evaluates Up/Down.
func (p *Prober) round(send bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t0 := now()
	for addr, t := range p.targets {
		if c := p.connFor(t.src); send && c != nil && !p.held(addr, t, t0) {
			t.seq++
			var buf [packetLen]byte
			copy(buf[:4], magic[:])
			binary.BigEndian.PutUint64(buf[4:], t.seq)
			binary.BigEndian.PutUint64(buf[12:], uint64(t0.UnixNano()))
			if _, err := c.WriteToUDPAddrPort(buf[:], netip.AddrPortFrom(addr, uint16(p.cfg.Port))); err == nil {
				t.result.Sent++
				t.sentAt = t0
			}
		}
		p.evaluate(addr, t, t0)
	}
}

// held reports that the target's probe is skipped this round: Hold holds it
// and its last probe is more recent than HoldInterval.
func (p *Prober) held(addr netip.Addr, t *target, at time.Time) bool {
	if p.cfg.Hold == nil || t.sentAt.IsZero() || at.Sub(t.sentAt) >= p.cfg.HoldInterval {
		return false
	}
	return p.cfg.Hold(addr)
}

// evaluate applies the Up/Down rule; called with p.mu held.
func (p *Prober) evaluate(addr netip.Addr, t *target, at time.Time) {
	up := !t.result.LastReply.IsZero() && at.Sub(t.result.LastReply) < p.cfg.DownAfter
	if up != t.result.Up {
		t.result.Up = up
		t.result.Since = at
		if p.cfg.OnChange != nil {
			p.cfg.OnChange(addr, t.result)
		}
	}
}

// connFor returns the socket bound to src, opening it on first use. A source
// address that does not exist (yet) yields nil; the next round retries.
func (p *Prober) connFor(src netip.Addr) *net.UDPConn {
	if c, ok := p.conns[src]; ok {
		return c
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(p.cfg.SourcePort))))
	if err != nil {
		return nil
	}
	p.conns[src] = c
	p.wg.Add(1)
	go p.receive(c)
	return c
}

func (p *Prober) receive(c *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.stop:
				return
			default:
				continue
			}
		}
		if n != packetLen || [4]byte(buf[:4]) != magic {
			continue
		}
		at := now()
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[12:])))
		p.mu.Lock()
		if t, ok := p.targets[from.Addr().Unmap()]; ok {
			t.result.Received++
			t.result.LastReply = at
			t.result.RTT.add(at.Sub(sent), t.result.Received)
			p.evaluate(from.Addr().Unmap(), t, at)
		}
		p.mu.Unlock()
	}
}
