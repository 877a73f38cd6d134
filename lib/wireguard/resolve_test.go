package wireguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/kubelink/kubelink/lib/mesh"
)

// fakeDNS answers lookups from a table that tests change between calls.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]string
	fail    map[string]error
	calls   map[string]int
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{answers: map[string][]string{}, fail: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeDNS) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = addrs
	delete(f.fail, host)
}

func (f *fakeDNS) failWith(host string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[host] = err
}

func (f *fakeDNS) lookup(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[host]++
	if network != "ip" {
		return nil, errors.New("unexpected network " + network)
	}
	if err := f.fail[host]; err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range f.answers[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func hostPeer(k byte, host string, port uint16) mesh.Peer {
	return mesh.Peer{PublicKey: mesh.Key(testKey(k)), Endpoint: mesh.Endpoint{Kind: mesh.EndpointHost, Host: host, Port: port}}
}

func addrOf(t *testing.T, peers []ResolvedPeer, k byte) string {
	t.Helper()
	for _, p := range peers {
		if p.PublicKey == mesh.Key(testKey(k)) {
			if p.Addr == nil {
				return ""
			}
			return p.Addr.String()
		}
	}
	t.Fatalf("peer %d missing from result", k)
	return ""
}

func TestResolvePeersHandlesLiteralsNamesAndInbound(t *testing.T) {
	dns := newFakeDNS()
	dns.set("gw.example.org", "192.0.2.10")
	r := &Resolver{Lookup: dns.lookup}
	peers := []mesh.Peer{
		hostPeer(1, "gw.example.org", 8777),
		hostPeer(2, "2001:db8::5", 8777),
		hostPeer(3, "198.51.100.3", 51820),
		{PublicKey: mesh.Key(testKey(4)), Endpoint: mesh.Endpoint{Kind: mesh.EndpointInbound}},
	}
	got, errs := r.ResolvePeers(context.Background(), peers)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	for k, want := range map[byte]string{1: "192.0.2.10:8777", 2: "[2001:db8::5]:8777", 3: "198.51.100.3:51820", 4: ""} {
		if a := addrOf(t, got, k); a != want {
			t.Errorf("peer %d: addr %q, want %q", k, a, want)
		}
	}
	if dns.calls["2001:db8::5"]+dns.calls["198.51.100.3"] != 0 {
		t.Errorf("IP literals were looked up: %v", dns.calls)
	}
	// Known names come from the cache until Refresh.
	r.ResolvePeers(context.Background(), peers)
	if dns.calls["gw.example.org"] != 1 {
		t.Errorf("gw.example.org looked up %d times, want 1", dns.calls["gw.example.org"])
	}
}

func TestRefreshPicksUpChangedAddress(t *testing.T) {
	dns := newFakeDNS()
	dns.set("gw.example.org", "192.0.2.10")
	r := &Resolver{Lookup: dns.lookup}
	peers := []mesh.Peer{hostPeer(1, "gw.example.org", 8777)}
	r.ResolvePeers(context.Background(), peers)

	if r.Refresh(context.Background()) {
		t.Error("Refresh reported a change although DNS answers the same")
	}
	dns.set("gw.example.org", "192.0.2.20")
	if !r.Refresh(context.Background()) {
		t.Error("Refresh did not report the new address")
	}
	got, _ := r.ResolvePeers(context.Background(), peers)
	if a := addrOf(t, got, 1); a != "192.0.2.20:8777" {
		t.Errorf("addr %q, want 192.0.2.20:8777", a)
	}
}

func TestResolverPrefersAddressInUse(t *testing.T) {
	dns := newFakeDNS()
	dns.set("gw.example.org", "192.0.2.30")
	r := &Resolver{Lookup: dns.lookup}
	peers := []mesh.Peer{hostPeer(1, "gw.example.org", 8777)}
	r.ResolvePeers(context.Background(), peers)

	// Round-robin DNS now lists more addresses, the one in use not first.
	dns.set("gw.example.org", "192.0.2.40", "192.0.2.30", "192.0.2.20")
	if r.Refresh(context.Background()) {
		t.Error("Refresh switched away from an address the name still has")
	}
	got, _ := r.ResolvePeers(context.Background(), peers)
	if a := addrOf(t, got, 1); a != "192.0.2.30:8777" {
		t.Errorf("addr %q, want the address in use 192.0.2.30:8777", a)
	}

	// Once the address in use is gone, the choice is the smallest one.
	dns.set("gw.example.org", "2001:db8::1", "192.0.2.40", "192.0.2.20")
	r.Refresh(context.Background())
	got, _ = r.ResolvePeers(context.Background(), peers)
	if a := addrOf(t, got, 1); a != "192.0.2.20:8777" {
		t.Errorf("addr %q, want the smallest 192.0.2.20:8777", a)
	}
}

func TestResolverKeepsLastGoodAddressOnFailure(t *testing.T) {
	dns := newFakeDNS()
	dns.set("gw.example.org", "192.0.2.10")
	r := &Resolver{Lookup: dns.lookup}
	peers := []mesh.Peer{hostPeer(1, "gw.example.org", 8777)}
	r.ResolvePeers(context.Background(), peers)

	dns.failWith("gw.example.org", &net.DNSError{Err: "server misbehaving", Name: "gw.example.org", Server: "10.96.0.10:53"})
	if r.Refresh(context.Background()) {
		t.Error("a failed lookup counted as a change")
	}
	got, errs := r.ResolvePeers(context.Background(), peers)
	if a := addrOf(t, got, 1); a != "192.0.2.10:8777" {
		t.Errorf("addr %q, want the last good 192.0.2.10:8777", a)
	}
	if len(errs) != 0 {
		t.Errorf("a name with a last good address is reported as unresolved: %v", errs)
	}
	if err := r.Errors()["gw.example.org"]; err == nil || !strings.Contains(err.Error(), "server misbehaving") {
		t.Errorf("Errors() = %v, want the lookup failure", r.Errors())
	}

	dns.set("gw.example.org", "192.0.2.10")
	r.Refresh(context.Background())
	if len(r.Errors()) != 0 {
		t.Errorf("error not cleared after a good lookup: %v", r.Errors())
	}
}

func TestResolverReportsNamesThatNeverResolved(t *testing.T) {
	dns := newFakeDNS()
	dns.failWith("gone.example.org", errors.New("no such host"))
	dns.set("empty.example.org")
	r := &Resolver{Lookup: dns.lookup}
	peers := []mesh.Peer{hostPeer(1, "gone.example.org", 8777), hostPeer(2, "empty.example.org", 8777)}
	got, errs := r.ResolvePeers(context.Background(), peers)
	if len(got) != 2 || addrOf(t, got, 1) != "" || addrOf(t, got, 2) != "" {
		t.Errorf("unresolved peers must stay, without address: %+v", got)
	}
	for host, want := range map[string]string{
		"gone.example.org":  "resolve endpoint host gone.example.org: no such host",
		"empty.example.org": "resolve endpoint host empty.example.org: no addresses",
	} {
		if err := errs[host]; err == nil || err.Error() != want {
			t.Errorf("error for %s = %v, want %q", host, err, want)
		}
	}

	// A later Refresh that succeeds fixes it.
	dns.set("gone.example.org", "192.0.2.99")
	if !r.Refresh(context.Background()) {
		t.Error("first successful lookup not reported as a change")
	}
	got, errs = r.ResolvePeers(context.Background(), peers[:1])
	if addrOf(t, got, 1) != "192.0.2.99:8777" || len(errs) != 0 {
		t.Errorf("after recovery: %+v, errors %v", got, errs)
	}
}

func TestResolverForgetsNamesNoPeerUses(t *testing.T) {
	dns := newFakeDNS()
	dns.set("a.example.org", "192.0.2.1")
	dns.set("b.example.org", "192.0.2.2")
	r := &Resolver{Lookup: dns.lookup}
	r.ResolvePeers(context.Background(), []mesh.Peer{hostPeer(1, "a.example.org", 1), hostPeer(2, "b.example.org", 1)})
	r.ResolvePeers(context.Background(), []mesh.Peer{hostPeer(1, "a.example.org", 1)})
	r.Refresh(context.Background())
	if dns.calls["b.example.org"] != 1 || dns.calls["a.example.org"] != 2 {
		t.Errorf("lookups %v: the unused name must not be refreshed", dns.calls)
	}
}
