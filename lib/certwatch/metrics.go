package certwatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg        *prometheus.Registry
	writes     *prometheus.CounterVec
	syncErrors prometheus.Counter
	renewals   prometheus.Counter
	generated  prometheus.Counter
	notAfter   atomic.Int64 // Unix seconds of the written certificate's NotAfter; 0: none
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
			Help: "Certificates issued in self-managed mode (first issue and renewals)."}),
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
	m.reg.MustRegister(m.writes, m.syncErrors, m.renewals, m.generated, expiry,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// serveHTTP serves /healthz, /readyz (a sync succeeded) and /metrics. The
// listener is opened here so that a taken port fails Run at once.
func (c *Controller) serveHTTP(ctx context.Context) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if c.goodSyncs.Load() == 0 {
			http.Error(w, "no successful sync yet", http.StatusServiceUnavailable)
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
