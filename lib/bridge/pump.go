package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Config configures a Pump.
type Config struct {
	// Route returns the ID of the peer that takes packets to dst, or "" if
	// none does. It is called for packets read from the tun device
	// (consecutive packets to one destination share a call), so it must
	// be fast and safe for concurrent use, e.g. a lookup in an immutable
	// table behind an atomic pointer.
	Route func(dst netip.Addr) string
	// Keepalive is how often an idle connection sends a KEEPALIVE frame.
	// Default 10s.
	Keepalive time.Duration
	// Timeout ends a connection that received no frame for this long
	// (a dead peer). Default 3 × Keepalive.
	Timeout time.Duration
	// QueueLen is the number of batches queued per peer before packets
	// are dropped (QueueFull). Default 32.
	QueueLen int
	// LocalAddresses, if set, are the local cluster addresses (with their
	// mesh's prefix length) that ICMP errors read from the tun device get
	// as their source when the peers would drop theirs as spoofed
	// (mesh.RewriteICMPErrorSource).
	LocalAddresses func() []netip.Prefix
	// Logger gets one line per connection event, and at most one line per
	// peer every 10 s about packets the policy dropped; never one per packet.
	Logger *slog.Logger
}

// Pump moves packets between one tun device and the connections of its
// peers: tun → Route → the peer's queue of batches → one write per batch;
// connection → batches → source and ingress checks → tun.
type Pump struct {
	dev   device
	cfg   Config
	log   *slog.Logger
	drops dropCounters

	peers     atomic.Pointer[map[string]*Peer] // copy on write, read per burst
	mu        sync.Mutex                       // serializes changes of peers and closed
	closed    bool
	batches   sync.Pool
	closeOnce sync.Once
	wg        sync.WaitGroup // peer goroutines

	readDone chan struct{}
	readErr  error // why reading the tun device stopped, set before readDone
	stopping atomic.Bool
}

// device is the packet side of a Pump: a *TUN, or a fake in tests.
type device interface {
	Name() string
	// read reads one packet with its virtio-net header; without wait it
	// returns errWouldBlock when none is ready.
	read(b []byte, wait bool) (int, error)
	// write writes one packet with its virtio-net header; it is called
	// concurrently.
	write(b []byte) error
	interruptRead()
	resumeRead()
}

// NewPump starts reading dev. The caller keeps owning dev: Close stops the
// pump, not the device.
func NewPump(dev *TUN, cfg Config) (*Pump, error) { return newPump(dev, cfg) }

func newPump(dev device, cfg Config) (*Pump, error) {
	if cfg.Route == nil {
		return nil, errors.New("bridge: Config.Route is required")
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * cfg.Keepalive
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Pump{dev: dev, cfg: cfg, log: cfg.Logger, readDone: make(chan struct{})}
	p.batches.New = func() any { return NewBatch() }
	p.peers.Store(&map[string]*Peer{})
	go p.readTUN()
	return p, nil
}

// Drops are the pump's drop counters, including those of removed peers.
func (p *Pump) Drops() Drops { return p.drops.snapshot() }

// Done is closed when the pump stopped reading its tun device: after Close,
// or when the device failed (Err says why).
func (p *Pump) Done() <-chan struct{} { return p.readDone }

// Err is why the pump stopped, nil after Close or while running.
func (p *Pump) Err() error {
	select {
	case <-p.readDone:
		return p.readErr
	default:
		return nil
	}
}

// AddPeer starts moving packets over conn, on which the handshake is done;
// the pump owns conn from now on. A peer with the same ID is replaced (told
// so with CloseReplaced), so a reconnect needs no RemovePeer first.
func (p *Pump) AddPeer(id string, conn net.Conn, pol Policy) (*Peer, error) {
	if id == "" {
		return nil, errors.New("bridge: empty peer ID")
	}
	pr := newPeer(p, id, conn, pol)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("bridge: pump closed")
	}
	old := p.setPeer(id, pr)
	p.wg.Add(1)
	p.mu.Unlock()
	if old != nil {
		old.shutdown(ErrReplaced, CloseReplaced, "a newer connection took over", true)
	}
	p.log.Info("bridge peer connected", "peer", id, "remote", conn.RemoteAddr())
	pr.start()
	return pr, nil
}

// RemovePeer closes the peer's connection, telling it reason. It returns
// false when there is no such peer. Peer.Done reports when it is gone.
func (p *Pump) RemovePeer(id, reason string) bool {
	pr := p.Peer(id)
	if pr == nil {
		return false
	}
	pr.shutdown(fmt.Errorf("%w: %s", ErrRemoved, reason), CloseNormal, reason, true)
	return true
}

// Peer returns the connected peer with the ID, or nil.
func (p *Pump) Peer(id string) *Peer { return (*p.peers.Load())[id] }

// Peers returns the IDs of the connected peers, sorted.
func (p *Pump) Peers() []string { return slices.Sorted(maps.Keys(*p.peers.Load())) }

// setPeer installs pr (or removes id when pr is nil) and returns the peer
// it displaced. Callers hold p.mu.
func (p *Pump) setPeer(id string, pr *Peer) *Peer {
	cur := *p.peers.Load()
	next := make(map[string]*Peer, len(cur)+1)
	maps.Copy(next, cur)
	old := next[id]
	if pr == nil {
		delete(next, id)
	} else {
		next[id] = pr
	}
	p.peers.Store(&next)
	return old
}

// forget removes a finished peer unless a newer one took its ID.
func (p *Pump) forget(pr *Peer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if (*p.peers.Load())[pr.id] == pr {
		p.setPeer(pr.id, nil)
	}
}

