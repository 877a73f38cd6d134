package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
)

// ResolvedPeer is a mesh peer with its endpoint turned into an address.
type ResolvedPeer struct {
	mesh.Peer
	// Addr is where handshakes go; nil when the peer dials us (Inbound) or
	// its endpoint has never resolved. A nil Addr never overrides the
	// endpoint the device learned from the peer's packets.
	Addr *net.UDPAddr
}

// PeerStats is what the device reports about one peer.
type PeerStats struct {
	// LastHandshake is zero when there never was one.
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	// Endpoint is the address the device currently sends to (possibly
	// roamed away from the configured one); invalid when none is known.
	Endpoint netip.AddrPort
}

// Apply makes the device's key, listen port and peers match. Peers that are
// already right are not touched, so their sessions and counters go on. A
// listenPort of 0 keeps whatever port the device has.
func (d *Device) Apply(privateKey mesh.Key, listenPort int, peers []ResolvedPeer) error {
	if privateKey.IsZero() {
		return errors.New("WireGuard private key is empty")
	}
	desired := desiredDevice(privateKey, listenPort, peers)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	current, err := d.client.Device(d.name)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", d.name, err)
	}
	now := time.Now()
	cfg := diff(desired, *current, d.receivedRecently(current.Peers, now))
	local := desired.PrivateKey.PublicKey()
	d.holdBack(local, &cfg, time.Now())
	if !emptyConfig(cfg) {
		if err := d.client.ConfigureDevice(d.name, cfg); err != nil {
			return fmt.Errorf("configure WireGuard device %s: %w", d.name, err)
		}
		d.trackAdded(local, cfg, time.Now())
	}
	return nil
}

// roamHold is how long a peer's roamed endpoint is kept after the last
// packet that arrived from it. Apply runs often (every status event, probe
// change or endpoint refresh), sometimes twice within a few hundred
// milliseconds: comparing only with the previous Apply's counter restored
// the configured endpoint between two of the peer's packets. During a
// failover of the peer that sent replies to its configured endpoint (a
// NodePort whose UDP conntrack entry still pointed at the old pod) and
// traffic flapped for seconds until the peer's next packet roamed it back.
const roamHold = 5 * time.Second

// receivedRecently turns the live counters into the prevRx form diff reads
// (d.mu held): a peer whose receive counter grew within roamHold appears
// with a smaller earlier counter (it roamed and keeps its live endpoint),
// any other with its current one.
func (d *Device) receivedRecently(peers []wgtypes.Peer, now time.Time) map[wgtypes.Key]int64 {
	if d.lastRx == nil {
		d.lastRx = map[wgtypes.Key]rxMark{}
	}
	prev := make(map[wgtypes.Key]int64, len(peers))
	seen := make(map[wgtypes.Key]bool, len(peers))
	for _, p := range peers {
		seen[p.PublicKey] = true
		m, known := d.lastRx[p.PublicKey]
		if !known {
			d.lastRx[p.PublicKey] = rxMark{bytes: p.ReceiveBytes}
			continue // no earlier counter: diff sets the configured endpoint
		}
		if p.ReceiveBytes != m.bytes {
			m = rxMark{bytes: p.ReceiveBytes, at: now}
			d.lastRx[p.PublicKey] = m
		}
		if !m.at.IsZero() && now.Sub(m.at) < roamHold && p.ReceiveBytes > 0 {
			prev[p.PublicKey] = p.ReceiveBytes - 1
		} else {
			prev[p.PublicKey] = p.ReceiveBytes
		}
	}
	for k := range d.lastRx {
		if !seen[k] {
			delete(d.lastRx, k)
		}
	}
	return prev
}

// rxMark is a peer's receive counter and when it last grew.
type rxMark struct {
	bytes int64
	at    time.Time
}

// Stats reads the counters of all peers of the device.
func (d *Device) Stats() (map[mesh.Key]PeerStats, error) {
	dev, err := d.read()
	if err != nil {
		return nil, err
	}
	out := make(map[mesh.Key]PeerStats, len(dev.Peers))
	for _, p := range dev.Peers {
		out[mesh.Key(p.PublicKey)] = PeerStats{
			LastHandshake: p.LastHandshakeTime,
			RxBytes:       p.ReceiveBytes,
			TxBytes:       p.TransmitBytes,
			Endpoint:      addrPort(p.Endpoint),
		}
	}
	return out, nil
}

// PublicKey is the public key of the private key the device has; zero
// before one was applied.
func (d *Device) PublicKey() (mesh.Key, error) {
	dev, err := d.read()
	if err != nil {
		return mesh.Key{}, err
	}
	return mesh.Key(dev.PublicKey), nil
}

// ListenPort is the UDP port the device listens on (the chosen one when
// none was configured); 0 until a device without a configured port is up.
func (d *Device) ListenPort() (int, error) {
	dev, err := d.read()
	if err != nil {
		return 0, err
	}
	return dev.ListenPort, nil
}

func (d *Device) read() (*wgtypes.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
	dev, err := d.client.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("read WireGuard device %s: %w", d.name, err)
	}
	return dev, nil
}

