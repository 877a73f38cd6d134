package kubeflags

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one more path of ServeHealth: 200 "ok" when Check returns nil,
// else 503 with its error.
type Check struct {
	Path  string
	Check func() error
}

// ServeHealth serves /healthz (the process is alive), /readyz (ready returns
// nil; its error is the 503 body), the extra checks, and /metrics of reg on
// addr; an empty addr serves nothing. The listener is opened before it
// returns, so a taken port is reported at once. The returned server is never
// nil: close it to stop.
func ServeHealth(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error, log *slog.Logger, extra ...Check) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	for _, c := range append([]Check{{Path: "/readyz", Check: ready}}, extra...) {
		mux.HandleFunc(c.Path, func(w http.ResponseWriter, _ *http.Request) {
			if err := c.Check(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	if addr == "" {
		return srv, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return srv, fmt.Errorf("--metrics-addr: %w", err)
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return srv, nil
}
