package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

// Broker is the gateway controller.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	rm      RunMode
	kube    client.Client // reads from the cache, writes to the API server
	cache   cache.Cache
	events  *eventSink
	metrics *metrics
	loop    *kubeflags.Loop
	// newPlane opens the data plane of --mode (the registry's; tests
	// give a fake).
	newPlane PlaneFactory
	plane    DataPlane // while active
	prober   *probe.Prober
	resp     map[netip.Addr]*probe.Responder

	active    atomic.Bool
	synced    atomic.Bool
	lastWrite map[string]time.Time
}

// New prepares a broker; Run starts it.
func New(cfg Config, rest *rest.Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rm, err := DetectRunMode(&cfg, netInterfaces)
	if err != nil {
		return nil, err
	}
	scheme := v1alpha1.NewScheme()
	c, err := cache.New(rest, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}},
			Field: fields.OneTermEqualSelector("metadata.name", cfg.Secret)},
	}})
	if err != nil {
		return nil, fmt.Errorf("creating cache: %w", err)
	}
	kube, err := client.New(rest, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	events, err := newEventSink(rest, scheme, "kubelink-broker", cfg.Identity)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: log, rm: rm, kube: kube, cache: c, events: events, metrics: newMetrics(),
		loop: kubeflags.NewLoop(), resp: map[netip.Addr]*probe.Responder{}, lastWrite: map[string]time.Time{}}
	log.Info("broker configured", "podMode", rm.PodMode, "nodeIP", rm.NodeIP, "interface", rm.Interface, "mode", cfg.Mode)
	return b, nil
}

// Run serves until ctx ends: cache, metrics, leader election, then the sync
// loop while active.
func (b *Broker) Run(ctx context.Context, rest *rest.Config) error {
	defer b.events.shutdown()
	if err := kubeflags.WatchAndSync(ctx, b.cache, b.kick,
		&v1alpha1.KubeLink{}, &corev1.Secret{}, &v1alpha1.MeshService{}, &corev1.Service{}); err != nil {
		return err
	}
	// Readiness follows the Lease: a Service selecting ready brokers follows
	// the active one. A taken metrics port is logged, not fatal.
	srv, err := kubeflags.ServeHealth(ctx, b.cfg.MetricsAddr, b.metrics.reg, func() error {
		if !b.active.Load() || !b.synced.Load() {
			return errors.New("standby: not the active broker")
		}
		return nil
	}, b.log)
	if err != nil {
		b.log.Error("metrics listener", "addr", b.cfg.MetricsAddr, "err", err)
	}
	defer srv.Close()
	if !b.cfg.LeaderElect {
		return b.runActive(ctx)
	}
	return b.runElected(ctx, rest)
}

func (b *Broker) kick() { b.loop.Kick() }

// runActive owns the data plane until ctx ends.
func (b *Broker) runActive(ctx context.Context) error {
	b.active.Store(true)
	b.metrics.leader.Set(1)
	defer func() {
		b.active.Store(false)
		b.metrics.leader.Set(0)
	}()
	var unknown func(*mesh.Mesh, bridge.UnknownPeer) error
	if b.cfg.AutoConnect {
		unknown = b.autoConnect
	}
	newPlane := b.newPlane
	if newPlane == nil {
		newPlane = func(ctx context.Context, d PlaneDeps) (DataPlane, error) { return openPlane(ctx, b.cfg.Mode, d) }
	}
	p, err := newPlane(ctx, PlaneDeps{Config: &b.cfg, RunMode: b.rm, Log: b.log, Kick: b.kick,
		PrivateKey: b.privateKey, Unknown: unknown, Metrics: b.metrics.reg})
	if err != nil {
		return err
	}
	b.plane = p
	defer func() {
		p.Close()
		b.plane = nil
	}()
	b.prober = probe.New(probe.Config{Interval: b.cfg.ProbeInterval, DownAfter: b.cfg.ProbeDownAfter, Port: b.cfg.ProbePort,
		SourcePort: int(mesh.ProbeReplyPort(b.cfg.ProbePort)),
		OnChange:   func(netip.Addr, probe.Result) { b.kick() }})
	defer b.prober.Close()
	defer b.closeResponders(nil)

	b.loop.Run(ctx, b.cfg.Resync, func(ctx context.Context) time.Duration {
		start := time.Now()
		if err := b.sync(ctx); err != nil {
			b.metrics.reconcileErrors.Inc()
			b.log.Error("sync", "err", err)
		}
		b.metrics.syncSeconds.Observe(time.Since(start).Seconds())
		b.synced.Store(true)
		return 0
	})
	return nil
}

// privateKey reads the WireGuard key from the Secret (either spelling).
func (b *Broker) privateKey(ctx context.Context) (mesh.Key, error) {
	var s corev1.Secret
	err := b.kube.Get(ctx, client.ObjectKey{Namespace: b.cfg.Namespace, Name: b.cfg.Secret}, &s)
	if apierrors.IsNotFound(err) {
		return mesh.Key{}, fmt.Errorf("private key: Secret %s/%s not found", b.cfg.Namespace, b.cfg.Secret)
	}
	if err != nil {
		return mesh.Key{}, fmt.Errorf("private key: reading Secret %s/%s: %w", b.cfg.Namespace, b.cfg.Secret, err)
	}
	for _, k := range []string{v1alpha1.SecretKeyWireguardPrivateKey, v1alpha1.SecretKeyWireGuardPrivateKey} {
		if v, ok := s.Data[k]; ok {
			key, err := mesh.ParseKey(string(trimSpace(v)))
			if err != nil {
				return mesh.Key{}, fmt.Errorf("private key: Secret %s/%s key %s: %w", b.cfg.Namespace, b.cfg.Secret, k, err)
			}
			return key, nil
		}
	}
	return mesh.Key{}, fmt.Errorf("private key: Secret %s/%s has no key %s (or %s)", b.cfg.Namespace, b.cfg.Secret,
		v1alpha1.SecretKeyWireguardPrivateKey, v1alpha1.SecretKeyWireGuardPrivateKey)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