func desiredDevice(privateKey mesh.Key, listenPort int, peers []ResolvedPeer) wgtypes.Device {
	d := wgtypes.Device{PrivateKey: wgtypes.Key(privateKey), ListenPort: listenPort}
	for _, p := range peers {
		d.Peers = append(d.Peers, wgtypes.Peer{
			PublicKey:                   wgtypes.Key(p.PublicKey),
			PresharedKey:                wgtypes.Key(p.PresharedKey),
			Endpoint:                    p.Addr,
			PersistentKeepaliveInterval: p.Keepalive,
			AllowedIPs:                  ipNets(p.AllowedIPs),
		})
	}
	return d
}

// diff computes the configuration that turns current into desired, leaving
// alone everything that already matches. prevRx holds each peer's receive
// counter at the previous Apply: a peer whose live endpoint differs from the
// configured one keeps it while the counter grows, because WireGuard moved
// there after authenticated packets from the peer (roaming, e.g. NAT rebinding).
// When nothing arrives any more, the configured endpoint is restored. A new
// configured endpoint therefore takes over once the old one stops working.
func diff(desired, current wgtypes.Device, prevRx map[wgtypes.Key]int64) wgtypes.Config {
	var cfg wgtypes.Config
	if desired.PrivateKey != current.PrivateKey {
		k := desired.PrivateKey
		cfg.PrivateKey = &k
	}
	if desired.ListenPort != 0 && desired.ListenPort != current.ListenPort {
		port := desired.ListenPort
		cfg.ListenPort = &port
	}
	want := make(map[wgtypes.Key]bool, len(desired.Peers))
	for _, p := range desired.Peers {
		want[p.PublicKey] = true
	}
	have := make(map[wgtypes.Key]wgtypes.Peer, len(current.Peers))
	for _, p := range current.Peers {
		have[p.PublicKey] = p
		if !want[p.PublicKey] {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	for _, p := range desired.Peers {
		cur, ok := have[p.PublicKey]
		if !ok {
			cfg.Peers = append(cfg.Peers, newPeer(p))
			continue
		}
		rx, known := prevRx[p.PublicKey]
		roamed := known && cur.ReceiveBytes > rx
		if pc, changed := updatePeer(p, cur, roamed); changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	// Removals first frees allowed IPs that a new or updated peer takes over.
	slices.SortStableFunc(cfg.Peers, func(a, b wgtypes.PeerConfig) int {
		if a.Remove != b.Remove {
			if a.Remove {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.PublicKey[:], b.PublicKey[:])
	})
	return cfg
}

func newPeer(p wgtypes.Peer) wgtypes.PeerConfig {
	pc := wgtypes.PeerConfig{
		PublicKey:         p.PublicKey,
		Endpoint:          p.Endpoint,
		ReplaceAllowedIPs: true,
		AllowedIPs:        p.AllowedIPs,
	}
	if p.PresharedKey != (wgtypes.Key{}) {
		psk := p.PresharedKey
		pc.PresharedKey = &psk
	}
	if p.PersistentKeepaliveInterval > 0 {
		ka := p.PersistentKeepaliveInterval
		pc.PersistentKeepaliveInterval = &ka
	}
	return pc
}

// updatePeer returns the changes for an existing peer (UpdateOnly, so a
// peer removed concurrently is not recreated half-configured).
func updatePeer(want, cur wgtypes.Peer, roamed bool) (wgtypes.PeerConfig, bool) {
	pc := wgtypes.PeerConfig{PublicKey: want.PublicKey, UpdateOnly: true}
	changed := false
	if want.PresharedKey != cur.PresharedKey {
		psk := want.PresharedKey
		pc.PresharedKey, changed = &psk, true
	}
	if want.PersistentKeepaliveInterval.Truncate(time.Second) != cur.PersistentKeepaliveInterval.Truncate(time.Second) {
		ka := want.PersistentKeepaliveInterval
		pc.PersistentKeepaliveInterval, changed = &ka, true
	}
	if !samePrefixes(want.AllowedIPs, cur.AllowedIPs) {
		pc.ReplaceAllowedIPs, pc.AllowedIPs, changed = true, want.AllowedIPs, true
	}
	if setEndpoint(want.Endpoint, cur.Endpoint, roamed) {
		pc.Endpoint, changed = want.Endpoint, true
	}
	return pc, changed
}

// setEndpoint decides whether the configured endpoint replaces the live one.
func setEndpoint(configured, live *net.UDPAddr, roamed bool) bool {
	switch {
	case configured == nil:
		return false // the peer dials us: only its packets know where it is
	case live == nil:
		return true
	case addrPort(configured) == addrPort(live):
		return false
	default:
		return !roamed
	}
}

func emptyConfig(c wgtypes.Config) bool {
	return c.PrivateKey == nil && c.ListenPort == nil && c.FirewallMark == nil && !c.ReplacePeers && len(c.Peers) == 0
}

func addrPort(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

func ipNets(prefixes []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		out = append(out, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

// samePrefixes compares allowed IPs as sets: the kernel returns them in its
// own order and with IPv4 in either byte form.
func samePrefixes(a, b []net.IPNet) bool {
	pa, pb := prefixSet(a), prefixSet(b)
	return slices.Equal(pa, pb)
}

func prefixSet(nets []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		ip = ip.Unmap()
		if ip.Is4() && len(n.Mask) == net.IPv6len {
			ones -= 96
		}
		out = append(out, netip.PrefixFrom(ip, ones).Masked())
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return slices.Compact(out)
}
