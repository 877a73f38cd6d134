package broker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// runElected waits for the Lease and runs the data plane while holding it
// (lease.go: an unreachable API server neither stops nor flips it). Seeing
// another holder ends Run: the process exits and restarts as a standby, so
// no half-torn-down state lingers.
func (b *Broker) runElected(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	e := &elector{
		lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: b.cfg.Namespace, Name: b.cfg.LeaseName},
			Client:     cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: b.cfg.Identity},
		},
		id: b.cfg.Identity, leaseDuration: b.cfg.LeaseDuration, renew: b.cfg.RenewDeadline, retry: b.cfg.RetryPeriod,
		now: time.Now, log: b.log,
		onNewHolder: func(id string) {
			if id == b.cfg.Identity {
				return
			}
			b.log.Info("standby: another broker is active", "active", id)
			// Only a standby: the active broker sees a new holder too (a
			// takeover) while its own sync may still use the device.
			if b.cfg.Mode != ModeWireGuard || b.active.Load() {
				return
			}
			if removed, err := removeStaleDevice(b.cfg.Interface, id); err != nil {
				b.log.Error("standby: a WireGuard device left by a crashed broker could not be removed; it may pull the peers' traffic to this node", "device", b.cfg.Interface, "err", err)
			} else if removed {
				b.log.Warn("standby: removed the kernel WireGuard device a crashed broker left here, so that it stops sending as the active gateway", "device", b.cfg.Interface, "active", id)
			}
		},
		onUnconfirmed: func(since time.Time) {
			b.metrics.leaseUnconfirmed.Set(1)
			b.log.Warn("the lease cannot be renewed (API server unreachable?): keeping the data plane; stepping down only when another broker holds the lease",
				"lease", b.cfg.LeaseName, "lastRenewal", since.Format(time.RFC3339))
		},
		onReconfirmed: func(since time.Time) {
			b.metrics.leaseUnconfirmed.Set(0)
			b.log.Info("the lease is renewed again", "lease", b.cfg.LeaseName, "unrenewedFor", time.Since(since).Round(time.Second).String())
		},
	}
	if b.endpoint != nil {
		// The EndpointSlice is written only while the Lease is confirmed.
		b.endpoint.leaseFresh = func() (time.Time, bool) { return e.confirmedUntil(b.cfg.RenewDeadline) }
	}
	b.log.Info("waiting for the lease", "lease", b.cfg.LeaseName, "identity", b.cfg.Identity)
	if err := e.acquire(ctx); err != nil {
		return nil // shutdown while standby
	}
	b.log.Info("acquired the lease: this broker is active", "lease", b.cfg.LeaseName, "identity", b.cfg.Identity, "epoch", e.epoch)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	held := make(chan error, 1)
	go func() { held <- e.hold(actx) }()
	if e.tookFrom != "" {
		// The previous holder let the lease expire, perhaps only because
		// its node lost the API server: it stops before this broker opens
		// the data plane (fence.go). The lease is renewed meanwhile.
		b.fencePrevious(actx, e)
	}
	fences := make(chan fenced, 1)
	conn := b.listenFence()
	closeFence := func() {
		if conn != nil {
			_ = conn.Close()
		}
	}
	defer closeFence()
	if conn != nil {
		key := func() ([]byte, error) {
			kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.RenewDeadline)
			defer kcancel()
			return b.fenceSecret(kctx)
		}
		go serveFence(conn, key, b.cfg.LeaseName, b.cfg.Identity, e.acquired, fences, b.log)
	}
	ran := make(chan error, 1)
	go func() { ran <- b.runActive(actx) }()
	var runErr, holdErr error
	select {
	case runErr = <-ran:
		cancel()
		holdErr = <-held
	case holdErr = <-held:
		cancel()
		runErr = <-ran
	case f := <-fences:
		// Another broker took the lease while this one could not renew
		// it: stop sending first, then say so, then leave.
		b.log.Warn("fenced: another broker took the lease; stopping the data plane", "active", f.req.Sender, "epoch", f.req.Epoch, "ownEpoch", e.epoch)
		cancel()
		<-ran
		<-held
		f.ack()
		return fmt.Errorf("fenced by %s, which holds the lease %s since epoch %d: the data plane is stopped; exiting so that a restart joins as standby", f.req.Sender, b.cfg.LeaseName, f.req.Epoch)
	}
	// Not fenced: a new holder asking from now on is refused at once
	// rather than left waiting for an acknowledgement.
	closeFence()
	if holdErr != nil {
		return fmt.Errorf("lost the lease %s (%w): exiting so that a restart joins as standby", b.cfg.LeaseName, holdErr)
	}
	// Shutdown (or a data plane error): peers are refused rather than
	// left in silence, and the lease is handed over at once.
	b.clearEndpoint(ctx)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.RenewDeadline)
	defer rcancel()
	e.release(rctx)
	return runErr
}

