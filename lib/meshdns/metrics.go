package meshdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg         *prometheus.Registry
	syncSeconds prometheus.Histogram
	syncErrors  prometheus.Counter
	clusters    prometheus.Gauge
	warnings    prometheus.Gauge
	writes      *prometheus.CounterVec
	restarts    *prometheus.CounterVec
}

// newMetrics uses a registry of its own, so that several controllers can run
// in one test process.
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kubelink_meshdns_sync_seconds",
			Help: "Duration of a sync of the mesh DNS configuration."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_meshdns_sync_errors_total",
			Help: "Syncs that failed."}),
		clusters: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_meshdns_clusters",
			Help: "Remote clusters in the Corefile (links that are Up)."}),
		warnings: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_meshdns_links_left_out",
			Help: "Links or zones left out of DNS for a reason the log names."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubelink_meshdns_writes_total",
			Help: "Writes of the CoreDNS Secret (secret) or the coredns-custom hook (hook)."}, []string{"object"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubelink_meshdns_restarts_total",
			Help: "Deployment restarts after a configuration change."}, []string{"deployment"}),
	}
	m.reg.MustRegister(m.syncSeconds, m.syncErrors, m.clusters, m.warnings, m.writes, m.restarts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// serveHTTP serves /healthz, /readyz (a first sync is done) and /metrics.
// The listener is opened here so that a taken port fails Run at once.
func (c *Controller) serveHTTP(ctx context.Context) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if c.syncs.Load() == 0 {
			http.Error(w, "not synced yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	if c.cfg.MetricsAddr == "" {
		return srv, nil
	}
	l, err := net.Listen("tcp", c.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("metrics server", "err", err)
		}
	}()
	return srv, nil
}
