package mcs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/kubeflags"
)

// RecordConfigMap is the ConfigMap (in the kubelink namespace) holding this
// cluster's export record (key RecordKey): what it serves to the others.
const (
	RecordConfigMap = "kubelink-mcs-exports"
	RecordKey       = "exports.json"
)

// Config of the export controller.
type Config struct {
	Namespace   string        // of the record ConfigMap
	Resync      time.Duration // full pass period
	MetricsAddr string        // /healthz, /readyz (a pass succeeded), /metrics; empty: off
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{Namespace: "kubelink", Resync: time.Minute, MetricsAddr: ":8080"}
}

// Validate reports every invalid setting, named by its flag.
func (c Config) Validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace=%q: %s", c.Namespace, strings.Join(msgs, "; ")))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("--resync=%s: must be positive", c.Resync))
	}
	return errors.Join(errs...)
}

// Controller keeps every ServiceExport's conditions true to its Service and
// the record of the valid exports up to date: level-triggered, a pass on
// every change of a ServiceExport or a Service and every Resync.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	cache cache.Cache   // ServiceExports and Services, all namespaces
	read  client.Reader // the cache
	api   client.Client // writes
	loop  *kubeflags.Loop
	now   func() time.Time
	// lastRecord is the record written last: a pass whose record is the
	// same reads the ConfigMap again only on a periodic pass.
	lastRecord string
	// lastImports and lastAcks are the last imports read and the
	// acknowledgements made from them: a failed read keeps them.
	lastImports Imports
	lastAcks    []string
	metrics     *metrics
	goodSyncs   atomic.Int64 // passes without error, for /readyz
	// events records a Warning on a ServiceExport whose conflict begins or
	// changes (nil: none, e.g. in unit tests of a pass).
	events      record.EventRecorder
	broadcaster record.EventBroadcaster
}

// NewScheme has the built-in types and the MCS API (v1beta1).
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := mcsv1beta1.Install(s); err != nil {
		return nil, err
	}
	return s, nil
}

// New prepares a controller; Run starts it.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	c, err := cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		// the imports alone, by name (RBAC grants it by name)
		&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}},
			Field: fields.OneTermEqualSelector("metadata.name", ImportsConfigMap)},
	}})
	if err != nil {
		return nil, fmt.Errorf("mcs: creating the cache: %w", err)
	}
	api, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("mcs: creating the client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("mcs: creating the events client: %w", err)
	}
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return &Controller{cfg: cfg, log: log, cache: c, read: c, api: api, loop: kubeflags.NewLoop(), now: time.Now, metrics: newMetrics(),
		broadcaster: bc, events: bc.NewRecorder(scheme, corev1.EventSource{Component: ManagedBy})}, nil
}

// Run serves until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	srv, err := kubeflags.ServeHealth(ctx, c.cfg.MetricsAddr, c.metrics.reg, func() error {
		if c.goodSyncs.Load() == 0 {
			return errors.New("no successful pass yet")
		}
		return nil
	}, c.log)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Close() }()
	if c.broadcaster != nil {
		defer c.broadcaster.Shutdown()
	}
	if err := kubeflags.WatchAndSync(ctx, c.cache, c.loop.Kick, &mcsv1beta1.ServiceExport{}, &corev1.Service{},
		&mcsv1beta1.ServiceImport{}, &discoveryv1.EndpointSlice{}, &corev1.ConfigMap{}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.log.Info("mcs export controller running", "namespace", c.cfg.Namespace)
	var last string
	c.loop.Run(ctx, c.cfg.Resync, func(ctx context.Context) time.Duration {
		err := c.Sync(ctx)
		if ctx.Err() != nil {
			return 0 // stopping: what failed on the way out is no news
		}
		msg := ""
		if err != nil {
			msg = err.Error()
			c.metrics.syncErrors.Inc()
		} else {
			c.goodSyncs.Add(1)
		}
		if msg != last {
			if err != nil {
				c.log.Error("mcs sync", "err", err)
			} else {
				c.log.Info("mcs sync ok")
			}
			last = msg
		}
		if err != nil {
			return 5 * time.Second
		}
		return 0
	})
	return nil
}

// Sync is one pass: the conditions of every ServiceExport, then the record.
// One export's failure does not stop the others.
func (c *Controller) Sync(ctx context.Context) error {
	var list mcsv1beta1.ServiceExportList
	if err := c.read.List(ctx, &list); err != nil {
		return fmt.Errorf("listing ServiceExports: %w", err)
	}
	var rec Record
	var errs []error
	invalid := 0
	now := c.now()
	type checked struct {
		se     *mcsv1beta1.ServiceExport
		key    string
		valid  bool
		reason mcsv1beta1.ServiceExportConditionReason
		msg    string
	}
	var all []checked
	for i := range list.Items {
		se := &list.Items[i]
		if se.DeletionTimestamp != nil {
			continue
		}
		var svc *corev1.Service
		var s corev1.Service
		err := c.read.Get(ctx, client.ObjectKeyFromObject(se), &s)
		switch {
		case err == nil:
			svc = &s
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("reading Service %s/%s: %w", se.Namespace, se.Name, err))
			continue
		}
		e, reason, msg := Validate(se, svc)
		valid := reason == mcsv1beta1.ServiceExportReasonValid
		if valid {
			rec.Exports = append(rec.Exports, e)
		} else {
			invalid++
		}
		all = append(all, checked{se, se.Namespace + "/" + se.Name, valid, reason, msg})
	}
	// The peers' exports of the same names: conflicts are reported on every
	// exporting cluster (KEP-1645). Without the imports (unreadable), the
	// conditions wait; the record is still written.
	im, imErr := c.readImports(ctx)
	if imErr != nil {
		// a read that failed (an API hiccup, a broken ConfigMap) changes
		// nothing: the conditions and acknowledgements of the last good
		// imports stay, and the imports themselves are left as they are
		im = c.lastImports
	} else {
		c.lastImports = im
	}
	conflicts := conflictsOf(im.self(), rec, im)
	importedBy := importersOf(im)
	for _, ch := range all {
		var cf *conflict
		if ch.valid {
			cf = conflicts[ch.key]
		}
		if err := c.writeConditions(ctx, ch.se, ch.valid, ch.reason, ch.msg, cf, importedBy[ch.key], now); err != nil {
			errs = append(errs, err)
		}
	}
	c.metrics.conflicts.Set(float64(len(conflicts)))
	c.metrics.exports.WithLabelValues("true").Set(float64(len(rec.Exports)))
	c.metrics.exports.WithLabelValues("false").Set(float64(invalid))
	if imErr != nil {
		rec.Imported = c.lastAcks
		return errors.Join(append(errs, c.writeRecord(ctx, rec), imErr)...)
	}
	imported, acks, err := c.syncImports(ctx, rec, im)
	c.metrics.imports.Set(float64(imported))
	rec.Imported, c.lastAcks = acks, acks
	return errors.Join(append(errs, c.writeRecord(ctx, rec), err)...)
}

