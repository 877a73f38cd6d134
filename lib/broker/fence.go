package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The fence closes the one gap the Lease leaves (lease.go): a holder cut
// off from the API server alone keeps its data plane, so when only its
// node lost the API, the standby takes over while the old holder still
// sends with the cluster's key, and the peers' endpoint (WireGuard) or
// connection (bridge) flips between the two gateways.
//
// So a standby that takes over a lease another broker let expire first
// tells that broker, over the cluster network, to stop: a fence request
// naming the holding period it ended (the old holder's identity and
// acquireTime in the Lease). The old holder stops its data plane, then
// acknowledges, and exits to restart as standby; only then does the new
// holder open its data plane. The peers see one move of the gateway. A
// holder that cannot be reached (its node is gone) or has no fence
// listener is not waited for long: ECONNREFUSED ends the wait at once,
// silence after --fence-wait.
//
// Requests and acknowledgements carry an HMAC keyed from the secret only
// the cluster's brokers share (the WireGuard private key; in bridge mode
// without one, the bridge's TLS key), so no pod of the cluster can stop
// the active broker; a request names one holding period, which the
// takeover ended, so no recorded request stops a later holder.

const (
	fenceMagic   = "KLFENCE1"
	fenceRequest = 1
	fenceAck     = 2
	fenceNonce   = 16
	fenceMAC     = sha256.Size
	fenceMinLen  = len(fenceMagic) + 1 + 8 + 8 + 3 + fenceNonce + fenceMAC
	// fenceResend is how often a new holder asks again while it waits.
	fenceResend = 100 * time.Millisecond
)

// fenceMsg is a fence request (Sender took Lease over, at Epoch, from
// Target, which had acquired it at TargetAcquired) or its acknowledgement
// by Target.
type fenceMsg struct {
	Kind           byte
	Epoch          uint64 // the new holding period's leaderTransitions (for the logs)
	TargetAcquired int64  // the old holding period's acquireTime, Unix microseconds
	Lease          string
	Target         string // the holder told to stop
	Sender         string // the new holder
	Nonce          [fenceNonce]byte
}

// deriveFenceKey turns the cluster's shared secret into the MAC key, so
// the secret itself is never used for anything but its own purpose.
func deriveFenceKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("kubelink lease fence v1"))
	return m.Sum(nil)
}

// marshal encodes m with its MAC under key.
func (m fenceMsg) marshal(key []byte) ([]byte, error) {
	b := []byte(fenceMagic)
	b = append(b, m.Kind)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(m.TargetAcquired))
	for _, s := range []string{m.Lease, m.Target, m.Sender} {
		if len(s) > 255 {
			return nil, fmt.Errorf("fence: %q is longer than 255 bytes", s)
		}
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	b = append(b, m.Nonce[:]...)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b), nil
}

var errFenceMAC = errors.New("fence: bad MAC (not from a broker of this cluster)")

// parseFence decodes and authenticates a message.
func parseFence(b, key []byte) (fenceMsg, error) {
	var m fenceMsg
	if !looksLikeFence(b) {
		return m, errors.New("fence: not a fence message")
	}
	body, sum := b[:len(b)-fenceMAC], b[len(b)-fenceMAC:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return m, errFenceMAC
	}
	r := body[len(fenceMagic):]
	m.Kind, m.Epoch, m.TargetAcquired, r = r[0], binary.BigEndian.Uint64(r[1:9]), int64(binary.BigEndian.Uint64(r[9:17])), r[17:]
	for _, s := range []*string{&m.Lease, &m.Target, &m.Sender} {
		if len(r) < 1 || len(r) < 1+int(r[0]) {
			return m, errors.New("fence: truncated")
		}
		*s, r = string(r[1:1+int(r[0])]), r[1+int(r[0]):]
	}
	if len(r) != fenceNonce {
		return m, errors.New("fence: truncated")
	}
	copy(m.Nonce[:], r)
	if m.Kind != fenceRequest && m.Kind != fenceAck {
		return m, fmt.Errorf("fence: unknown kind %d", m.Kind)
	}
	return m, nil
}

// looksLikeFence is the cheap check before any key is read.
func looksLikeFence(b []byte) bool {
	return len(b) >= fenceMinLen && string(b[:len(fenceMagic)]) == fenceMagic
}

