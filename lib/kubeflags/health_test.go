package kubeflags

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// /healthz always answers; /readyz and every extra check answer 200 while
// their function returns nil and 503 with its error otherwise; an unknown
// path is 404.
func TestServeHealth(t *testing.T) {
	notReady, notActive := errors.New("caches not synced"), errors.New("standby: not the active broker")
	srv, err := ServeHealth(context.Background(), "", prometheus.NewRegistry(),
		func() error { return notReady }, slog.New(slog.DiscardHandler),
		Check{Path: "/activez", Check: func() error { return notActive }})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	for _, c := range []struct {
		when, path string
		code       int
		body       string
	}{
		{"starting", "/healthz", 200, "ok"},
		{"starting", "/readyz", 503, "caches not synced"},
		{"starting", "/activez", 503, "standby: not the active broker"},
		{"starting", "/nothing", 404, "404 page not found"},
	} {
		if code, body := get(c.path); code != c.code || body != c.body {
			t.Errorf("%s: %s: %d %q, want %d %q", c.when, c.path, code, body, c.code, c.body)
		}
	}
	notReady = nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("ready: /readyz %d, want 200", code)
	}
	if code, _ := get("/activez"); code != 503 {
		t.Errorf("ready standby: /activez %d, want 503", code)
	}
	notActive = nil
	if code, body := get("/activez"); code != 200 || body != "ok" {
		t.Errorf("active: /activez %d %q, want 200 ok", code, body)
	}
}
