package bridge

// The outbound side of a Connector: one goroutine per link dials with
// backoff, checks the HELLO and installs the connection.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// run keeps the link connected until its context ends.
func (c *Connector) run(ls *linkState) {
	id := ls.link.ID
	failures := 0
	for {
		c.mu.Lock()
		pr := ls.peer
		c.mu.Unlock()
		if pr != nil {
			select {
			case <-pr.Done():
				continue
			case <-ls.ctx.Done():
				return
			}
		}
		err := c.dial(ls)
		if ls.ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			continue
		}
		failures++
		delay := Backoff(failures, c.cfg.MinBackoff, c.cfg.MaxBackoff, rand.Float64())
		c.mu.Lock()
		select {
		case <-ls.wake: // stale: from an install while we did not wait for it
		default:
		}
		if ls.peer != nil { // an inbound connection arrived while dialing
			c.mu.Unlock()
			continue
		}
		notify := func() {}
		if ls.peer == nil {
			notify = c.setStatus(id, ls, LinkStatus{State: Idle, Reason: err.Error(), Failures: failures, NextDial: time.Now().Add(delay)})
		}
		c.mu.Unlock()
		notify()
		c.log.Info("bridge: connecting failed", "link", id, "error", err, "retry", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ls.wake: // an inbound connection arrived
		case <-ls.ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// dial connects the link once.
func (c *Connector) dial(ls *linkState) error { return c.dialWith(ls, false) }

// dialWith connects the link once; replace asks the peer (HELLO Replace)
// and this side to put the new connection in place of the current one.
func (c *Connector) dialWith(ls *linkState, replace bool) error {
	start := time.Now()
	l := ls.link
	ctx, cancel := context.WithTimeout(ls.ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := c.cfg.Dial(ctx, "tcp", l.Endpoint)
	if err != nil {
		return err
	}
	tc := tls.Client(raw, c.cfg.Certs.ClientConfig(l.Endpoint, l.Identity))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return fmt.Errorf("TLS handshake with %s: %w", l.Endpoint, err)
	}
	local := c.localOf(l)
	local.Replace = replace
	hello, err := c.helloFor(tc, l, local, time.Until(start.Add(c.cfg.HandshakeTimeout)))
	if err != nil {
		return err
	}
	return c.install(ls, tc, hello, true, replace, time.Since(start))
}

// helloFor exchanges HELLOs and checks the peer's against the link; it
// closes conn on failure.
func (c *Connector) helloFor(conn net.Conn, l Link, local Hello, timeout time.Duration) (Hello, error) {
	h, err := Handshake(conn, local, max(timeout, time.Millisecond))
	if err != nil {
		conn.Close()
		return Hello{}, fmt.Errorf("HELLO from %s: %w", l.Endpoint, err)
	}
	return h, checkHello(conn, l, h)
}

// checkHello rejects a peer whose HELLO does not match its link (and closes
// conn).
func checkHello(conn net.Conn, l Link, h Hello) error {
	if h.ClusterAddress != l.ClusterAddress {
		err := fmt.Errorf("peer announces cluster address %s, link %s has %s", h.ClusterAddress, l.ID, l.ClusterAddress)
		_ = SendClose(conn, CloseRejected, err.Error(), closeTimeout)
		return err
	}
	return nil
}

// replaceGrace is how long a connection the peer replaced stays
// Connected while the replacement is being installed.
const replaceGrace = time.Second

// errDuplicate rejects the losing one of two crossing connections.
var errDuplicate = errors.New("duplicate connection: the one dialed by the lower cluster address stays")

// install hands conn to the pump unless the link is gone or the tie-break
// keeps the connection in place; replace skips the tie-break (a renewal).
func (c *Connector) install(ls *linkState, conn net.Conn, hello Hello, outbound, replace bool, took time.Duration) error {
	id := ls.link.ID
	c.mu.Lock()
	if c.links[id] != ls || ls.ctx.Err() != nil {
		c.mu.Unlock()
		_ = SendClose(conn, CloseRejected, "link removed", closeTimeout)
		return errors.New("link removed")
	}
	if ls.peer != nil && !replace && !KeepNew(c.localOf(ls.link).ClusterAddress, ls.link.ClusterAddress, outbound, ls.outbound) {
		c.mu.Unlock()
		_ = SendClose(conn, CloseRejected, errDuplicate.Error(), closeTimeout)
		return errDuplicate
	}
	pr, err := c.cfg.Pump.AddPeer(id, conn, ls.link.Policy)
	if err != nil {
		c.mu.Unlock()
		conn.Close()
		return err
	}
	if ls.peer != nil {
		ls.ending[ls.peer] = struct{}{} // the pump replaced it
	}
	ls.peer, ls.outbound = pr, outbound
	notify := c.setStatus(id, ls, LinkStatus{State: Connected, HandshakeTime: took, Outbound: outbound, PeerHello: hello})
	select {
	case ls.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
	notify()
	c.wg.Go(func() { c.watch(ls, pr) })
	return nil
}

// watch turns the link Idle when its connection ends, unless another
// took over.
func (c *Connector) watch(ls *linkState, pr *Peer) {
	<-pr.Done()
	// A peer that replaced the connection by a new one (a renewal) may
	// close the old one a moment before the new one is installed here:
	// give the new one that moment instead of going Idle in between.
	var ce *CloseError
	if errors.As(pr.Err(), &ce) && ce.Code == CloseReplaced {
		for deadline := time.Now().Add(replaceGrace); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			c.mu.Lock()
			moved := ls.peer != pr
			c.mu.Unlock()
			if moved || ls.ctx.Err() != nil {
				break
			}
		}
	}
	c.mu.Lock()
	notify := func() {}
	delete(ls.ending, pr)
	ls.past.add(pr.Stats())
	if ls.peer == pr {
		ls.peer = nil
		reason := "connection ended"
		if err := pr.Err(); err != nil {
			reason = err.Error()
		}
		if c.links[ls.link.ID] == ls {
			notify = c.setStatus(ls.link.ID, ls, LinkStatus{State: Idle, Reason: reason})
		}
	}
	c.mu.Unlock()
	notify()
}
