package wireguard

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// wireguard-go keeps the packets for a peer without a session (no handshake
// yet, or none for RejectAfterTime) in a queue of up to 128 batches, each
// packet in a 64 KiB buffer, until a handshake succeeds or it gives up after
// 90 s. The health probes go to every peer twice a second, so a dead peer
// held about 8 MiB: 1 GiB of the broker's memory at 120 dead peers (issue
// #33). The kernel's WireGuard keeps such packets too, but at their own size.
//
// Two things bound it:
//   - trimStaged drops, every stagedTrimEvery, the queued packets of each
//     peer that has been seen without a session for stagedGrace. A
//     handshake completes within a round trip, so a peer still without a
//     session a second later is unreachable or lost the initiation (which
//     wireguard-go repeats every 5 s on its own, whatever waits); the
//     packets that waited are stale, and a TCP sender sends its own again.
//     For a peer long without a session, what it is sent is dropped within
//     0.25 s: should it answer the handshake later, the next probe (at the
//     full rate again, see below) tells. Handshake
//     attempts go on unchanged; a peer that answers gets the next packet.
//     The grace was 5 s: with 250 new peers that alone held 10 probes
//     each, 160 MiB, at the moment they were added.
//   - Sessionless tells the prober which peers have no session, so it
//     probes them only as often as a handshake can be attempted (a probe
//     to such a peer starts a handshake and is queued; more of them would
//     only be queued, not answered).
//
// Live peers are never touched: the probes keep their session fresh.
const (
	stagedTrimEvery = 250 * time.Millisecond
	stagedGrace     = time.Second
	// rejectAfter is wireguard-go's RejectAfterTime: a session older than
	// this carries no packets.
	rejectAfter = 180 * time.Second
)

// trimStaged runs until stop is closed.
func (u *userspaceLink) trimStaged(stop <-chan struct{}) {
	defer u.wg.Done()
	t := time.NewTicker(stagedTrimEvery)
	defer t.Stop()
	since := map[device.NoisePublicKey]time.Time{}
	var buf bytes.Buffer
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			buf.Reset()
			if err := u.dev.IpcGetOperation(&buf); err != nil {
				continue
			}
			stale, live := readSessions(&buf, now, since)
			u.sessions.Store(&live)
			for pk := range stale {
				if p := u.dev.LookupPeer(pk); p != nil {
					p.FlushStagedPackets()
				}
			}
		}
	}
}

// readSessions reads a UAPI "get" dump and returns the peers without a
// session for at least stagedGrace (stale), and those with a session
// (live). since remembers when each peer was first seen without one; peers
// with a session, or gone, are forgotten.
func readSessions(dump *bytes.Buffer, now time.Time, since map[device.NoisePublicKey]time.Time) (stale, live map[device.NoisePublicKey]bool) {
	type peer struct {
		key       device.NoisePublicKey
		handshake int64 // unix seconds, 0: never
	}
	var peers []peer
	sc := bufio.NewScanner(dump)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			var pk device.NoisePublicKey
			if b, err := hex.DecodeString(v); err == nil && len(b) == len(pk) {
				copy(pk[:], b)
				peers = append(peers, peer{key: pk})
			}
		case "last_handshake_time_sec":
			if n := len(peers); n > 0 {
				peers[n-1].handshake, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	stale, live = map[device.NoisePublicKey]bool{}, map[device.NoisePublicKey]bool{}
	seen := map[device.NoisePublicKey]bool{}
	for _, p := range peers {
		seen[p.key] = true
		if p.handshake != 0 && now.Sub(time.Unix(p.handshake, 0)) < rejectAfter {
			delete(since, p.key)
			live[p.key] = true
			continue
		}
		first, ok := since[p.key]
		if !ok {
			since[p.key] = now
			continue
		}
		if now.Sub(first) >= stagedGrace {
			stale[p.key] = true
		}
	}
	for k := range since {
		if !seen[k] {
			delete(since, k)
		}
	}
	return stale, live
}

// sessionless reports that the peer had no session at the last check
// (every stagedTrimEvery); a peer added since counts as without one.
func (u *userspaceLink) sessionless(key [32]byte) bool {
	live := u.sessions.Load()
	return live == nil || !(*live)[device.NoisePublicKey(key)]
}
