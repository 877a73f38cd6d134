package wireguard

import (
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
)

func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	k[0] = b
	return k
}

func udp(s string) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

func nets(ps ...string) []net.IPNet {
	var out []net.IPNet
	for _, p := range ps {
		out = append(out, ipNets([]netip.Prefix{netip.MustParsePrefix(p)})...)
	}
	return out
}

// peer builds a device peer as the kernel reports it.
func peer(k byte, endpoint string, rx int64, allowed ...string) wgtypes.Peer {
	p := wgtypes.Peer{PublicKey: testKey(k), ReceiveBytes: rx, AllowedIPs: nets(allowed...), PersistentKeepaliveInterval: 21 * time.Second}
	if endpoint != "" {
		p.Endpoint = udp(endpoint)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

func TestDiffChangesOnlyWhatDiffers(t *testing.T) {
	priv, otherPriv := testKey(100), testKey(101)
	base := func(peers ...wgtypes.Peer) wgtypes.Device {
		return wgtypes.Device{PrivateKey: priv, ListenPort: 51820, Peers: peers}
	}
	withPSK := func(p wgtypes.Peer, b byte) wgtypes.Peer { p.PresharedKey = testKey(b); return p }
	withKA := func(p wgtypes.Peer, d time.Duration) wgtypes.Peer { p.PersistentKeepaliveInterval = d; return p }
	a := peer(1, "10.0.0.1:51820", 100, "10.1.0.0/16")
	tests := []struct {
		name             string
		desired, current wgtypes.Device
		prevRx           map[wgtypes.Key]int64
		want             wgtypes.Config
	}{{
		name:    "unchanged peer gives an empty config",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(a),
		want:    wgtypes.Config{},
	}, {
		name:    "new peer is added with everything",
		desired: base(a, withPSK(peer(2, "[2001:db8::2]:8777", 0, "10.2.0.0/16", "fd00::/64"), 9)),
		current: base(a),
		want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
			PublicKey: testKey(2), PresharedKey: ptr(testKey(9)), Endpoint: udp("[2001:db8::2]:8777"),
			PersistentKeepaliveInterval: ptr(21 * time.Second), ReplaceAllowedIPs: true, AllowedIPs: nets("10.2.0.0/16", "fd00::/64"),
		}}},
	}, {
		name:    "inbound peer is added without endpoint",
		desired: base(withKA(peer(2, "", 0, "10.2.0.0/16"), 0)),
		current: base(),
		want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
			PublicKey: testKey(2), ReplaceAllowedIPs: true, AllowedIPs: nets("10.2.0.0/16"),
		}}},
	}, {
		name:    "peer no longer wanted is removed first",
		desired: base(peer(3, "10.0.0.3:1", 0, "10.1.0.0/16")),
		current: base(a),
		want: wgtypes.Config{Peers: []wgtypes.PeerConfig{
			{PublicKey: testKey(1), Remove: true},
			{PublicKey: testKey(3), Endpoint: udp("10.0.0.3:1"), PersistentKeepaliveInterval: ptr(21 * time.Second), ReplaceAllowedIPs: true, AllowedIPs: nets("10.1.0.0/16")},
		}},
	}, {
		name:    "changed allowed IPs are replaced",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16", "10.9.0.0/24")),
		current: base(a),
		want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
			PublicKey: testKey(1), UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: nets("10.1.0.0/16", "10.9.0.0/24"),
		}}},
	}, {
		name:    "allowed IPs in another order and byte form are unchanged",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.9.0.0/24", "10.1.0.0/16")),
		current: base(wgtypes.Peer{PublicKey: testKey(1), Endpoint: udp("10.0.0.1:51820"), PersistentKeepaliveInterval: 21 * time.Second,
			AllowedIPs: []net.IPNet{{IP: net.ParseIP("10.1.0.0"), Mask: net.CIDRMask(112, 128)}, {IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}}}),
		want: wgtypes.Config{},
	}, {
		name:    "changed preshared key is set",
		desired: base(withPSK(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16"), 7)),
		current: base(a),
		want:    wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, PresharedKey: ptr(testKey(7))}}},
	}, {
		name:    "dropped preshared key is cleared",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(withPSK(a, 7)),
		want:    wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, PresharedKey: ptr(wgtypes.Key{})}}},
	}, {
		name:    "changed keepalive is set",
		desired: base(withKA(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16"), 5*time.Second)),
		current: base(a),
		want:    wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, PersistentKeepaliveInterval: ptr(5 * time.Second)}}},
	}, {
		name:    "roamed endpoint is kept while the peer's packets keep arriving",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(peer(1, "192.0.2.7:40000", 500, "10.1.0.0/16")),
		prevRx:  map[wgtypes.Key]int64{testKey(1): 100},
		want:    wgtypes.Config{},
	}, {
		name:    "configured endpoint is restored when nothing arrived since the last apply",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(peer(1, "192.0.2.7:40000", 100, "10.1.0.0/16")),
		prevRx:  map[wgtypes.Key]int64{testKey(1): 100},
		want:    wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, Endpoint: udp("10.0.0.1:51820")}}},
	}, {
		name:    "configured endpoint is set when there is no earlier counter",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(peer(1, "192.0.2.7:40000", 900, "10.1.0.0/16")),
		want:    wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, Endpoint: udp("10.0.0.1:51820")}}},
	}, {
		name:    "inbound peer keeps the endpoint it dialed from",
		desired: base(peer(1, "", 0, "10.1.0.0/16")),
		current: base(peer(1, "192.0.2.7:40000", 100, "10.1.0.0/16")),
		want:    wgtypes.Config{},
	}, {
		name:    "IPv4-mapped live endpoint equals the IPv4 one",
		desired: base(peer(1, "10.0.0.1:51820", 0, "10.1.0.0/16")),
		current: base(wgtypes.Peer{PublicKey: testKey(1), Endpoint: &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 51820}, PersistentKeepaliveInterval: 21 * time.Second, AllowedIPs: nets("10.1.0.0/16")}),
		want:    wgtypes.Config{},
	}, {
		name:    "private key and listen port are set when they differ",
		desired: wgtypes.Device{PrivateKey: otherPriv, ListenPort: 8777, Peers: []wgtypes.Peer{a}},
		current: base(a),
		want:    wgtypes.Config{PrivateKey: ptr(otherPriv), ListenPort: ptr(8777)},
	}, {
		name:    "listen port 0 keeps the port the device chose",
		desired: wgtypes.Device{PrivateKey: priv, Peers: []wgtypes.Peer{a}},
		current: base(a),
		want:    wgtypes.Config{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := diff(tt.desired, tt.current, tt.prevRx)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("diff:\n got %s\nwant %s", showConfig(got), showConfig(tt.want))
			}
			if emptyConfig(got) != emptyConfig(tt.want) {
				t.Errorf("emptyConfig = %v, want %v", emptyConfig(got), emptyConfig(tt.want))
			}
		})
	}
}