// importersOf lists, by namespace/name of this cluster's exports, the
// clusters whose links are Up and that acknowledged importing it.
func importersOf(im Imports) map[string][]string {
	out := map[string][]string{}
	for _, c := range im.Clusters {
		for _, key := range c.Imported {
			if !slices.Contains(out[key], c.Cluster) {
				out[key] = append(out[key], c.Cluster)
			}
		}
	}
	for _, cs := range out {
		slices.Sort(cs)
	}
	return out
}

// writeConditions sets Valid, Ready (for a valid export True once a
// cluster whose link is Up acknowledged importing it, importedBy; else
// Pending) and Conflict (cf: the
// exports of the name disagree; nil: NoConflicts) when they changed, with a
// Warning Event when a conflict begins or changes.
func (c *Controller) writeConditions(ctx context.Context, se *mcsv1beta1.ServiceExport, valid bool, reason mcsv1beta1.ServiceExportConditionReason, msg string, cf *conflict, importedBy []string, now time.Time) error {
	se = se.DeepCopy()
	status := metav1.ConditionFalse
	if valid {
		status = metav1.ConditionTrue
	}
	changed := setCondition(&se.Status.Conditions, metav1.Condition{Type: string(mcsv1beta1.ServiceExportConditionValid),
		Status: status, Reason: string(reason), Message: msg, ObservedGeneration: se.Generation}, now)
	ready := metav1.Condition{Type: string(mcsv1beta1.ServiceExportConditionReady), Status: metav1.ConditionFalse,
		Reason: string(mcsv1beta1.ServiceExportReasonPending), ObservedGeneration: se.Generation,
		Message: "in the record served to the clusters of the mesh; no cluster whose link is Up has imported it yet (a cluster imports into a namespace of the same name only)"}
	switch {
	case !valid:
		ready.Reason, ready.Message = string(mcsv1beta1.ServiceExportReasonFailed), "not exported: "+msg
	case len(importedBy) > 0:
		ready.Status, ready.Reason = metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonReady)
		ready.Message = "imported by " + strings.Join(importedBy, ", ")
	}
	changed = setCondition(&se.Status.Conditions, ready, now) || changed
	conflictCond := metav1.Condition{Type: string(mcsv1beta1.ServiceExportConditionConflict), Status: metav1.ConditionFalse,
		Reason: string(mcsv1beta1.ServiceExportReasonNoConflicts), ObservedGeneration: se.Generation,
		Message: "the exports of this name in the clusters whose links are Up agree"}
	if !valid {
		conflictCond.Message = "not exported"
	}
	if cf != nil {
		conflictCond.Status, conflictCond.Reason, conflictCond.Message = metav1.ConditionTrue, string(cf.reason), cf.message
	}
	prev := meta.FindStatusCondition(se.Status.Conditions, conflictCond.Type)
	newConflict := cf != nil && (prev == nil || prev.Status != metav1.ConditionTrue || prev.Message != cf.message)
	changed = setCondition(&se.Status.Conditions, conflictCond, now) || changed
	if !changed {
		return nil
	}
	err := c.api.Status().Update(ctx, se)
	switch {
	case apierrors.IsConflict(err):
		// The cache was behind (a pass started by a Service event):
		// again with the newer ServiceExport, no error to report.
		c.loop.Kick()
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("writing the status of ServiceExport %s/%s: %w", se.Namespace, se.Name, err)
	case err == nil && newConflict && c.events != nil:
		c.events.Event(se, corev1.EventTypeWarning, string(cf.reason), cf.message)
	}
	return nil
}

// writeRecord keeps the record ConfigMap equal to rec.
func (c *Controller) writeRecord(ctx context.Context, rec Record) error {
	data, err := rec.Encode()
	if err != nil {
		return err
	}
	if string(data) == c.lastRecord && !c.loop.Periodic() {
		return nil // a pass for a change that did not touch the record
	}
	ref := c.cfg.Namespace + "/" + RecordConfigMap
	var cm corev1.ConfigMap
	err = c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: RecordConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: RecordConfigMap,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-mcs"}},
			Data: map[string]string{RecordKey: string(data)}}
		err = c.api.Create(ctx, &cm)
	case err == nil && cm.Data[RecordKey] != string(data):
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[RecordKey] = string(data)
		err = c.api.Update(ctx, &cm)
	}
	if err != nil {
		return fmt.Errorf("writing the export record %s: %w", ref, err)
	}
	c.lastRecord = string(data)
	return nil
}
