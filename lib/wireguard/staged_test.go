package wireguard

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

func TestSessionlessAfterGrace(t *testing.T) {
	k := func(b byte) device.NoisePublicKey { var pk device.NoisePublicKey; pk[0] = b; return pk }
	dump := func(now time.Time, hs map[byte]int64) *bytes.Buffer {
		var b bytes.Buffer
		b.WriteString("private_key=00\nlisten_port=1\n")
		for _, id := range []byte{1, 2, 3} {
			if h, ok := hs[id]; ok {
				pk := k(id)
				fmt.Fprintf(&b, "public_key=%s\nendpoint=127.0.0.1:9\nlast_handshake_time_sec=%d\nlast_handshake_time_nsec=0\nallowed_ip=10.0.0.%d/32\n", hex.EncodeToString(pk[:]), h, id)
			}
		}
		return &b
	}
	t0 := time.Unix(1_000_000, 0)
	since := map[device.NoisePublicKey]time.Time{}
	// 1: never a handshake; 2: a fresh one; 3: one older than RejectAfterTime.
	hs := map[byte]int64{1: 0, 2: t0.Unix() - 10, 3: t0.Add(-rejectAfter - time.Second).Unix()}
	got, live := readSessions(dump(t0, hs), t0, since)
	if len(got) != 0 {
		t.Errorf("at first sight: %v, want none (grace)", got)
	}
	if len(live) != 1 || !live[k(2)] {
		t.Errorf("with a session: %v, want peer 2", live)
	}
	got, _ = readSessions(dump(t0, hs), t0.Add(stagedGrace), since)
	if len(got) != 2 || !got[k(1)] || !got[k(3)] {
		t.Errorf("after the grace: %v, want peers 1 and 3", got)
	}
	// 1 completes a handshake; 3 is removed: both forgotten.
	hs = map[byte]int64{1: t0.Add(stagedGrace).Unix(), 2: t0.Unix()}
	got, live = readSessions(dump(t0, hs), t0.Add(stagedGrace+time.Second), since)
	if len(got) != 0 || len(since) != 0 {
		t.Errorf("after 1's handshake and 3's removal: %v (remembered %v), want none", got, since)
	}
	if len(live) != 2 || !live[k(1)] || !live[k(2)] {
		t.Errorf("with a session after 1's handshake: %v, want peers 1 and 2", live)
	}
}

// A dead peer's queued packets do not pile up in the broker's memory: 400
// packets to a peer that never answers, over 8 s, leave less than 4 MiB
// more heap in use; without the trimming wireguard-go keeps the last 128,
// 64 KiB each (8 MiB), for 90 s.
func TestDeadPeerHoldsNoQueuedPackets(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "dead")
	name := nstest.UniqueName("wg")
	priv, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var d *Device
	if err := ns.Do(func() (err error) { d, err = Open(Options{Name: name, Mode: ModeUserspace, ListenPort: 51830}); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	ns.Run(t, "ip", "addr", "add", "192.168.78.1/24", "dev", name)
	ns.Run(t, "ip", "link", "set", name, "up")
	deadKey, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	// The peer's endpoint is a closed port on the namespace's loopback.
	dead := ResolvedPeer{Peer: mesh.Peer{PublicKey: PublicKey(deadKey), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("192.168.78.2/32")}},
		Addr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))}
	if err := d.Apply(priv, 51830, []ResolvedPeer{dead}); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		// twice: buffers back in wireguard-go's pools (sync.Pool) are
		// freed by the second collection
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	payload := make([]byte, 100)
	if err := ns.Do(func() error {
		c, err := net.Dial("udp", "192.168.78.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range 400 {
			_, _ = c.Write(payload)
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * stagedTrimEvery)
	if !d.Sessionless(PublicKey(deadKey)) {
		t.Errorf("the dead peer is not reported sessionless")
	}
	after := heap()
	if grown := int64(after) - int64(before); grown > 4<<20 {
		t.Errorf("heap in use grew by %.1f MiB after 400 packets to a dead peer, want < 4 MiB", float64(grown)/(1<<20))
	} else {
		t.Logf("heap in use grew by %.1f MiB", float64(grown)/(1<<20))
	}
}
