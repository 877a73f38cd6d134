package bridge

// The Connector's reports (status, figures, rejections) and certificate
// renewal of live connections.

import (
	"crypto/tls"
	"crypto/x509"
	"net"
)

// Status returns the status of a link, false when there is no such link.
func (c *Connector) Status(id string) (LinkStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls := c.links[id]
	if ls == nil {
		return LinkStatus{}, false
	}
	return ls.status, true
}

// Statuses returns the status of every link.
func (c *Connector) Statuses() map[string]LinkStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]LinkStatus, len(c.links))
	for id, ls := range c.links {
		m[id] = ls.status
	}
	return m
}

// LinkStats returns the counters of a link summed over its connections
// (current, replaced and finished ones) since the link was added; false
// when there is no such link.
func (c *Connector) LinkStats(id string) (PeerStats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls := c.links[id]
	if ls == nil {
		return PeerStats{}, false
	}
	s := ls.past
	if ls.peer != nil {
		s.add(ls.peer.Stats())
	}
	for pr := range ls.ending {
		s.add(pr.Stats())
	}
	return s, true
}

// Renew replaces the connection of every connected link by a new one that
// this side dials, make-before-break: the old connection carries packets
// until the new one is installed. Call it after the local certificate
// changed, so that peers see the new certificate without waiting for a
// reconnect. A link whose renewal fails keeps its connection (and its
// status) and is not retried until the next Renew.
func (c *Connector) Renew() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ls := range c.links {
		if ls.peer == nil || ls.renewing {
			continue
		}
		ls.renewing = true
		c.wg.Go(func() {
			err := c.dialWith(ls, true)
			c.mu.Lock()
			ls.renewing = false
			c.mu.Unlock()
			if err != nil && ls.ctx.Err() == nil {
				c.log.Warn("bridge: renewing the connection failed; the old one stays", "link", ls.link.ID, "error", err)
			} else if err == nil {
				c.log.Info("bridge: connection renewed", "link", ls.link.ID)
			}
		})
	}
}

// Reverify checks the peer certificate of every established connection
// again — against the CA of the moment and the link's identity — and
// closes the connections that no longer verify (the CA was rotated, a pin
// changed); their links redial under the new trust. It returns how many it
// closed; each is logged with its reason and counted in Untrusted. Call it
// after the trust material changed.
func (c *Connector) Reverify() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	closed := 0
	for id, ls := range c.links {
		chain := peerChain(ls)
		if len(chain) == 0 {
			continue
		}
		usage := x509.ExtKeyUsageClientAuth
		if ls.outbound {
			usage = x509.ExtKeyUsageServerAuth
		}
		host, _, _ := net.SplitHostPort(ls.link.Endpoint)
		_, err := c.cfg.Certs.Verify(chain, usage)
		if err == nil {
			err = CheckIdentity(chain[0], ls.link.Identity, host)
		}
		if err == nil {
			continue
		}
		reason := "peer certificate no longer trusted: " + err.Error()
		c.log.Warn("bridge: closing a connection", "link", id, "reason", reason)
		c.untrusted.Add(1)
		c.cfg.Pump.RemovePeer(id, reason)
		closed++
	}
	return closed
}

// Untrusted counts connections Reverify closed.
func (c *Connector) Untrusted() uint64 { return c.untrusted.Load() }

// Rejected counts inbound connections that failed TLS or the HELLO (e.g. a
// certificate from another CA) and tells the last reason.
func (c *Connector) Rejected() (uint64, string) {
	var last string
	if p := c.lastRej.Load(); p != nil {
		last = *p
	}
	return c.rejected.Load(), last
}

// PeerCertificate is the certificate the peer of a link presented on the
// current connection, nil when not connected.
func (c *Connector) PeerCertificate(id string) *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ls := c.links[id]; ls != nil {
		if chain := peerChain(ls); len(chain) > 0 {
			return chain[0]
		}
	}
	return nil
}

// peerChain is what the peer of the link's current connection presented,
// leaf first (caller holds c.mu); nil without a TLS connection.
func peerChain(ls *linkState) []*x509.Certificate {
	if ls.peer == nil {
		return nil
	}
	if tc, ok := ls.peer.conn.(*tls.Conn); ok {
		return tc.ConnectionState().PeerCertificates
	}
	return nil
}
