package mcs

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg        *prometheus.Registry
	exports    *prometheus.GaugeVec
	imports    prometheus.Gauge
	conflicts  prometheus.Gauge
	syncErrors prometheus.Counter
}

// newMetrics uses a registry of its own, so that several controllers can run
// in one test process.
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		exports: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_mcs_exports",
			Help: "ServiceExports of this cluster by their Valid condition (valid: True, invalid: False; the condition's reason says why)."}, []string{"valid"}),
		imports: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_mcs_imports",
			Help: "ServiceImports of type ClusterSetIP this cluster holds (names exported by a cluster of the mesh, this one included)."}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_mcs_conflicts",
			Help: "This cluster's exports whose name another cluster exports differently (Conflict True on the ServiceExport; the oldest export wins)."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_mcs_sync_errors_total",
			Help: "Passes that failed (the log says why)."}),
	}
	m.reg.MustRegister(m.exports, m.imports, m.conflicts, m.syncErrors, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
