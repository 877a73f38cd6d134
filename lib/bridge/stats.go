package bridge

import (
	"sync/atomic"
	"time"
)

// Drops counts dropped packets by reason (for metrics).
type Drops struct {
	// Spoofed: from a peer, with a source outside the peer's allowed sources.
	Spoofed uint64
	// IngressDenied: from a peer, to a destination its ingress rule denies.
	IngressDenied uint64
	// NoRoute: from the tun device, to a destination no peer takes.
	NoRoute uint64
	// NotConnected: from the tun device, routed to a peer without a
	// connection right now.
	NotConnected uint64
	// QueueFull: from the tun device, while the peer's send queue was full.
	QueueFull uint64
	// Malformed: inconsistent IP header or offload metadata.
	Malformed uint64
	// TUNWriteFailed: the kernel refused a packet from a peer.
	TUNWriteFailed uint64
}

// Total is the sum over all reasons.
func (d Drops) Total() uint64 {
	return d.Spoofed + d.IngressDenied + d.NoRoute + d.NotConnected + d.QueueFull + d.Malformed + d.TUNWriteFailed
}

type dropReason int

const (
	dropSpoofed dropReason = iota
	dropIngressDenied
	dropNoRoute
	dropNotConnected
	dropQueueFull
	dropMalformed
	dropTUNWriteFailed
	numDropReasons
)

type dropCounters [numDropReasons]atomic.Uint64

func (c *dropCounters) add(r dropReason, n int) { c[r].Add(uint64(n)) }

func (c *dropCounters) snapshot() Drops {
	return Drops{
		Spoofed:        c[dropSpoofed].Load(),
		IngressDenied:  c[dropIngressDenied].Load(),
		NoRoute:        c[dropNoRoute].Load(),
		NotConnected:   c[dropNotConnected].Load(),
		QueueFull:      c[dropQueueFull].Load(),
		Malformed:      c[dropMalformed].Load(),
		TUNWriteFailed: c[dropTUNWriteFailed].Load(),
	}
}

// PeerStats are the counters of one peer connection.
type PeerStats struct {
	TxPackets, TxBytes uint64 // to the peer
	RxPackets, RxBytes uint64 // from the peer, written to the tun device
	TxFrames, RxFrames uint64
	// LastReceived is when the last frame (of any type) arrived.
	LastReceived time.Time
	// Drops of packets from or to this peer.
	Drops Drops
}

type peerCounters struct {
	txPackets, txBytes, rxPackets, rxBytes, txFrames, rxFrames atomic.Uint64
	lastReceived                                               atomic.Int64 // unix nanoseconds
	drops                                                      dropCounters
}

func (c *peerCounters) snapshot() PeerStats {
	s := PeerStats{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(),
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		TxFrames: c.txFrames.Load(), RxFrames: c.rxFrames.Load(),
		Drops: c.drops.snapshot(),
	}
	if ns := c.lastReceived.Load(); ns != 0 {
		s.LastReceived = time.Unix(0, ns)
	}
	return s
}

// add sums o into s (LastReceived: the later one).
func (s *PeerStats) add(o PeerStats) {
	s.TxPackets += o.TxPackets
	s.TxBytes += o.TxBytes
	s.RxPackets += o.RxPackets
	s.RxBytes += o.RxBytes
	s.TxFrames += o.TxFrames
	s.RxFrames += o.RxFrames
	if o.LastReceived.After(s.LastReceived) {
		s.LastReceived = o.LastReceived
	}
	s.Drops.add(o.Drops)
}

func (d *Drops) add(o Drops) {
	d.Spoofed += o.Spoofed
	d.IngressDenied += o.IngressDenied
	d.NoRoute += o.NoRoute
	d.NotConnected += o.NotConnected
	d.QueueFull += o.QueueFull
	d.Malformed += o.Malformed
	d.TUNWriteFailed += o.TUNWriteFailed
}
