package bridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Why a peer ended, besides a *CloseError from the peer and I/O errors.
var (
	ErrRemoved  = errors.New("peer removed")
	ErrReplaced = errors.New("replaced by a newer connection to the same peer")
)

// closeTimeout bounds saying goodbye: a peer that does not take our CLOSE
// frame within it is cut off.
const closeTimeout = time.Second

// Policy says what a peer may send into this cluster; the bridge enforces
// it in user space (there is no kernel firewall on this path).
type Policy struct {
	// Filter decides on every well-formed packet from the peer: its source
	// must be one the peer owns (anti-spoofing) and the destination one it
	// may reach. The broker renders it from the model's ingress policy
	// (mesh.Policy.Decide), the same policy the kernel chains of WireGuard
	// mode come from. Nil denies everything: the broker must say what a
	// peer may send.
	Filter func(Packet) Verdict
}

// Packet is what a Filter sees of a packet from a peer.
type Packet struct {
	Src, Dst netip.Addr
	// UDP is set for a UDP packet that carries its header (not a later
	// fragment); SrcPort and DstPort are its ports.
	UDP              bool
	SrcPort, DstPort uint16
}

// Verdict is a Filter's decision.
type Verdict uint8

const (
	// Pass writes the packet to the tun device.
	Pass Verdict = iota
	// Spoofed drops it: the source is not the peer's (counted as spoofed).
	Spoofed
	// Denied drops it: the ingress rule forbids the destination.
	Denied
)

func (pol *Policy) verdict(info *ipInfo) Verdict {
	if pol.Filter == nil {
		return Denied
	}
	return pol.Filter(Packet{Src: info.src, Dst: info.dst, UDP: info.udp, SrcPort: info.udpSrc, DstPort: info.udpDst})
}

// Peer is one connected peer of a Pump.
type Peer struct {
	id     string
	conn   net.Conn
	pump   *Pump
	policy atomic.Pointer[Policy]
	queue  chan *Batch
	stats  peerCounters

	once    sync.Once
	closing chan struct{} // closed by shutdown
	err     error         // why, set before closing
	code    CloseCode
	reason  string
	tell    bool // send a CLOSE frame
	killer  *time.Timer
	done    chan struct{}

	// lastDropLog is when deliver last logged a dropped packet; only the
	// read loop touches it.
	lastDropLog time.Time
}

// dropLogEvery bounds the log of dropped packets to one line per peer per
// period: enough to tell an operator what a peer sends that it may not,
// never a line per packet.
const dropLogEvery = 10 * time.Second

func newPeer(p *Pump, id string, conn net.Conn, pol Policy) *Peer {
	pr := &Peer{
		id: id, conn: conn, pump: p,
		queue:   make(chan *Batch, p.cfg.QueueLen),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	pr.SetPolicy(pol)
	return pr
}

// ID is the peer's ID as given to AddPeer.
func (pr *Peer) ID() string { return pr.id }

// SetPolicy replaces the peer's policy; it applies from the next batch.
func (pr *Peer) SetPolicy(pol Policy) {
	pr.policy.Store(&pol)
}

// Stats returns the peer's counters.
func (pr *Peer) Stats() PeerStats { return pr.stats.snapshot() }

// Done is closed when the connection is over and its goroutines ended.
func (pr *Peer) Done() <-chan struct{} { return pr.done }

// Err says why the peer ended (a *CloseError when the peer said so); nil
// until Done is closed.
func (pr *Peer) Err() error {
	select {
	case <-pr.done:
		return pr.err
	default:
		return nil
	}
}

func (pr *Peer) start() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pr.writeLoop() }()
	go func() { defer wg.Done(); pr.readLoop() }()
	go func() {
		wg.Wait()
		pr.killer.Stop()
		for len(pr.queue) > 0 {
			pr.pump.putBatch(<-pr.queue)
		}
		pr.pump.log.Info("bridge peer disconnected", "peer", pr.id, "reason", pr.err)
		close(pr.done)
		pr.pump.wg.Done()
	}()
}