// fenceAddr is where this broker listens for fence requests while active:
// its pod IP in pod mode, else the node's, which is also what it publishes
// as the gateway (status.gatewayPod, status.gateway).
func (b *Broker) fenceAddr() netip.Addr {
	if b.rm.PodMode {
		return b.rm.PodIP
	}
	return b.rm.NodeIP
}

// fencing: the fence is on (--fence-port), and there is a data plane to stop.
func (b *Broker) fencing() bool { return b.cfg.FencePort != 0 && b.cfg.Mode != ModeNone }

// listenFence opens the fence listener; nil when off or failed (logged:
// a standby taking over then starts after fenceWait without the stop).
func (b *Broker) listenFence() *net.UDPConn {
	if !b.fencing() {
		return nil
	}
	addr := netip.AddrPortFrom(b.fenceAddr(), uint16(b.cfg.FencePort))
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		b.log.Error("fence listener: a standby that takes over while this broker is cut off from the API server cannot stop it, so both may carry traffic for a while", "addr", addr, "err", err)
		return nil
	}
	return conn
}

// fencePrevious asks the previous holder, at the gateway addresses its
// served LocalLinks publish, to stop, and waits for it at most
// --fence-wait (all addresses at once). It logs the outcome; the data
// plane opens in any case.
func (b *Broker) fencePrevious(ctx context.Context, e *elector) {
	if !b.fencing() {
		return
	}
	previous := e.tookFrom
	key, err := b.fenceSecret(ctx)
	if err != nil {
		b.log.Warn("fence: no key; the previous holder is not told to stop", "previous", previous, "err", err)
		return
	}
	var links v1alpha1.KubeLinkList
	if err := b.kube.List(ctx, &links); err != nil {
		b.log.Warn("fence: listing the LocalLinks for the previous gateway", "previous", previous, "err", err)
		return
	}
	seen := map[netip.Addr]bool{b.fenceAddr(): true}
	var wg sync.WaitGroup
	for _, kl := range b.cfg.Served.Links(links.Items) {
		if kl.Spec.Endpoint != v1alpha1.EndpointLocalLink {
			continue
		}
		gw := kl.Status.GatewayPod
		if gw == "" {
			gw = kl.Status.Gateway
		}
		ip, err := netip.ParseAddr(gw)
		if err != nil || seen[ip] {
			continue
		}
		seen[ip] = true
		req := fenceMsg{Epoch: e.epoch, TargetAcquired: e.tookAcquired.UnixMicro(), Lease: b.cfg.LeaseName, Target: previous, Sender: b.cfg.Identity}
		wg.Go(func() {
			start := time.Now()
			res, err := sendFence(ctx, netip.AddrPortFrom(ip, uint16(b.cfg.FencePort)), req, key, b.cfg.FenceWait)
			took := time.Since(start).Round(time.Millisecond).String()
			switch {
			case err != nil:
				b.log.Warn("fence: could not ask the previous holder to stop", "previous", previous, "gateway", ip, "err", err)
			case res == fenceAcked:
				b.log.Info("fence: the previous holder stopped its data plane", "previous", previous, "gateway", ip, "after", took)
			default:
				b.log.Warn("fence: the previous holder did not answer (gone, or not listening); taking over", "previous", previous, "gateway", ip, "result", res.String(), "after", took)
			}
		})
	}
	wg.Wait()
}
