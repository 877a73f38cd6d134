package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mcs"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

// Broker is the gateway controller.
type Broker struct {
	cfg  Config
	log  *slog.Logger
	rm   RunMode
	kube client.Client // reads from the cache, writes to the API server
	// direct reads from the API server: the ConfigMaps of the MCS
	// exchange, by name (a cached read would list every ConfigMap).
	direct  client.Client
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
	// mcs exchanges the Multi-Cluster Services export records with the
	// Up peers while active (nil: --mcs-port=0 or standby).
	mcs *mcs.Exchange

	active    atomic.Bool
	synced    atomic.Bool
	lastWrite map[string]time.Time
	// deprecated: the links warned about spec.presharedKey, by name, with
	// the generation warned about (one Event per change of the spec).
	deprecated map[string]int64
	// health writes the figures-only status updates while active.
	health *healthWriter

	// endpoint writes the Service's EndpointSlice while active
	// (--active-endpoint-slice); nil when off.
	endpoint    *endpointPublisher
	endpointErr string // the last publishing error logged ("none": published)
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
	scheme := kubeflags.NewScheme()
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
	direct, err := client.New(rest, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	events, err := newEventSink(rest, scheme, "kubelink-broker", cfg.Identity)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: log, rm: rm, kube: kube, direct: direct, cache: c, events: events, metrics: newMetrics(),
		loop: kubeflags.NewLoop(), resp: map[netip.Addr]*probe.Responder{}, lastWrite: map[string]time.Time{}}
	if cfg.ActiveEndpointSlice != "" {
		cs, err := kubernetes.NewForConfig(rest)
		if err != nil {
			return nil, err
		}
		b.endpoint = &endpointPublisher{
			slices: cs.DiscoveryV1().EndpointSlices(cfg.Namespace), namespace: cfg.Namespace,
			name: cfg.ActiveEndpointSlice, service: cfg.ActiveService, serviceUID: b.serviceUID,
			podIP: cfg.PodIP, podName: cfg.PodName, podUID: types.UID(cfg.PodUID), nodeName: cfg.NodeName,
			ports: slicePorts(&cfg), recheck: cfg.Resync, now: time.Now,
		}
	}
	log.Info("broker configured", "podMode", rm.PodMode, "nodeIP", rm.NodeIP, "interface", rm.Interface, "mode", cfg.Mode)
	return b, nil
}

