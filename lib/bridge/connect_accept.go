package bridge

// The inbound side of a Connector: the listener, admission per source,
// and matching an accepted peer to a link.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Serve accepts bridge connections on l until it fails or Close; each
// peer is authenticated by its certificate, matched to a link and, after
// the HELLO, handed to the pump.
func (c *Connector) Serve(l net.Listener) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		l.Close()
		return net.ErrClosed
	}
	c.listeners[l] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.listeners, l)
		c.mu.Unlock()
	}()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || c.ctx.Err() != nil {
				return err
			}
			// Out of file descriptors, an aborted connection, ...: wait a
			// little and go on accepting instead of stopping for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			c.log.Warn("bridge: accept failed; retrying", "error", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-c.ctx.Done():
				return net.ErrClosed
			}
			continue
		}
		delay = 0
		pc, evicted := c.admit(conn)
		for _, e := range evicted {
			e.conn.Close()
			c.reject(e.conn, errors.New(e.reason))
		}
		c.wg.Go(func() {
			err := c.accept(conn, pc)
			if err != nil && !c.wasEvicted(pc) {
				c.reject(conn, err)
			}
		})
	}
}

// pendingConn is an inbound connection before the end of its handshake.
type pendingConn struct {
	conn   net.Conn
	src    netip.Addr
	reason string      // why it was evicted ("" while it is not)
	spoke  atomic.Bool // the client sent something (its TLS handshake is under way)
}

// spokeConn marks its pendingConn once the first bytes arrive.
type spokeConn struct {
	net.Conn
	pc *pendingConn
}

func (s spokeConn) Read(b []byte) (int, error) {
	n, err := s.Conn.Read(b)
	if n > 0 && !s.pc.spoke.Load() {
		s.pc.spoke.Store(true)
	}
	return n, err
}

