package meshdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mesh"
)

// Controller keeps the kubelink CoreDNS configuration in line with the
// KubeLinks: a level-triggered loop that runs on every change of a KubeLink
// or of its Corefile Secret, and periodically.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	api     client.Client // direct reads and writes: always the latest state
	cache   cache.Cache   // KubeLinks and Secret metadata, for change events
	loop    *kubeflags.Loop
	metrics *metrics

	syncs        atomic.Int64 // completed syncs, for tests and /readyz
	lastWarnings string

	// access holds the resourceVersion of each apiAccess Secret read by the
	// last sync (kubernetes mode); pollAccess re-reads them to notice a
	// rotated token without a watch on every Secret of their namespaces.
	accessMu sync.Mutex
	access   map[client.ObjectKey]string
}

// New prepares a controller; Run starts it.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1alpha1.AddToScheme(scheme)); err != nil {
		return nil, err
	}
	c, err := cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		// Only the Corefile Secret, selected by name so that RBAC can grant
		// list and watch by resourceNames. apiAccess Secrets are read on
		// every sync and picked up by the periodic resync: watching them
		// would need list and watch on every Secret of their namespaces.
		&metav1.PartialObjectMetadata{TypeMeta: secretMeta}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}},
			Field: fields.OneTermEqualSelector("metadata.name", cfg.Secret)},
	}})
	if err != nil {
		return nil, fmt.Errorf("creating cache: %w", err)
	}
	api, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return &Controller{cfg: cfg, log: log, api: api, cache: c, loop: kubeflags.NewLoop(), metrics: newMetrics()}, nil
}

var secretMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}

