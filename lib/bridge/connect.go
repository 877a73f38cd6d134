package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Link is one peer bridge a Connector keeps a connection to.
type Link struct {
	ID string
	// Endpoint is the peer bridge's host:port.
	Endpoint string
	// Identity is the URI SAN the peer's certificate must carry, e.g.
	// kubelink://default/b (mesh.Link.PeerIdentity): per cluster, so that a
	// member with a certificate of the same CA cannot pose as another.
	// Empty: the endpoint host must be among the certificate's names (CN,
	// DNS or IP SAN) — which any member the CA signed may carry; only for
	// tests and peers without identities.
	Identity string
	// ClusterAddress is the peer's cluster address; its HELLO must carry
	// exactly this prefix.
	ClusterAddress netip.Prefix
	Policy         Policy
	// Local is what this side announces to the peer of this link, when it
	// differs from ConnectorConfig.Hello: a broker in several meshes has a
	// cluster address per mesh and announces the one of the link's mesh.
	// nil means ConnectorConfig.Hello.
	Local *Hello
}

// LinkState is whether a link is connected.
type LinkState int

const (
	Idle      LinkState = iota // not connected; Reason says why
	Connected                  // a connection is in the pump
)

func (s LinkState) String() string {
	if s == Connected {
		return "Connected"
	}
	return "Idle"
}

// LinkStatus is the state of a link for status reporting.
type LinkStatus struct {
	State LinkState
	// Reason is the last error while Idle.
	Reason string
	// Since is when the link entered the state.
	Since time.Time
	// HandshakeTime is how long TCP, TLS and HELLO took (a few round
	// trips), while Connected.
	HandshakeTime time.Duration
	// Outbound tells whether this side dialed the current connection.
	Outbound bool
	// PeerHello is what the peer announced, while Connected.
	PeerHello Hello
	// Failures counts failed attempts since the last connection; NextDial
	// is when the next one is due (zero while connected or dialing).
	Failures int
	NextDial time.Time
}

// ConnectorConfig configures a Connector.
type ConnectorConfig struct {
	Pump  *Pump
	Certs *Certs
	// Hello is what this side announces on links without their own Local
	// HELLO, and to unknown peers outside the networks of all Local ones;
	// the ClusterAddress of what a link announces also decides the
	// tie-break between crossing connections.
	Hello Hello
	// Identify maps the identities of an authenticated client certificate
	// (see Identities) to a link ID, "" for none. Default: the link whose
	// endpoint host is one of them.
	Identify func(ids []string) string
	// Dial opens TCP connections; default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnChange is called after a link's status changed (not for removed
	// links); calls may come from several goroutines.
	OnChange func(id string, st LinkStatus)
	// OnUnknown, when set, is called for an inbound peer whose certificate
	// verified against the CA but matches no link, after its HELLO was
	// read (auto-connect). The connection is closed either way, with
	// CLOSE rejected and the returned error or, on nil, a note that a
	// link is being set up: the new link then comes through SetLinks and
	// connects like any other. Without OnUnknown such peers are rejected
	// before the HELLO.
	OnUnknown func(UnknownPeer) error
	// MinBackoff and MaxBackoff bound the redial delay; defaults 250ms and
	// 30s.
	MinBackoff, MaxBackoff time.Duration
	// HandshakeTimeout bounds dial, TLS and HELLO; default 10s.
	HandshakeTimeout time.Duration
	// Unauthenticated work is bounded: an inbound connection must finish
	// TLS within TLSTimeout (default 3s); at most MaxPending inbound
	// connections (default 64) and MaxPendingPerSource from one IP address
	// (default 4) may be before or in their handshake; more are closed at
	// once and counted as rejected.
	TLSTimeout                      time.Duration
	MaxPending, MaxPendingPerSource int
	Logger                          *slog.Logger
}

// Connector keeps one connection per link: it dials eagerly, accepts the
// peers' connections (Serve), and redials with backoff when a connection
// ends.
type Connector struct {
	cfg ConnectorConfig
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	links     map[string]*linkState
	listeners map[net.Listener]struct{}
	closed    bool

	pending   map[netip.Addr]int // inbound connections in their handshake, by source (under mu)
	npending  int
	rejected  atomic.Uint64 // failed inbound TLS or HELLO handshakes
	untrusted atomic.Uint64 // connections closed by Reverify
	lastRej   atomic.Pointer[string]
}

