package globaldns

import (
	"fmt"
	"strconv"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var log = clog.NewWithPlugin(PluginName)

func init() { plugin.Register(PluginName, setup) }

// Config is the parsed Corefile block.
type Config struct {
	Zones       []string
	Kubeconfig  string
	Context     string
	Namespace   string
	TTL         uint32
	WriteStatus bool
}

func setup(c *caddy.Controller) error {
	p, cfg, err := parse(c)
	if err != nil {
		return plugin.Error(PluginName, err)
	}
	rc, err := restConfig(cfg)
	if err != nil {
		return plugin.Error(PluginName, err)
	}
	w, err := newWatcher(rc, cfg.Namespace, p.Index, cfg.WriteStatus)
	if err != nil {
		return plugin.Error(PluginName, err)
	}
	p.watch = w
	c.OnStartup(func() error {
		w.start()
		// Like the kubernetes plugin: wait a little for the first list, but
		// serve (NXDOMAIN) rather than fail when the API is slow; the ready
		// plugin reports not ready until the informer has synced.
		if !w.waitSynced(5 * time.Second) {
			log.Warningf("CoreDNSEntry informer not synced after 5s; serving what is known")
		}
		return nil
	})
	c.OnShutdown(func() error { w.stop(); return nil })
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		p.Next = next
		return p
	})
	return nil
}

// parse reads one kubelinkglobal block.
func parse(c *caddy.Controller) (*Plugin, *Config, error) {
	cfg := &Config{TTL: 5, WriteStatus: true}
	p := &Plugin{}
	i := 0
	for c.Next() {
		if i > 0 {
			return nil, nil, plugin.ErrOnce
		}
		i++
		cfg.Zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
		for c.NextBlock() {
			switch c.Val() {
			case "kubeconfig":
				args := c.RemainingArgs()
				if len(args) < 1 || len(args) > 2 {
					return nil, nil, c.ArgErr()
				}
				cfg.Kubeconfig = args[0]
				if len(args) == 2 {
					cfg.Context = args[1]
				}
			case "namespace":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, nil, c.ArgErr()
				}
				cfg.Namespace = args[0]
			case "ttl":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, nil, c.ArgErr()
				}
				t, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || t > 3600 {
					return nil, nil, c.Errf("ttl must be 0-3600 seconds: %q", args[0])
				}
				cfg.TTL = uint32(t)
			case "status":
				args := c.RemainingArgs()
				if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
					return nil, nil, c.Errf("status must be on or off")
				}
				cfg.WriteStatus = args[0] == "on"
			case "fallthrough":
				p.Fall.SetZonesFromArgs(c.RemainingArgs())
			default:
				return nil, nil, c.Errf("unknown property %q", c.Val())
			}
		}
	}
	p.Index = NewIndex(cfg.Zones)
	p.TTL = cfg.TTL
	return p, cfg, nil
}

// restConfig is the kubeconfig's (context's) configuration, or the
// in-cluster one without a kubeconfig.
func restConfig(cfg *Config) (*rest.Config, error) { return RestConfig(cfg.Kubeconfig, cfg.Context) }

// RestConfig is what a kubelink CoreDNS plugin's "kubeconfig PATH [CONTEXT]"
// names, or the in-cluster configuration when kubeconfig is empty.
func RestConfig(kubeconfig, context string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no kubeconfig given and not in a cluster: %w", err)
		}
		return rc, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}
