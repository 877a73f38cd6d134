package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

var allStates = []string{v1alpha1.StateInvalid, v1alpha1.StateStale, v1alpha1.StateError, v1alpha1.StateIdle,
	v1alpha1.StateUp, v1alpha1.StateDown, v1alpha1.StateDeleting}

type metrics struct {
	reg             *prometheus.Registry
	links           *prometheus.GaugeVec
	linkUp          *prometheus.GaugeVec
	rx, tx          *prometheus.GaugeVec
	rtt             *prometheus.GaugeVec
	fwDrops         *prometheus.GaugeVec
	dataPlane       *prometheus.GaugeVec
	reconcileErrors prometheus.Counter
	syncSeconds     prometheus.Histogram
	leader          prometheus.Gauge
	// leaseUnconfirmed is 1 while the active broker cannot renew its lease.
	leaseUnconfirmed prometheus.Gauge
	// endpointPublished is 1 while the active broker's EndpointSlice
	// points at this pod (--active-endpoint-slice).
	endpointPublished prometheus.Gauge
	// seen are the links with series (see forgetLinksBut).
	seen map[string]bool
}

func newMetrics() *metrics {
	m := &metrics{
		reg:             prometheus.NewRegistry(),
		seen:            map[string]bool{},
		links:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_links", Help: "KubeLinks by state."}, []string{"state"}),
		linkUp:          prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_link_up", Help: "1 when the link is Up."}, []string{"link"}),
		rx:              prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_link_rx_bytes", Help: "Bytes received from the link's peer."}, []string{"link"}),
		tx:              prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_link_tx_bytes", Help: "Bytes sent to the link's peer."}, []string{"link"}),
		rtt:             prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_link_probe_rtt_seconds", Help: "Last health-probe round trip through the tunnel."}, []string{"link"}),
		fwDrops:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_firewall_dropped_packets", Help: "Packets from the link's peer dropped by its ingress rules (since the rules were last written)."}, []string{"link"}),
		dataPlane:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubelink_dataplane_info", Help: "The data plane in use (wireguard-kernel, wireguard-userspace)."}, []string{"kind"}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_reconcile_errors_total", Help: "Sync passes that ended with an error."}),
		syncSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kubelink_sync_duration_seconds", Help: "Duration of a sync pass.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		leader:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_broker_active", Help: "1 while this broker holds the lease."}),
		leaseUnconfirmed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_broker_lease_unrenewed",
			Help: "1 while the active broker has not renewed its lease for a lease duration (API server unreachable); it keeps the data plane."}),
		endpointPublished: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_broker_endpoint_published",
			Help: "1 while the Service's EndpointSlice (--active-endpoint-slice) points at this broker, as last written or read back."}),
	}
	m.reg.MustRegister(m.links, m.linkUp, m.rx, m.tx, m.rtt, m.fwDrops, m.dataPlane, m.reconcileErrors, m.syncSeconds, m.leader, m.leaseUnconfirmed, m.endpointPublished,
		newLocalDrops(),
		// process_resident_memory_bytes and the Go runtime's figures: what
		// an operator compares with the container's memory limit.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) setStates(counts map[string]int) {
	for _, s := range allStates {
		m.links.WithLabelValues(s).Set(float64(counts[s]))
	}
}

func (m *metrics) observeLink(name string, st v1alpha1.KubeLinkStatus) {
	up := 0.0
	if st.State == v1alpha1.StateUp {
		up = 1
	}
	m.seen[name] = true
	m.linkUp.WithLabelValues(name).Set(up)
	h := st.Health
	if h != nil {
		m.rx.WithLabelValues(name).Set(float64(h.RxBytes))
		m.tx.WithLabelValues(name).Set(float64(h.TxBytes))
	} else {
		m.rx.DeleteLabelValues(name)
		m.tx.DeleteLabelValues(name)
	}
	// no RTT (probing stopped, or never answered): no stale figure
	if h != nil && h.RTT != nil && h.RTT.Last != nil {
		m.rtt.WithLabelValues(name).Set(h.RTT.Last.Seconds())
	} else {
		m.rtt.DeleteLabelValues(name)
	}
}

func (m *metrics) forgetLink(name string) {
	for _, v := range []*prometheus.GaugeVec{m.linkUp, m.rx, m.tx, m.rtt, m.fwDrops} {
		v.DeleteLabelValues(name)
	}
}

// forgetLinksBut removes the series of every link observed before that is
// not in keep (a deleted link), whether or not its status was ever written.
func (m *metrics) forgetLinksBut(keep map[string]bool) {
	for n := range m.seen {
		if !keep[n] {
			m.forgetLink(n)
			delete(m.seen, n)
		}
	}
}

func (m *metrics) setDataPlane(kind string) {
	m.dataPlane.Reset()
	if kind != "" {
		m.dataPlane.WithLabelValues(kind).Set(1)
	}
}