type linkState struct {
	link     Link
	ctx      context.Context
	cancel   context.CancelFunc
	peer     *Peer // current connection, nil when none
	outbound bool
	status   LinkStatus
	wake     chan struct{} // a connection was installed or the link changed
	// ending are replaced connections still winding down; past sums the
	// counters of the link's finished connections.
	ending   map[*Peer]struct{}
	past     PeerStats
	renewing bool // a Renew dial is in flight
}

// UnknownPeer is an authenticated peer without a link (see OnUnknown).
type UnknownPeer struct {
	// Identities are the names of its certificate (see Identities).
	Identities []string
	// Remote is the address the connection came from.
	Remote netip.AddrPort
	// Hello is what it announced.
	Hello Hello
}

// NewConnector returns a Connector without links; see SetLinks and Serve.
func NewConnector(cfg ConnectorConfig) (*Connector, error) {
	if cfg.Pump == nil || cfg.Certs == nil {
		return nil, errors.New("bridge: ConnectorConfig needs Pump and Certs")
	}
	if err := cfg.Hello.Validate(); err != nil {
		return nil, err
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.TLSTimeout <= 0 {
		cfg.TLSTimeout = 3 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 64
	}
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = 4
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Connector{cfg: cfg, log: cfg.Logger, links: map[string]*linkState{}, listeners: map[net.Listener]struct{}{}, pending: map[netip.Addr]int{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// localOf is what this side announces to the peer of l.
func (c *Connector) localOf(l Link) Hello {
	if l.Local != nil {
		return *l.Local
	}
	return c.cfg.Hello
}

// Backoff is the delay before attempt n (1 for the first retry): min·2^(n-1)
// capped at max, of which a random part (r in [0,1)) up to a half is taken
// off so that peers do not redial in step.
func Backoff(n int, minD, maxD time.Duration, r float64) time.Duration {
	d := minD
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d - time.Duration(r*float64(d)/2)
}

// KeepNew is the tie-break between a new connection to a peer and the one
// in place: the connection dialed by the side with the lower cluster
// address wins, and between equals the newer one (a reconnect). Both sides
// decide alike, so crossing dials settle on one connection.
func KeepNew(local, remote netip.Prefix, newOutbound, oldOutbound bool) bool {
	localLower := local.Addr().Compare(remote.Addr()) < 0
	wins := func(outbound bool) bool { return outbound == localLower }
	return wins(newOutbound) || !wins(oldOutbound)
}

// SetLinks replaces the set of links: new ones are dialed, removed ones
// disconnected, changed endpoints, cluster addresses or Local HELLOs
// reconnected, and a changed policy applied to the connection in place.
// Links with different Local HELLOs may share an endpoint (a peer that is
// a member of several meshes): the accepting side then tells them apart
// by the cluster address in the dialing side's HELLO.
func (c *Connector) SetLinks(links []Link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]Link{}
	for _, l := range links {
		want[l.ID] = l
	}
	for id, ls := range c.links {
		l, ok := want[id]
		if ok && l.Endpoint == ls.link.Endpoint && l.Identity == ls.link.Identity && l.ClusterAddress == ls.link.ClusterAddress && SameHello(c.localOf(l), c.localOf(ls.link)) {
			ls.link = l
			if ls.peer != nil {
				ls.peer.SetPolicy(l.Policy)
			}
			continue
		}
		ls.cancel()
		delete(c.links, id)
		if ls.peer != nil {
			c.cfg.Pump.RemovePeer(id, "link removed or changed")
		}
	}
	for id, l := range want {
		if _, ok := c.links[id]; ok {
			continue
		}
		ls := &linkState{link: l, wake: make(chan struct{}, 1), ending: map[*Peer]struct{}{}, status: LinkStatus{State: Idle, Reason: "connecting", Since: time.Now()}}
		ls.ctx, ls.cancel = context.WithCancel(c.ctx)
		c.links[id] = ls
		c.wg.Go(func() { c.run(ls) })
	}
}

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

// Links returns the IDs of the links, sorted.
func (c *Connector) Links() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.links))
}

// Rejected counts inbound connections that failed TLS or the HELLO (e.g. a
// certificate from another CA) and tells the last reason.
func (c *Connector) Rejected() (uint64, string) {
	var last string
	if p := c.lastRej.Load(); p != nil {
		last = *p
	}
	return c.rejected.Load(), last
}