// Close stops reading the tun device, closes all peers (telling them) and
// waits for their goroutines, at most about closeTimeout. Concurrent calls
// all wait.
func (p *Pump) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.stopping.Store(true)
		p.dev.interruptRead()
		<-p.readDone
		p.dev.resumeRead()
		for _, pr := range *p.peers.Load() {
			pr.shutdown(fmt.Errorf("%w: shutting down", ErrRemoved), CloseNormal, "shutting down", true)
		}
		p.wg.Wait()
	})
	return nil
}

func (p *Pump) getBatch() *Batch { return p.batches.Get().(*Batch) }

func (p *Pump) putBatch(b *Batch) {
	b.Reset()
	p.batches.Put(b)
}

// readTUN runs the tun side until the device fails or Close.
func (p *Pump) readTUN() {
	r := tunReader{p: p, spare: p.getBatch(), target: -1}
	err := r.run()
	if p.stopping.Load() {
		err = nil
	} else {
		p.log.Error("bridge: reading the tun device failed; closing all peers", "device", p.dev.Name(), "error", err)
		err = fmt.Errorf("read tun device %s: %w", p.dev.Name(), err)
	}
	p.readErr = err
	close(p.readDone)
	if err != nil {
		go p.Close()
	}
}

// maxBurst bounds how many packets are read before the batches go out, so
// one busy peer does not hold back the batches of others.
const maxBurst = 64

// tunReader reads packets from the tun device straight into the batch of
// the peer the previous packet went to (the usual case: a burst to one
// peer costs no copy) and copies only packets that go elsewhere.
type tunReader struct {
	p      *Pump
	open   []openBatch // one per peer that got packets in this burst
	target int         // index in open to read into, -1 for spare
	spare  *Batch      // unbound read target

	lastDst  netip.Addr
	lastPeer *Peer
	peers    map[string]*Peer
}

type openBatch struct {
	peer *Peer
	b    *Batch
}

func (r *tunReader) run() error {
	for {
		// Peers and routes are looked up again after the burst's first
		// (possibly long awaited) packet.
		r.peers, r.lastDst, r.lastPeer = nil, netip.Addr{}, nil
		for i := 0; i < maxBurst; i++ {
			err := r.readOne(i == 0)
			if errors.Is(err, errWouldBlock) {
				break
			}
			if err != nil {
				r.flush()
				return err
			}
		}
		r.flush()
	}
}

func (r *tunReader) readOne(wait bool) error {
	b := r.spare
	if r.target >= 0 {
		b = r.open[r.target].b
	}
	slot := b.reserve(MaxPacketLen)
	n, err := r.p.dev.read(slot[PacketHeaderLen-virtioHdrLen:], wait)
	if err != nil {
		return err
	}
	n -= virtioHdrLen
	pkt := slot[PacketHeaderLen : PacketHeaderLen+max(n, 0)]
	o, err := offloadFromVirtio(slot[PacketHeaderLen-virtioHdrLen : PacketHeaderLen])
	if err == nil {
		err = o.check(len(pkt))
	}
	dst, ok := destination(pkt)
	if err != nil || !ok {
		r.p.drops.add(dropMalformed, 1)
		return nil
	}
	if f := r.p.cfg.LocalAddresses; f != nil && o == (Offload{}) {
		mesh.RewriteICMPErrorSource(pkt, f)
	}
	peer := r.route(dst)
	if peer == nil {
		return nil
	}
	switch {
	case r.target >= 0 && r.open[r.target].peer == peer:
		b.commit(len(pkt), o)
	case r.target < 0 && r.find(peer) < 0:
		b.commit(len(pkt), o)
		r.open = append(r.open, openBatch{peer: peer, b: b})
		r.target, r.spare = len(r.open)-1, r.p.getBatch()
	default:
		i := r.find(peer)
		if i < 0 {
			r.open = append(r.open, openBatch{peer: peer, b: r.p.getBatch()})
			i = len(r.open) - 1
		}
		if r.open[i].b.Append(pkt, o) != nil {
			r.send(i)
			_ = r.open[i].b.Append(pkt, o) // fits an empty batch: checked above
		}
		r.target = i
	}
	if r.target >= 0 && r.open[r.target].b.reserve(MaxPacketLen) == nil {
		r.send(r.target)
	}
	return nil
}

// route finds the connected peer for dst, counting packets without one.
func (r *tunReader) route(dst netip.Addr) *Peer {
	if dst == r.lastDst && r.lastPeer != nil {
		return r.lastPeer
	}
	id := r.p.cfg.Route(dst)
	if id == "" {
		r.p.drops.add(dropNoRoute, 1)
		return nil
	}
	if r.peers == nil {
		r.peers = *r.p.peers.Load()
	}
	peer := r.peers[id]
	if peer == nil {
		r.p.drops.add(dropNotConnected, 1)
		return nil
	}
	r.lastDst, r.lastPeer = dst, peer
	return peer
}

func (r *tunReader) find(peer *Peer) int {
	for i := range r.open {
		if r.open[i].peer == peer {
			return i
		}
	}
	return -1
}

// send queues open[i]'s batch and gives the peer a fresh one.
func (r *tunReader) send(i int) {
	ob := &r.open[i]
	ob.peer.enqueue(ob.b)
	ob.b = r.p.getBatch()
}

// flush queues all batches of the burst.
func (r *tunReader) flush() {
	for i := range r.open {
		ob := &r.open[i]
		if ob.b.Len() > 0 {
			ob.peer.enqueue(ob.b)
		} else {
			r.p.putBatch(ob.b)
		}
		r.open[i] = openBatch{}
	}
	r.open = r.open[:0]
	r.target = -1
}
