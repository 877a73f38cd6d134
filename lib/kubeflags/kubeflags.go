// Package kubeflags holds the flags and helpers every kubelink binary shares:
// API access, logging and parsing of network flags.
package kubeflags

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Common are the flags of every controller binary.
type Common struct {
	Kubeconfig string
	LogLevel   string
	LogFormat  string
	// PprofAddr serves Go's profiles there (ServePprof); empty: off.
	PprofAddr string
	// QPS and Burst limit the client's requests to the API server
	// (client-go's token bucket, whose own default of 5/s with bursts of
	// 10 would make the status writes of 250 links take 50 s).
	QPS   float32
	Burst int
}

// The default client-side rate limit: a status pass over 250 links fits in
// a few seconds, and one gateway still cannot flood the API server.
const (
	DefaultQPS   = 50
	DefaultBurst = 100
)

// Register adds the flags to fs.
func (c *Common) Register(fs *pflag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, then $KUBECONFIG)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text (logfmt) or json")
	fs.Float32Var(&c.QPS, "kube-api-qps", DefaultQPS, "requests per second to the API server at most (the client-side rate limit)")
	fs.IntVar(&c.Burst, "kube-api-burst", DefaultBurst, "requests above --kube-api-qps allowed in a burst")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve Go's profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; off when empty (they show the process's internals to whoever reaches the port)")
}

// RESTConfig loads the API server access, with the client-side rate limit
// of --kube-api-qps and --kube-api-burst (client-go's defaults when both
// are 0, as in a Common that was not registered).
func (c *Common) RESTConfig() (*rest.Config, error) {
	if !(c.QPS >= 0) || c.Burst < 0 || (c.QPS == 0) != (c.Burst == 0) { // !(>=) also catches NaN
		return nil, fmt.Errorf("--kube-api-qps %v and --kube-api-burst %d: both must be positive", c.QPS, c.Burst)
	}
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, err
	}
	if c.QPS > 0 {
		cfg.QPS, cfg.Burst = c.QPS, c.Burst
	}
	return cfg, nil
}

func (c *Common) loadConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.Kubeconfig != "" {
		rules.ExplicitPath = c.Kubeconfig
	} else if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("API server access: %w", err)
	}
	return cfg, nil
}

// Logger returns the logger of --log-level and --log-format on stderr.
func (c *Common) Logger() (*slog.Logger, error) {
	return NewLogger(os.Stderr, c.LogLevel, c.LogFormat)
}

// NewLogger builds a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json"; empty means text).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level=%q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format=%q: use text or json", format)
}

// RouteLibraryLogs sends what client-go (klog) and controller-runtime log
// through log, so that a binary writes one format at one level, not three.
func RouteLibraryLogs(log *slog.Logger) {
	klog.SetSlogLogger(log)
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
}

// PrefixVar registers a CIDR flag stored in p (masked; empty leaves it
// unset). A bad value fails the parse with the flag's name.
func PrefixVar(fs *pflag.FlagSet, p *netip.Prefix, name, usage string) {
	fs.Var(&netValue[netip.Prefix]{v: p, kind: "cidr", want: "not a CIDR (e.g. 10.250.0.0/16)",
		parse: func(s string) (netip.Prefix, error) {
			p, err := netip.ParsePrefix(s)
			return p.Masked(), err
		}}, name, usage)
}

// AddrVar registers an IP flag stored in a (empty leaves it unset).
func AddrVar(fs *pflag.FlagSet, a *netip.Addr, name, usage string) {
	fs.Var(&netValue[netip.Addr]{v: a, kind: "ip", want: "not an IP address", parse: netip.ParseAddr}, name, usage)
}

// netValue is a pflag.Value of a netip type; the zero value means unset.
type netValue[T interface {
	comparable
	String() string
}] struct {
	v     *T
	kind  string // pflag's type name in --help
	want  string // the error of a bad value
	parse func(string) (T, error)
}

func (n *netValue[T]) Type() string { return n.kind }

func (n *netValue[T]) String() string {
	var zero T
	if n.v == nil || *n.v == zero {
		return ""
	}
	return (*n.v).String()
}

func (n *netValue[T]) Set(s string) error {
	var zero T
	if s = strings.TrimSpace(s); s == "" {
		*n.v = zero
		return nil
	}
	v, err := n.parse(s)
	if err != nil {
		return errors.New(n.want)
	}
	*n.v = v
	return nil
}

// DefaultNamespace is the pod's namespace when running in a cluster.
func DefaultNamespace(fallback string) string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return fallback
}

// DefaultIdentity names this replica for leader election.
func DefaultIdentity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
