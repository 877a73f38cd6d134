package broker

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// runElected waits for the Lease and runs the data plane while holding it.
// Losing the Lease ends Run: the process exits and restarts as a standby, so
// no half-torn-down state lingers.
func (b *Broker) runElected(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: b.cfg.Namespace, Name: b.cfg.LeaseName},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: b.cfg.Identity},
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var runErr error
	lost := false
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: b.cfg.LeaseName,
		LeaseDuration: b.cfg.LeaseDuration, RenewDeadline: b.cfg.RenewDeadline, RetryPeriod: b.cfg.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				b.log.Info("acquired the lease: this broker is active", "lease", b.cfg.LeaseName, "identity", b.cfg.Identity)
				runErr = b.runActive(ctx)
				cancel()
			},
			OnStoppedLeading: func() { lost = true; cancel() },
			OnNewLeader: func(id string) {
				if id != b.cfg.Identity {
					b.log.Info("standby: another broker is active", "active", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	if runErr != nil {
		return runErr
	}
	if parent.Err() != nil {
		return nil // shutdown, not a lost lease
	}
	if lost {
		return fmt.Errorf("lost the lease %s: exiting so that a restart joins as standby", b.cfg.LeaseName)
	}
	return nil
}