// setStatus updates ls.status (caller holds c.mu) and returns the
// notification to send after unlocking.
func (c *Connector) setStatus(id string, ls *linkState, st LinkStatus) func() {
	if st.State != ls.status.State {
		st.Since = time.Now()
	} else {
		st.Since = ls.status.Since
	}
	ls.status = st
	if c.cfg.OnChange == nil {
		return func() {}
	}
	return func() { c.cfg.OnChange(id, st) }
}

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
		src := remoteIP(conn)
		if reason := c.admit(src); reason != "" {
			conn.Close()
			c.reject(conn, errors.New(reason))
			continue
		}
		c.wg.Go(func() {
			err := c.accept(conn, func() { c.release(src) })
			if err != nil {
				c.reject(conn, err)
			}
		})
	}
}

func remoteIP(conn net.Conn) netip.Addr {
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// admit reserves a handshake slot for a connection from src, or says why not.
func (c *Connector) admit(src netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.npending >= c.cfg.MaxPending:
		return fmt.Sprintf("too many pending handshakes (%d)", c.npending)
	case c.pending[src] >= c.cfg.MaxPendingPerSource:
		return fmt.Sprintf("too many pending handshakes from %s (%d)", src, c.pending[src])
	}
	c.npending++
	c.pending[src]++
	return ""
}

func (c *Connector) release(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.npending--
	if c.pending[src]--; c.pending[src] <= 0 {
		delete(c.pending, src)
	}
}

func (c *Connector) reject(conn net.Conn, err error) {
	c.rejected.Add(1)
	msg := err.Error()
	c.lastRej.Store(&msg)
	c.log.Info("bridge: rejected a connection", "remote", conn.RemoteAddr(), "error", err)
}

// accept authenticates an inbound connection and hands it to its link;
// done is called when the handshake (TLS and HELLO) is over either way
// (accept returns then: the connection lives on in the pump).
func (c *Connector) accept(raw net.Conn, done func()) error {
	defer done()
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	tlsCtx, tlsCancel := context.WithTimeout(ctx, c.cfg.TLSTimeout)
	defer tlsCancel()
	tc := tls.Server(raw, c.cfg.Certs.ServerConfig())
	if err := tc.HandshakeContext(tlsCtx); err != nil {
		raw.Close()
		return fmt.Errorf("TLS handshake: %w", err)
	}
	ids := Identities(tc.ConnectionState().PeerCertificates[0])
	timeout := func() time.Duration { return max(time.Until(start.Add(c.cfg.HandshakeTimeout)), time.Millisecond) }
	c.mu.Lock()
	cands := c.candidates(ids)
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
		return c.unknown(tc, ids, hello)
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
// may be for, sorted by ID (caller holds c.mu): Identify's, else those
// whose Identity is one of ids (links without one: whose endpoint host is). A peer in several meshes has a link
// in each.
func (c *Connector) candidates(ids []string) []*linkState {
	if c.cfg.Identify != nil {
		if ls := c.links[c.cfg.Identify(ids)]; ls != nil {
			return []*linkState{ls}
		}
		return nil
	}
	var cands []*linkState
	for _, cand := range c.links {
		if cand.link.Identity != "" {
			if slices.Contains(ids, cand.link.Identity) {
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
func (c *Connector) unknown(tc *tls.Conn, ids []string, h Hello) error {
	remote, _ := netip.ParseAddrPort(tc.RemoteAddr().String())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if err := c.cfg.OnUnknown(UnknownPeer{Identities: ids, Remote: remote, Hello: h}); err != nil {
		err = fmt.Errorf("no link for peer %v: %w", ids, err)
		_ = SendClose(tc, CloseRejected, err.Error(), closeTimeout)
		return err
	}
	_ = SendClose(tc, CloseRejected, "no link for this peer yet: one is being created from its HELLO; this side will connect", closeTimeout)
	return nil
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

// Close stops dialing and accepting, closes the links' connections and
// waits for the goroutines. The pump stays open.
func (c *Connector) Close() error {
	c.mu.Lock()
	c.closed = true
	for l := range c.listeners {
		l.Close()
	}
	var ids []string
	for id, ls := range c.links {
		if ls.peer != nil {
			ids = append(ids, id)
		}
	}
	c.links = map[string]*linkState{}
	c.mu.Unlock()
	c.cancel()
	for _, id := range ids {
		c.cfg.Pump.RemovePeer(id, "shutting down")
	}
	c.wg.Wait()
	return nil
}
