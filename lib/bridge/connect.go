package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
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
	// before the HELLO. It must not block: Close waits for the call.
	OnUnknown func(UnknownPeer) error
	// MinBackoff and MaxBackoff bound the redial delay; defaults 250ms and
	// 30s.
	MinBackoff, MaxBackoff time.Duration
	// HandshakeTimeout bounds dial, TLS and HELLO; default 10s.
	HandshakeTimeout time.Duration
	// Unauthenticated work is bounded: an inbound connection must finish
	// TLS within TLSTimeout (default 3s); at most MaxPending inbound
	// connections (default 64) and MaxPendingPerSource from one IP address
	// (default 4) may be before or in their TLS handshake. A new connection
	// over a limit evicts the oldest pending one (of that source, or of
	// all), which is closed and counted as rejected: silent connections
	// cannot keep a real peer out — behind a NodePort, where every peer
	// comes from a node's address, the newest is most likely a peer that
	// is dialing right now.
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

	pending   []*pendingConn // inbound connections in their handshake, oldest first (under mu)
	rejected  atomic.Uint64  // failed inbound TLS or HELLO handshakes
	untrusted atomic.Uint64  // connections closed by Reverify
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
	// Identities are the names of its certificate (see Identities), for
	// messages and host matching.
	Identities []string
	// URIs are its certificate's URI SANs: the only names that are an
	// identity (see URIIdentities).
	URIs []string
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
	c := &Connector{cfg: cfg, log: cfg.Logger, links: map[string]*linkState{}, listeners: map[net.Listener]struct{}{}}
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

// Links returns the IDs of the links, sorted.
func (c *Connector) Links() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.links))
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
