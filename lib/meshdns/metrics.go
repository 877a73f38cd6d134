package meshdns

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
