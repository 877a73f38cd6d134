package broker

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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
	b.log.Info("acquired the lease: this broker is active", "lease", b.cfg.LeaseName, "identity", b.cfg.Identity)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	held := make(chan error, 1)
	go func() { held <- e.hold(actx) }()
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
	}
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