func remoteIP(conn net.Conn) netip.Addr {
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// admit reserves a handshake slot for conn. Over a limit it evicts the
// oldest pending connection of the same source (MaxPendingPerSource), or
// of all (MaxPending), and returns them for the caller to close. A
// connection that has sent nothing yet goes before one whose handshake is
// under way: otherwise a host that reconnects its silent connections as
// fast as they are evicted would, cycle after cycle, evict a real peer
// behind the same address (a NodePort's) in the middle of its handshake.
func (c *Connector) admit(conn net.Conn) (*pendingConn, []*pendingConn) {
	pc := &pendingConn{conn: conn, src: remoteIP(conn)}
	c.mu.Lock()
	defer c.mu.Unlock()
	var evicted []*pendingConn
	evict := func(i int, reason string) {
		e := c.pending[i]
		e.reason = reason
		c.pending = slices.Delete(c.pending, i, i+1)
		evicted = append(evicted, e)
	}
	fromSrc := 0
	for _, p := range c.pending {
		if p.src == pc.src {
			fromSrc++
		}
	}
	// victim is the oldest silent pending connection that match accepts,
	// else the oldest of them; -1 for none.
	victim := func(match func(*pendingConn) bool) int {
		first := -1
		for i, p := range c.pending {
			if !match(p) {
				continue
			}
			if !p.spoke.Load() {
				return i
			}
			if first < 0 {
				first = i
			}
		}
		return first
	}
	if fromSrc >= c.cfg.MaxPendingPerSource {
		if i := victim(func(p *pendingConn) bool { return p.src == pc.src }); i >= 0 {
			evict(i, fmt.Sprintf("evicted by a newer connection: the oldest %s of %d pending handshakes from %s", silence(c.pending[i]), fromSrc, pc.src))
		}
	}
	if len(c.pending) >= c.cfg.MaxPending {
		if i := victim(func(*pendingConn) bool { return true }); i >= 0 {
			evict(i, fmt.Sprintf("evicted by a newer connection: the oldest %s of %d pending handshakes", silence(c.pending[i]), len(c.pending)))
		}
	}
	c.pending = append(c.pending, pc)
	return pc, evicted
}

// silence says whether an evicted connection had sent anything.
func silence(p *pendingConn) string {
	if p.spoke.Load() {
		return "(under way; none was silent)"
	}
	return "silent one"
}

// release frees pc's slot when its handshake is over (or it failed); an
// evicted connection's slot went already.
func (c *Connector) release(pc *pendingConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropPending(pc)
}

// dropPending takes pc out of the pending handshakes, if it is there
// (caller holds c.mu).
func (c *Connector) dropPending(pc *pendingConn) {
	if i := slices.Index(c.pending, pc); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
}

// errEvicted ends the handshake of a connection evicted meanwhile (it was
// counted when evicted).
var errEvicted = errors.New("evicted by a newer connection")

// authenticated takes pc out of the pending handshakes once its TLS
// handshake verified the peer; false when it was evicted before.
func (c *Connector) authenticated(pc *pendingConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc.reason != "" {
		return false
	}
	c.dropPending(pc)
	return true
}

// wasEvicted reports whether pc was evicted (and already counted).
func (c *Connector) wasEvicted(pc *pendingConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return pc.reason != ""
}

func (c *Connector) reject(conn net.Conn, err error) {
	c.rejected.Add(1)
	msg := err.Error()
	c.lastRej.Store(&msg)
	c.log.Info("bridge: rejected a connection", "remote", conn.RemoteAddr(), "error", err)
}

// accept authenticates an inbound connection and hands it to its link. Its
// pending slot (pc) is freed once TLS verified the peer (only
// unauthenticated work is bounded and evictable), or when it fails.
func (c *Connector) accept(raw net.Conn, pc *pendingConn) error {
	defer c.release(pc)
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	tlsCtx, tlsCancel := context.WithTimeout(ctx, c.cfg.TLSTimeout)
	defer tlsCancel()
	tc := tls.Server(spokeConn{Conn: raw, pc: pc}, c.cfg.Certs.ServerConfig())
	if err := tc.HandshakeContext(tlsCtx); err != nil {
		raw.Close()
		return fmt.Errorf("TLS handshake: %w", err)
	}
	// Authenticated: no longer pending, so no newer connection can evict
	// it (and close a link it may become); unless it was evicted already.
	if !c.authenticated(pc) {
		tc.Close()
		return errEvicted
	}
	cert := tc.ConnectionState().PeerCertificates[0]
	ids, uris := Identities(cert), URIIdentities(cert)
	timeout := func() time.Duration { return max(time.Until(start.Add(c.cfg.HandshakeTimeout)), time.Millisecond) }
	c.mu.Lock()
	cands := c.candidates(ids, uris)
	var locals []Hello // what this side announces: to the candidates, or to anyone
	if len(cands) > 0 {
		for _, ls := range cands {
			locals = appendHello(locals, c.localOf(ls.link))
		}
	} else {
		locals = appendHello(locals, c.cfg.Hello)
		for _, ls := range c.links {
			locals = appendHello(locals, c.localOf(ls.link))
		}
	}
	c.mu.Unlock()
	if len(cands) == 0 && c.cfg.OnUnknown == nil {
		err := fmt.Errorf("no link for peer %v", ids)
		_ = SendClose(tc, CloseRejected, err.Error(), closeTimeout)
		return err
	}
	var hello Hello
	var err error
	if len(locals) == 1 {
		// One HELLO for this peer whatever it says: send it at once.
		if hello, err = Handshake(tc, locals[0], timeout()); err != nil {
			tc.Close()
			return fmt.Errorf("HELLO from %v: %w", ids, err)
		}
	} else {
		// The peer's HELLO tells which of its links (meshes) it dialed for.
		choose := func(remote Hello) Hello {
			if ls := pickLink(cands, remote); ls != nil {
				return c.localOf(ls.link)
			}
			for _, h := range locals {
				if h.ClusterAddress.Masked().Contains(remote.ClusterAddress.Addr()) {
					return h
				}
			}
			return c.cfg.Hello
		}
		if hello, _, err = HandshakeAnswering(tc, choose, timeout()); err != nil {
			tc.Close()
			return fmt.Errorf("HELLO from %v: %w", ids, err)
		}
	}
	if len(cands) == 0 {
		return c.unknown(tc, ids, uris, hello)
	}
	ls := pickLink(cands, hello)
	if ls == nil {
		ls = cands[0] // rejected below, with the reason
	}
	if err := checkHello(tc, ls.link, hello); err != nil {
		return err
	}
	if err := c.install(ls, tc, hello, false, hello.Replace, time.Since(start)); err != nil && !errors.Is(err, errDuplicate) {
		return err
	}
	return nil
}

// candidates are the links an authenticated client certificate with ids
// (all its names) and uris (its URI SANs) may be for, sorted by ID (caller
// holds c.mu): Identify's, else those whose Identity is one of uris — a
// common name or DNS name is no identity: any member of the CA could carry
// another's — and links without one: whose endpoint host is one of ids. A
// peer in several meshes has a link in each.
func (c *Connector) candidates(ids, uris []string) []*linkState {
	if c.cfg.Identify != nil {
		if ls := c.links[c.cfg.Identify(ids)]; ls != nil {
			return []*linkState{ls}
		}
		return nil
	}
	var cands []*linkState
	for _, cand := range c.links {
		if cand.link.Identity != "" {
			if slices.Contains(uris, cand.link.Identity) {
				cands = append(cands, cand)
			}
			continue
		}
		host, _, err := net.SplitHostPort(cand.link.Endpoint)
		if err == nil && MatchIdentity(ids, host) {
			cands = append(cands, cand)
		}
	}
	slices.SortFunc(cands, func(a, b *linkState) int { return strings.Compare(a.link.ID, b.link.ID) })
	return cands
}

// pickLink is the candidate whose cluster address the peer announces, else
// one in the network of that address (whose check then fails with the
// reason), else nil.
func pickLink(cands []*linkState, remote Hello) *linkState {
	for _, ls := range cands {
		if ls.link.ClusterAddress == remote.ClusterAddress {
			return ls
		}
	}
	for _, ls := range cands {
		if ls.link.ClusterAddress.Masked() == remote.ClusterAddress.Masked() {
			return ls
		}
	}
	return nil
}

// appendHello adds h to hs unless hs has the same.
func appendHello(hs []Hello, h Hello) []Hello {
	for _, o := range hs {
		if SameHello(o, h) {
			return hs
		}
	}
	return append(hs, h)
}

// unknown hands the HELLO of an authenticated peer without a link to
// OnUnknown and closes the connection.
func (c *Connector) unknown(tc *tls.Conn, ids, uris []string, h Hello) error {
	remote, _ := netip.ParseAddrPort(tc.RemoteAddr().String())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if err := c.cfg.OnUnknown(UnknownPeer{Identities: ids, URIs: uris, Remote: remote, Hello: h}); err != nil {
		err = fmt.Errorf("no link for peer %v: %w", ids, err)
		_ = SendClose(tc, CloseRejected, err.Error(), closeTimeout)
		return err
	}
	_ = SendClose(tc, CloseRejected, "no link for this peer yet: one is being created from its HELLO; this side will connect", closeTimeout)
	return nil
}