// shutdown ends the connection once; tell sends the peer a CLOSE frame
// with code and reason first. The peer leaves the pump at once, so packets
// for it count as NotConnected while it winds down.
func (pr *Peer) shutdown(err error, code CloseCode, reason string, tell bool) {
	pr.once.Do(func() {
		pr.pump.forget(pr)
		pr.err, pr.code, pr.reason, pr.tell = err, code, reason, tell
		// A writer stuck on a connection that takes nothing must not hold
		// the peer open.
		pr.killer = time.AfterFunc(closeTimeout, pr.cutOff)
		close(pr.closing)
	})
}

// cutOff closes the TCP connection under any TLS layer, which unblocks
// every reader and writer at once (tls.Conn.Close might wait to send its
// close_notify).
func (pr *Peer) cutOff() {
	if nc, ok := pr.conn.(interface{ NetConn() net.Conn }); ok {
		_ = nc.NetConn().Close()
	}
	_ = pr.conn.Close()
}

// enqueue hands a batch to the writer, or drops it when the queue is full.
func (pr *Peer) enqueue(b *Batch) {
	select {
	case pr.queue <- b:
	default:
		pr.stats.drops.add(dropQueueFull, b.Len())
		pr.pump.drops.add(dropQueueFull, b.Len())
		pr.pump.putBatch(b)
	}
}

// writeLoop sends the queued batches, one write each, and keepalives when
// idle.
func (pr *Peer) writeLoop() {
	keepalive := time.NewTicker(pr.pump.cfg.Keepalive)
	defer keepalive.Stop()
	var ctl []byte
	var refreshed time.Time
	wrote := false
	for {
		var err error
		select {
		case b := <-pr.queue:
			n, size := b.Len(), b.Size()
			err = pr.write(b.Frame(), &refreshed)
			pr.pump.putBatch(b)
			if err == nil {
				pr.stats.txPackets.Add(uint64(n))
				pr.stats.txBytes.Add(uint64(size - n*PacketHeaderLen))
				pr.stats.txFrames.Add(1)
				wrote = true
			}
		case <-keepalive.C:
			if !wrote {
				ctl = AppendKeepalive(ctl[:0])
				err = pr.write(ctl, &refreshed)
			}
			wrote = false
		case <-pr.closing:
			pr.hangUp(ctl[:0])
			return
		}
		if err != nil {
			pr.shutdown(fmt.Errorf("send to peer: %w", err), 0, "", false)
		}
	}
}

// write sends one frame, keeping a write deadline so a peer that stops
// reading is noticed.
func (pr *Peer) write(frame []byte, refreshed *time.Time) error {
	timeout := pr.pump.cfg.Timeout
	if now := time.Now(); now.Sub(*refreshed) > timeout/4 {
		if err := pr.conn.SetWriteDeadline(now.Add(timeout)); err != nil {
			return err
		}
		*refreshed = now
	}
	_, err := pr.conn.Write(frame)
	return err
}

func (pr *Peer) hangUp(buf []byte) {
	if pr.tell {
		_ = pr.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
		if _, err := pr.conn.Write(AppendClose(buf, pr.code, pr.reason)); err == nil {
			_ = pr.conn.Close()
			return
		}
	}
	pr.cutOff()
}

// readLoop receives frames until the connection ends.
func (pr *Peer) readLoop() {
	buf := make([]byte, MaxFramePayload)
	var hdr [FrameHeaderLen]byte
	var refreshed time.Time
	timeout := pr.pump.cfg.Timeout
	for {
		if now := time.Now(); now.Sub(refreshed) > timeout/4 {
			_ = pr.conn.SetReadDeadline(now.Add(timeout))
			refreshed = now
		}
		if _, err := io.ReadFull(pr.conn, hdr[:]); err != nil {
			pr.readFailed(err)
			return
		}
		t, n, err := ParseFrameHeader(hdr[:])
		if err == nil {
			_, err = io.ReadFull(pr.conn, buf[:n])
			if err != nil {
				pr.readFailed(err)
				return
			}
			pr.stats.rxFrames.Add(1)
			pr.stats.lastReceived.Store(time.Now().UnixNano())
			err = pr.handle(t, buf[:n])
		}
		if err != nil {
			var ce *CloseError
			if errors.As(err, &ce) {
				pr.shutdown(ce, 0, "", false)
			} else {
				pr.shutdown(fmt.Errorf("protocol error from peer: %w", err), CloseProtocolError, err.Error(), true)
			}
			return
		}
	}
}

