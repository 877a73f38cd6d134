package certwatch

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg        *prometheus.Registry
	writes     *prometheus.CounterVec
	syncErrors prometheus.Counter
	renewals   prometheus.Counter
	generated  prometheus.Counter
	// the mesh authority (signer) and its members
	csrSigned    prometheus.Counter
	csrDenied    prometheus.Counter
	csrRequested prometheus.Counter
	notAfter     atomic.Int64 // Unix seconds of the written certificate's NotAfter; 0: none
	revoked      prometheus.Gauge
}

// newMetrics uses a registry of its own, so that several controllers can run
// in one test process.
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubelink_certwatch_writes_total",
			Help: "Atomic swaps of an output directory (dir: tls or wireguard)."}, []string{"dir"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_sync_errors_total",
			Help: "Syncs that failed."}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_cert_issued_total",
			Help: "Certificates put into the TLS Secret in self or csr mode (first issue and renewals)."}),
		csrSigned: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_csr_signed_total",
			Help: "Member CertificateSigningRequests the mesh authority signed."}),
		csrDenied: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_csr_denied_total",
			Help: "Member CertificateSigningRequests the mesh authority denied (the log says why)."}),
		csrRequested: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_csr_requested_total",
			Help: "CertificateSigningRequests this member created at the mesh authority."}),
		revoked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelink_certwatch_revoked_certificates",
			Help: "Certificates on the revocation list written next to the certificates (the mesh authority's list)."}),
		generated: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubelink_certwatch_wireguard_keys_generated_total",
			Help: "WireGuard key pairs generated because the Secret had none."}),
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kubelink_certwatch_cert_expiry_seconds",
		Help: "Seconds until the certificate in the tls directory expires (negative: expired; 0 until one is written)."},
		func() float64 {
			na := m.notAfter.Load()
			if na == 0 {
				return 0
			}
			return time.Until(time.Unix(na, 0)).Seconds()
		})
	m.reg.MustRegister(m.writes, m.syncErrors, m.renewals, m.generated, m.csrSigned, m.csrDenied, m.csrRequested, m.revoked, expiry,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
