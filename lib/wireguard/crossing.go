package wireguard

import (
	"bytes"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Crossing handshakes. When both ends of a new pair are configured at about
// the same time (a KubeLink pair applied together, or a test), both send a
// handshake initiation at once (persistent keepalive, probe traffic). Each
// end then answers the other's initiation, which replaces its own pending
// one, so both answers are dropped and neither end has a session. Both retry
// after REKEY_TIMEOUT, 5 s plus at most 333 ms of jitter — close enough
// under load to cross again: links came up after 5, 10 or 15 s, and
// TestTunnelBetweenNamespaces timed out after 15 s (issue #18).
//
// Worse, wireguard-go handles the initiation and the response of one peer
// on different goroutines, and a crossing can leave the two ends with
// sessions that do not match ("Failed to derive keypair: invalid state
// for keypair derivation: handshakeZeroed"): both report a handshake, one
// end receives nothing, and that lasts until its 15 s "sent but nothing
// received" timer starts a new handshake.
//
// The fix breaks the symmetry. Of the two ends, the one with the lower
// public key leads: it initiates as soon as the peer is added. The other
// end adds the peer held back for holdOff — without allowed IPs and
// persistent keepalive, so that nothing makes it initiate, while it still
// answers the leader's initiation — and completes it once a handshake
// happened or holdOff has passed (then it initiates itself, e.g. when the
// leader is not configured yet or restarted long ago). If the leader sees
// no handshake shortly after adding the peer (its initiation was lost, or
// crossed one of the other end's after the hold-off), it restarts its
// handshake: it removes and re-adds the peer, which sends a fresh
// initiation at once, while the other end waits for its 5 s retry timer.
const (
	holdOff       = 300 * time.Millisecond
	crossingWait  = 500 * time.Millisecond  // after adding the peer
	crossingEvery = 1500 * time.Millisecond // between restarts: well inside the other end's 5 s retry
	crossingMax   = 3
	crossingTick  = 100 * time.Millisecond
)

// heldPeer is a peer added by Apply that is held back (the other end leads).
type heldPeer struct {
	full  wgtypes.PeerConfig // allowed IPs and keepalive to set on release
	since time.Time
}

// holdBack rewrites cfg before it is applied (d.mu held): peers this end
// does not lead are added without allowed IPs and keepalive, and updates of
// peers still held go into their full configuration instead.
func (d *Device) holdBack(local wgtypes.Key, cfg *wgtypes.Config, now time.Time) {
	out := cfg.Peers[:0]
	for _, pc := range cfg.Peers {
		switch {
		case pc.Remove:
			delete(d.held, pc.PublicKey)
		case !pc.UpdateOnly && pc.Endpoint != nil && !leads(local, pc.PublicKey):
			if d.held == nil {
				d.held = map[wgtypes.Key]*heldPeer{}
			}
			d.held[pc.PublicKey] = &heldPeer{full: pc, since: now}
			pc.AllowedIPs, pc.ReplaceAllowedIPs, pc.PersistentKeepaliveInterval = nil, true, nil
		case pc.UpdateOnly && d.held[pc.PublicKey] != nil:
			h := d.held[pc.PublicKey]
			if pc.ReplaceAllowedIPs {
				h.full.AllowedIPs, h.full.ReplaceAllowedIPs = pc.AllowedIPs, true
			}
			if pc.PersistentKeepaliveInterval != nil {
				h.full.PersistentKeepaliveInterval = pc.PersistentKeepaliveInterval
			}
			pc.AllowedIPs, pc.ReplaceAllowedIPs, pc.PersistentKeepaliveInterval = nil, false, nil
			if pc.Endpoint == nil && pc.PresharedKey == nil {
				continue // nothing left to change now
			}
		}
		out = append(out, pc)
	}
	cfg.Peers = out
}

// pendingPeer is a peer added by Apply that has not completed a handshake.
type pendingPeer struct {
	add      wgtypes.PeerConfig // how it was added
	since    time.Time          // added, or restarted last
	restarts int
}

// leads says whether this end restarts crossed handshakes with peer.
func leads(local, peer wgtypes.Key) bool { return bytes.Compare(local[:], peer[:]) < 0 }

// trackAdded remembers the peers cfg adds (d.mu held) and wakes the loop.
func (d *Device) trackAdded(local wgtypes.Key, cfg wgtypes.Config, now time.Time) {
	for _, pc := range cfg.Peers {
		switch {
		case pc.Remove:
			delete(d.pending, pc.PublicKey)
		case !pc.UpdateOnly && pc.Endpoint != nil && leads(local, pc.PublicKey):
			if d.pending == nil {
				d.pending = map[wgtypes.Key]*pendingPeer{}
			}
			d.pending[pc.PublicKey] = &pendingPeer{add: pc, since: now}
		}
	}
	if len(d.pending) == 0 && len(d.held) == 0 {
		return
	}
	if d.crossingStop == nil {
		d.crossingStop, d.crossingDone = make(chan struct{}), make(chan struct{})
		go d.crossingLoop(d.crossingStop, d.crossingDone)
	}
}

// crossingLoop checks the pending peers every crossingTick until Close.
func (d *Device) crossingLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(crossingTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			d.checkCrossings(now)
		}
	}
}

func (d *Device) checkCrossings(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.pending)+len(d.held) == 0 {
		return
	}
	due := len(d.held) > 0 // a handshake releases a held peer early
	for _, p := range d.pending {
		due = due || now.Sub(p.since) >= wait(p)
	}
	if !due {
		return
	}
	dev, err := d.client.Device(d.name)
	if err != nil {
		return // Apply reports a device that cannot be read
	}
	live := make(map[wgtypes.Key]wgtypes.Peer, len(dev.Peers))
	for _, p := range dev.Peers {
		live[p.PublicKey] = p
	}
	for key, h := range d.held {
		cur, ok := live[key]
		switch {
		case !ok:
			delete(d.held, key)
		case !cur.LastHandshakeTime.IsZero() || now.Sub(h.since) >= holdOff:
			pc := wgtypes.PeerConfig{PublicKey: key, UpdateOnly: true, ReplaceAllowedIPs: true,
				AllowedIPs: h.full.AllowedIPs, PersistentKeepaliveInterval: h.full.PersistentKeepaliveInterval}
			if err := d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{pc}}); err != nil {
				continue // tried again on the next tick
			}
			delete(d.held, key)
		}
	}
	for key, p := range d.pending {
		cur, ok := live[key]
		switch {
		case !ok || !cur.LastHandshakeTime.IsZero() || p.restarts >= crossingMax:
			delete(d.pending, key) // gone, done, or left to WireGuard's own retries
		case now.Sub(p.since) >= wait(p):
			// A removed peer forgets its handshake state; re-added with its
			// persistent keepalive it initiates at once.
			if err := d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: key, Remove: true}}}); err != nil {
				continue
			}
			if err := d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{p.add}}); err != nil {
				continue
			}
			p.restarts++
			p.since = now
			d.crossingRestarts++
		}
	}
}

func wait(p *pendingPeer) time.Duration {
	if p.restarts == 0 {
		return crossingWait
	}
	return crossingEvery
}

// HandshakeRestarts counts the crossed handshakes this device restarted.
func (d *Device) HandshakeRestarts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.crossingRestarts
}