// fenceFor says whether req tells the holder of lease, id, which acquired
// it at acquired, to stop: a request for exactly this holding period.
func fenceFor(req fenceMsg, lease, id string, acquired time.Time) error {
	switch {
	case req.Kind != fenceRequest:
		return errors.New("not a request")
	case req.Lease != lease:
		return fmt.Errorf("for lease %q, this broker holds %q", req.Lease, lease)
	case req.Target != id:
		return fmt.Errorf("for %q, this broker is %q", req.Target, id)
	case req.TargetAcquired != acquired.UnixMicro():
		return fmt.Errorf("for the holding period acquired at %s, this one was acquired at %s (a replay?)",
			time.UnixMicro(req.TargetAcquired).UTC().Format(time.RFC3339Nano), acquired.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// fenced is a valid request received by the holder; ack answers it.
type fenced struct {
	req fenceMsg
	ack func()
}

// serveFence answers fence requests on conn until it is closed: the first
// valid one goes to out (the holder stops, then calls ack); a repeat of it
// gets the acknowledgement again once there is one. Invalid datagrams are
// dropped, each reason logged once. The key is read once and again only
// when a MAC does not verify, at most once a second.
func serveFence(conn *net.UDPConn, key func() ([]byte, error), lease, id string, acquired time.Time, out chan<- fenced, log *slog.Logger) {
	buf := make([]byte, 1024)
	logged := map[string]bool{}
	once := func(msg string, args ...any) {
		if !logged[msg] {
			logged[msg] = true
			log.Warn(msg, args...)
		}
	}
	var (
		k       []byte
		keyRead time.Time
		first   *fenceMsg
		mu      sync.Mutex
		acked   []byte // the acknowledgement, once sent
	)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			once("fence: reading a request: "+err.Error(), "err", err)
			continue
		}
		if !looksLikeFence(buf[:n]) {
			once("fence: a datagram that is no fence message was ignored", "from", from)
			continue
		}
		req, err := parseFence(buf[:n], k)
		if errors.Is(err, errFenceMAC) && time.Since(keyRead) >= time.Second {
			keyRead = time.Now()
			if nk, kerr := key(); kerr != nil {
				once("fence: no key to check a request: "+kerr.Error(), "from", from, "err", kerr)
			} else {
				k = nk
				req, err = parseFence(buf[:n], k)
			}
		}
		if err == nil {
			err = fenceFor(req, lease, id, acquired)
		}
		if err != nil {
			once("fence: request ignored: "+err.Error(), "from", from, "err", err)
			continue
		}
		if first != nil {
			if req == *first {
				mu.Lock()
				if acked != nil {
					_, _ = conn.WriteToUDPAddrPort(acked, from)
				}
				mu.Unlock()
			}
			continue
		}
		first = &req
		ack := req
		ack.Kind = fenceAck
		ackKey := k
		out <- fenced{req: req, ack: func() {
			b, err := ack.marshal(ackKey)
			if err != nil {
				return
			}
			mu.Lock()
			acked = b
			mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(b, from)
		}}
	}
}

// fenceResult is how a fence ended.
type fenceResult int

const (
	fenceAcked      fenceResult = iota // the old holder stopped
	fenceRefused                       // nothing listens there: no holder runs
	fenceUnanswered                    // no answer within the wait
)

func (r fenceResult) String() string {
	return [...]string{"acknowledged", "refused", "unanswered"}[r]
}

// sendFence asks the holder at addr to stop for req and waits for its
// acknowledgement, at most wait.
func sendFence(ctx context.Context, addr netip.AddrPort, req fenceMsg, key []byte, wait time.Duration) (fenceResult, error) {
	req.Kind = fenceRequest
	if _, err := rand.Read(req.Nonce[:]); err != nil {
		return fenceUnanswered, err
	}
	b, err := req.marshal(key)
	if err != nil {
		return fenceUnanswered, err
	}
	want := req // the acknowledgement: the request, as the other kind
	want.Kind = fenceAck
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fenceUnanswered, err
	}
	defer conn.Close()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1024)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := conn.Write(b); err != nil && isRefused(err) {
			return fenceRefused, nil
		}
		tick := time.Now().Add(fenceResend)
		if tick.After(deadline) {
			tick = deadline
		}
		_ = conn.SetReadDeadline(tick)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if isRefused(err) {
					return fenceRefused, nil
				}
				// A timeout ends the tick; another error (an ICMP host
				// unreachable) waits it out rather than resending at once.
				time.Sleep(time.Until(tick))
				break
			}
			if ack, err := parseFence(buf[:n], key); err == nil && ack == want {
				return fenceAcked, nil
			}
		}
	}
	return fenceUnanswered, ctx.Err()
}

// isRefused: an ICMP port unreachable came back (nothing listens there).
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// fenceSecret is what the brokers of this cluster, and only they, share:
// the WireGuard private key (which does not change while the cluster's
// identity stands), in bridge mode without one the bridge's TLS key
// (which certwatch renews: a fence across a renewal goes unanswered).
func (b *Broker) fenceSecret(ctx context.Context) ([]byte, error) {
	k, err := b.privateKey(ctx)
	if err == nil {
		return deriveFenceKey(k[:]), nil
	}
	if b.cfg.Mode != ModeBridge {
		return nil, err
	}
	pem, ferr := os.ReadFile(filepath.Join(b.cfg.CertDir, "tls.key"))
	if ferr != nil {
		return nil, fmt.Errorf("%w; and the bridge key: %w", err, ferr)
	}
	return deriveFenceKey(pem), nil
}