// Run serves until ctx ends: cache, metrics, leader election, then the sync
// loop while active.
func (b *Broker) Run(ctx context.Context, rest *rest.Config) error {
	defer b.events.shutdown()
	// The broker writes the status of KubeLinks and MeshServices itself:
	// their status-only updates do not start another pass.
	if err := kubeflags.WatchAndSyncFiltered(ctx, b.cache, b.kick,
		kubeflags.Watch{Object: &v1alpha1.KubeLink{}, Relevant: kubeflags.SpecChanged},
		kubeflags.Watch{Object: &corev1.Secret{}},
		kubeflags.Watch{Object: &v1alpha1.MeshService{}, Relevant: kubeflags.SpecChanged},
		kubeflags.Watch{Object: &corev1.Service{}, Relevant: kubeflags.ServiceChanged}); err != nil {
		return err
	}
	// /activez: this broker holds the Lease and its data plane is synced.
	// /readyz is the same where a Service selects Ready brokers (so it
	// follows the active one); with --active-endpoint-slice the active
	// broker points the Service at itself, and every replica whose caches
	// synced is Ready. A taken metrics port is logged, not fatal.
	activez := func() error {
		if !b.active.Load() || !b.synced.Load() {
			return errors.New("standby: not the active broker")
		}
		return nil
	}
	readyz := activez
	if b.endpoint != nil {
		readyz = func() error { return nil }
	}
	srv, err := kubeflags.ServeHealth(ctx, b.cfg.MetricsAddr, b.metrics.reg, readyz, b.log,
		kubeflags.Check{Path: "/activez", Check: activez})
	if err != nil {
		b.log.Error("metrics listener", "addr", b.cfg.MetricsAddr, "err", err)
	}
	defer srv.Close()
	if !b.cfg.LeaderElect {
		err := b.runActive(ctx)
		b.clearEndpoint(ctx)
		return err
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
	pc := probe.Config{Interval: b.cfg.ProbeInterval, DownAfter: b.cfg.ProbeDownAfter, Port: b.cfg.ProbePort,
		SourcePort: int(mesh.ProbeReplyPort(b.cfg.ProbePort)),
		OnChange:   func(netip.Addr, probe.Result) { b.kick() }}
	// The embedded WireGuard holds the probes of peers without a session
	// (each would wait in a 64 KiB buffer): issue #33.
	if h, ok := p.(interface{ HoldProbe(netip.Addr) bool }); ok {
		pc.Hold = h.HoldProbe
	}
	b.prober = probe.New(pc)
	defer b.prober.Close()
	defer b.closeResponders(nil)

	if b.cfg.MCSPort != 0 {
		b.mcs = mcs.NewExchange(mcs.ExchangeConfig{Namespace: b.cfg.Namespace, Port: b.cfg.MCSPort}, b.direct, b.log.With("component", "mcs"))
		var exchanging sync.WaitGroup
		exchanging.Go(func() { b.mcs.Run(ctx) })
		defer func() {
			exchanging.Wait()
			b.mcs = nil
		}()
	}

	b.health = newHealthWriter(b.kube, b.log)
	var writing sync.WaitGroup
	writing.Go(func() { b.health.run(ctx) })
	defer func() {
		writing.Wait()
		b.health = nil
	}()

	// The EndpointSlice is published beside the sync loop, once the data
	// plane had its first sync: its retries cost no sync pass.
	firstSync := make(chan struct{})
	var once sync.Once
	var publishing sync.WaitGroup
	if b.endpoint != nil {
		publishing.Go(func() { b.publishLoop(ctx, firstSync) })
	}
	defer publishing.Wait()
	b.loop.Run(ctx, b.cfg.Resync, func(ctx context.Context) time.Duration {
		start := time.Now()
		if err := b.sync(ctx); err != nil {
			b.metrics.reconcileErrors.Inc()
			b.log.Error("sync", "err", err)
		}
		b.metrics.syncSeconds.Observe(time.Since(start).Seconds())
		b.synced.Store(true)
		once.Do(func() { close(firstSync) })
		return 0
	})
	return nil
}

// publishLoop keeps the Service's EndpointSlice pointed at this broker
// from the first sync until ctx ends: every second it checks whether a
// write or a read-back is due (ensure: at first, after a failure, every
// --resync).
func (b *Broker) publishLoop(ctx context.Context, firstSync <-chan struct{}) {
	select {
	case <-ctx.Done():
		return
	case <-firstSync:
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		b.publishEndpoint(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishEndpoint points the Service's EndpointSlice at this broker (a
// failure is logged when it changes, and tried again by the next call).
func (b *Broker) publishEndpoint(ctx context.Context) {
	err := b.endpoint.ensure(ctx)
	if err == nil {
		b.metrics.endpointPublished.Set(1)
		if b.endpointErr != "none" {
			b.log.Info("the Service's EndpointSlice points at this broker", "endpointSlice", b.cfg.ActiveEndpointSlice, "podIP", b.cfg.PodIP)
		}
		b.endpointErr = "none"
		return
	}
	b.metrics.endpointPublished.Set(0)
	if ctx.Err() != nil {
		return
	}
	if err.Error() != b.endpointErr {
		b.log.Warn("the Service's EndpointSlice could not be pointed at this broker; peers still reach the previous endpoint", "endpointSlice", b.cfg.ActiveEndpointSlice, "err", err)
		b.endpointErr = err.Error()
	}
}

// clearEndpoint marks this broker's endpoint in the Service's EndpointSlice
// terminating at a graceful stop, if the slice still points at it.
func (b *Broker) clearEndpoint(ctx context.Context) {
	if b.endpoint == nil {
		return
	}
	b.metrics.endpointPublished.Set(0)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.RenewDeadline)
	defer cancel()
	if err := b.endpoint.clear(cctx); err != nil {
		b.log.Warn("clearing the Service's EndpointSlice", "endpointSlice", b.cfg.ActiveEndpointSlice, "err", err)
	}
}

// serviceUID is the UID of --active-service (the EndpointSlice's owner).
func (b *Broker) serviceUID(ctx context.Context) (types.UID, error) {
	var s corev1.Service
	if err := b.kube.Get(ctx, client.ObjectKey{Namespace: b.cfg.Namespace, Name: b.cfg.ActiveService}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("--active-service: Service %s/%s not found (the chart creates it)", b.cfg.Namespace, b.cfg.ActiveService)
		}
		return "", fmt.Errorf("--active-service: reading Service %s/%s: %w", b.cfg.Namespace, b.cfg.ActiveService, err)
	}
	if s.Spec.Selector != nil {
		return "", fmt.Errorf("--active-service: Service %s/%s has a selector, so its endpoints are the controller's; with --active-endpoint-slice it must have none", b.cfg.Namespace, b.cfg.ActiveService)
	}
	return s.UID, nil
}

// keySecret reads the broker's key Secret (--secret) from the cache: the
// WireGuard private key and the links' preshared keys.
func (b *Broker) keySecret(ctx context.Context) (*corev1.Secret, error) {
	var s corev1.Secret
	err := b.kube.Get(ctx, client.ObjectKey{Namespace: b.cfg.Namespace, Name: b.cfg.Secret}, &s)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the key Secret %s/%s not found", b.cfg.Namespace, b.cfg.Secret)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the key Secret %s/%s: %w", b.cfg.Namespace, b.cfg.Secret, err)
	}
	return &s, nil
}

// privateKey reads the WireGuard key from the Secret (either spelling).
func (b *Broker) privateKey(ctx context.Context) (mesh.Key, error) {
	s, err := b.keySecret(ctx)
	if err != nil {
		return mesh.Key{}, fmt.Errorf("private key: %w", err)
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
