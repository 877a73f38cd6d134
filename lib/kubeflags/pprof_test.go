package kubeflags

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestServePprof(t *testing.T) {
	var c Common
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	c.Register(fs)
	if f := fs.Lookup("pprof-addr"); f == nil || f.DefValue != "" {
		t.Fatalf("--pprof-addr: %+v, want a flag that is off by default", f)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := ServePprof(ctx, "127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/debug/pprof/heap?debug=1": "heap profile", "/debug/pprof/goroutine?debug=1": "goroutine profile", "/debug/pprof/": "Types of profiles available"} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %.80q, want %q", path, resp.StatusCode, body, want)
		}
	}
	// A taken address is refused at once, naming the flag.
	if _, err := ServePprof(context.Background(), addr.String(), log); err == nil || !strings.Contains(err.Error(), "--pprof-addr") {
		t.Errorf("a taken address: %v", err)
	}
	// It stops with its context.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the pprof server still accepts connections 5 s after its context ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClientRateLimit(t *testing.T) {
	dir := t.TempDir()
	kc := dir + "/kubeconfig"
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var c Common
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	c.Register(fs)
	if err := fs.Parse([]string{"--kubeconfig", kc}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.RESTConfig()
	if err != nil || cfg.QPS != DefaultQPS || cfg.Burst != DefaultBurst {
		t.Fatalf("defaults: %v, QPS %v burst %v, want %v/%v", err, cfg.QPS, cfg.Burst, DefaultQPS, DefaultBurst)
	}
	if err := fs.Parse([]string{"--kube-api-qps", "20", "--kube-api-burst", "30"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := c.RESTConfig(); err != nil || cfg.QPS != 20 || cfg.Burst != 30 {
		t.Errorf("--kube-api-qps 20 --kube-api-burst 30: %v %v/%v", err, cfg.QPS, cfg.Burst)
	}
	if err := fs.Parse([]string{"--kube-api-qps", "-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RESTConfig(); err == nil || !strings.Contains(err.Error(), "--kube-api-qps") {
		t.Errorf("a negative QPS: %v", err)
	}
}