// Run serves until ctx ends. With --dns-propagation=none it only serves
// /healthz and /metrics and writes nothing.
func (c *Controller) Run(ctx context.Context) error {
	srv, err := kubeflags.ServeHealth(ctx, c.cfg.MetricsAddr, c.metrics.reg, func() error {
		if c.syncs.Load() == 0 {
			return errors.New("not synced yet")
		}
		return nil
	}, c.log)
	if err != nil {
		return err
	}
	defer srv.Close()
	if c.cfg.Mode == ModeNone {
		c.log.Info("DNS propagation is off (--dns-propagation=none); writing nothing")
		c.syncs.Add(1)
		<-ctx.Done()
		return nil
	}
	if err := kubeflags.WatchAndSyncFiltered(ctx, c.cache, c.kick,
		kubeflags.Watch{Object: &v1alpha1.KubeLink{}, Relevant: kubeflags.KubeLinkChangedBeyondHealth},
		kubeflags.Watch{Object: &metav1.PartialObjectMetadata{TypeMeta: secretMeta}}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if c.cfg.Mode == ModeKubernetes {
		go c.pollAccess(ctx)
	}
	c.log.Info("mesh DNS running", "mode", c.cfg.Mode, "secret", c.cfg.Namespace+"/"+c.cfg.Secret,
		"deployment", c.cfg.Deployment, "configureClusterDNS", c.cfg.Configure)
	c.loop.Run(ctx, c.cfg.Resync, func(ctx context.Context) time.Duration {
		start := time.Now()
		if err := c.sync(ctx); err != nil && ctx.Err() == nil {
			c.metrics.syncErrors.Inc()
			c.log.Error("sync", "err", err)
		}
		c.metrics.syncSeconds.Observe(time.Since(start).Seconds())
		c.syncs.Add(1)
		return 0
	})
	return nil
}

func (c *Controller) kick() { c.loop.Kick() }

// sync renders the configuration from the current KubeLinks and applies it.
func (c *Controller) sync(ctx context.Context) error {
	var list v1alpha1.KubeLinkList
	if err := c.cache.List(ctx, &list); err != nil {
		return fmt.Errorf("listing KubeLinks: %w", err)
	}
	m := mesh.Build(list.Items, mesh.ParseOptions{Reserved: mesh.ReservedNetworks(c.cfg.NodeCIDR, c.cfg.PodCIDR)})
	opts := InputOptions{Mode: c.cfg.Mode, ClusterName: c.cfg.ClusterName, ClusterDomain: c.cfg.ClusterDomain, DNS: c.cfg.DNSServiceIP,
		LinkGate: c.cfg.LinkGate, ClusterSetZone: c.cfg.ClusterSetZone}
	if c.cfg.Mode == ModeKubernetes {
		opts.Credentials, opts.CredentialErrors = c.credentials(ctx, m, list.Items)
	}
	in, warnings := BuildInput(m, list.Items, opts)
	out, err := Render(in)
	if err != nil {
		return fmt.Errorf("rendering the Corefile: %w", err)
	}
	c.reportWarnings(append(warnings, out.Warnings...))
	c.metrics.clusters.Set(float64(countClusters(in)))

	var errs []error
	changed, err := c.applySecret(ctx, out)
	if err != nil {
		errs = append(errs, err)
	} else if err := c.restartKubelinkDNS(ctx, contentHash(out)); err != nil {
		errs = append(errs, err)
	} else if changed {
		c.log.Info("kubelink CoreDNS configuration changed", "clusters", countClusters(in))
	}
	if c.cfg.Configure {
		errs = append(errs, c.applyHook(ctx, in.Meshes))
	}
	return errors.Join(errs...)
}

// credentials reads the apiAccess Secrets of the accepted links that are Up.
func (c *Controller) credentials(ctx context.Context, m *mesh.Model, links []v1alpha1.KubeLink) (map[string]Credentials, map[string]error) {
	creds, errs := map[string]Credentials{}, map[string]error{}
	seen := map[client.ObjectKey]string{}
	defer func() {
		c.accessMu.Lock()
		c.access = seen
		c.accessMu.Unlock()
	}()
	for i := range links {
		kl := &links[i]
		l, ok := m.Link(kl.Name)
		if !ok || l.APIAccess == nil || kl.Status.State != v1alpha1.StateUp {
			continue
		}
		ns := l.APIAccess.Namespace
		if ns == "" {
			ns = c.cfg.Namespace
		}
		var s corev1.Secret
		key := client.ObjectKey{Namespace: ns, Name: l.APIAccess.Name}
		if err := c.api.Get(ctx, key, &s); err != nil {
			seen[key] = ""
			errs[kl.Name] = fmt.Errorf("secret %s/%s: %w", ns, l.APIAccess.Name, err)
			if apierrors.IsForbidden(err) {
				errs[kl.Name] = fmt.Errorf("secret %s/%s: %w (grant kubelink-meshdns get on this Secret by name: docs/dns.md, \"What a user applies\")", ns, l.APIAccess.Name, err)
			}
			continue
		}
		seen[key] = s.ResourceVersion
		cr, err := ParseCredentials(s.Data)
		if err != nil {
			errs[kl.Name] = fmt.Errorf("secret %s/%s: %w", ns, l.APIAccess.Name, err)
			continue
		}
		creds[kl.Name] = cr
	}
	return creds, errs
}

// pollAccess re-reads the apiAccess Secrets of the last sync every
// Config.AccessPoll and starts a sync when one changed (or appeared or
// went), until ctx ends.
func (c *Controller) pollAccess(ctx context.Context) {
	tick := time.NewTicker(c.cfg.AccessPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c.accessMu.Lock()
		last := maps.Clone(c.access)
		c.accessMu.Unlock()
		for key, rv := range last {
			var s corev1.Secret
			now := ""
			if err := c.api.Get(ctx, key, &s); err == nil {
				now = s.ResourceVersion
			}
			if now != rv {
				c.kick()
				break
			}
		}
	}
}

// reportWarnings logs why links are left out, once per change rather than
// on every resync.
func (c *Controller) reportWarnings(ws []string) {
	c.metrics.warnings.Set(float64(len(ws)))
	joined := strings.Join(ws, "\n")
	if joined == c.lastWarnings {
		return
	}
	c.lastWarnings = joined
	for _, w := range ws {
		c.log.Warn("mesh DNS", "problem", w)
	}
}

func countClusters(in Input) int {
	n := 0
	for _, m := range in.Meshes {
		if !m.Omit {
			n += len(m.Clusters)
		}
	}
	return n
}