func (pr *Peer) readFailed(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("no frame from the peer for %s: %w", pr.pump.cfg.Timeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("connection closed by the peer without a CLOSE frame: %w", err)
	default:
		err = fmt.Errorf("receive from peer: %w", err)
	}
	pr.shutdown(err, 0, "", false)
}

// handle acts on one frame; a *CloseError ends the connection as the peer
// asked, other errors are protocol errors.
func (pr *Peer) handle(t FrameType, payload []byte) error {
	switch t {
	case FramePackets:
		return pr.deliver(payload)
	case FrameClose:
		ce, err := ParseClose(payload)
		if err != nil {
			return err
		}
		return ce
	case FrameHello:
		return errors.New("HELLO after the handshake")
	}
	return nil // KEEPALIVE, or a type from a newer minor revision
}

// logDrop logs a packet the policy dropped, at most once per dropLogEvery.
func (pr *Peer) logDrop(info *ipInfo, v Verdict, inBatch int) {
	now := time.Now()
	if !pr.lastDropLog.IsZero() && now.Sub(pr.lastDropLog) < dropLogEvery {
		return
	}
	pr.lastDropLog = now
	reason := "ingress-denied"
	if v == Spoofed {
		reason = "spoofed"
	}
	args := []any{"peer", pr.id, "reason", reason, "src", info.src, "dst", info.dst, "droppedInBatch", inBatch}
	if info.udp {
		args = append(args, "udpSrcPort", info.udpSrc, "udpDstPort", info.udpDst)
	}
	pr.pump.log.Warn("bridge dropped a packet from the peer (further drops are only counted for "+dropLogEvery.String()+")", args...)
}

// deliver checks the packets of a batch and writes the good ones to the tun
// device, each in place: its virtio-net header overwrites the end of our
// packet header.
func (pr *Peer) deliver(payload []byte) error {
	pol := pr.policy.Load()
	var packets, bytes int
	var drops [numDropReasons]int
	var first *ipInfo // the first spoofed or denied packet of the batch
	var firstVerdict Verdict
	it := NewPacketIter(payload)
	for it.Next() {
		pkt, o := it.Packet(), it.Offload()
		info, err := inspect(pkt, o)
		v := Denied
		if err == nil {
			v = pol.verdict(&info)
		}
		if err == nil && v != Pass && first == nil {
			first, firstVerdict = &info, v
		}
		switch {
		case err != nil:
			drops[dropMalformed]++
		case v == Spoofed:
			drops[dropSpoofed]++
		case v != Pass:
			drops[dropIngressDenied]++
		default:
			slot := payload[it.at-virtioHdrLen : it.at+len(pkt)]
			putVirtio(slot, o, info.hdrLen)
			if err := pr.pump.dev.write(slot); err != nil {
				drops[dropTUNWriteFailed]++
				continue
			}
			packets++
			bytes += len(pkt)
		}
	}
	pr.stats.rxPackets.Add(uint64(packets))
	pr.stats.rxBytes.Add(uint64(bytes))
	for r, n := range drops {
		if n > 0 {
			pr.stats.drops.add(dropReason(r), n)
			pr.pump.drops.add(dropReason(r), n)
		}
	}
	if first != nil {
		pr.logDrop(first, firstVerdict, drops[dropSpoofed]+drops[dropIngressDenied])
	}
	return it.Err()
}