func showConfig(c wgtypes.Config) string {
	s := ""
	if c.PrivateKey != nil {
		s += "privateKey=" + c.PrivateKey.String() + " "
	}
	if c.ListenPort != nil {
		s += "listenPort=" + strconv.Itoa(*c.ListenPort) + " "
	}
	for _, p := range c.Peers {
		s += "{" + p.PublicKey.String()[:4]
		if p.Remove {
			s += " remove"
		}
		if p.UpdateOnly {
			s += " updateOnly"
		}
		if p.PresharedKey != nil {
			s += " psk=" + p.PresharedKey.String()[:4]
		}
		if p.Endpoint != nil {
			s += " endpoint=" + p.Endpoint.String()
		}
		if p.PersistentKeepaliveInterval != nil {
			s += " keepalive=" + p.PersistentKeepaliveInterval.String()
		}
		if p.ReplaceAllowedIPs {
			s += " replaceAllowedIPs"
		}
		for _, n := range p.AllowedIPs {
			s += " " + n.String()
		}
		s += "} "
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

func TestDesiredDeviceCarriesMeshPeers(t *testing.T) {
	priv := mesh.Key(testKey(50))
	p := ResolvedPeer{
		Peer: mesh.Peer{PublicKey: mesh.Key(testKey(1)), PresharedKey: mesh.Key(testKey(2)), Keepalive: mesh.DefaultKeepalive,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")}},
		Addr: udp("10.0.0.1:8777"),
	}
	d := desiredDevice(priv, 8777, []ResolvedPeer{p})
	if d.PrivateKey != testKey(50) || d.ListenPort != 8777 || len(d.Peers) != 1 {
		t.Fatalf("device = %+v", d)
	}
	got := d.Peers[0]
	if got.PublicKey != testKey(1) || got.PresharedKey != testKey(2) || got.PersistentKeepaliveInterval != mesh.DefaultKeepalive || got.Endpoint.String() != "10.0.0.1:8777" {
		t.Errorf("peer = %+v", got)
	}
	if len(got.AllowedIPs) != 1 || got.AllowedIPs[0].String() != "10.1.0.0/16" || len(got.AllowedIPs[0].IP) != net.IPv4len {
		t.Errorf("allowed IPs = %v, want 10.1.0.0/16 in 4-byte form (the kernel takes the family from it)", got.AllowedIPs)
	}
}

// Two Applies a few hundred milliseconds apart, between two packets of the
// peer, must not restore the configured endpoint: the peer counts as
// roamed until nothing arrived from it for roamHold.
func TestRoamedEndpointIsHeldBetweenPackets(t *testing.T) {
	d := &Device{}
	key := wgtypes.Key{7}
	at := time.Unix(1000, 0)
	peer := func(rx int64) []wgtypes.Peer { return []wgtypes.Peer{{PublicKey: key, ReceiveBytes: rx}} }
	roamed := func(prev map[wgtypes.Key]int64, rx int64) bool { r, ok := prev[key]; return ok && rx > r }

	if prev := d.receivedRecently(peer(100), at); roamed(prev, 100) {
		t.Errorf("first sight of the peer counts as roamed: %v", prev)
	}
	if prev := d.receivedRecently(peer(200), at.Add(time.Second)); !roamed(prev, 200) {
		t.Errorf("counter grew: want roamed, got %v", prev)
	}
	// 300 ms later, no packet in between: still roamed (the old rule said no)
	if prev := d.receivedRecently(peer(200), at.Add(1300*time.Millisecond)); !roamed(prev, 200) {
		t.Errorf("300 ms after the last packet: want roamed, got %v", prev)
	}
	if prev := d.receivedRecently(peer(200), at.Add(time.Second+roamHold)); roamed(prev, 200) {
		t.Errorf("nothing for roamHold: want the configured endpoint back, got %v", prev)
	}
	if d.receivedRecently(nil, at.Add(10*time.Second)); len(d.lastRx) != 0 {
		t.Errorf("a removed peer's counter is kept: %v", d.lastRx)
	}
}
