package linkgate

import (
	"strconv"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/kubelink/kubelink/lib/globaldns"
)

var log = clog.NewWithPlugin(PluginName)

func init() { plugin.Register(PluginName, setup) }

// AddDirective puts kubelinkgate into CoreDNS's directive order before
// "cache" (so that a cached answer of a member that went Down is not served
// either), as custom CoreDNS builds do without editing plugin.cfg. Call it
// from main before coremain.Run; calling it twice is harmless.
func AddDirective() { globaldns.InsertDirective(PluginName, "cache", "rewrite", "forward") }

// Config is one parsed kubelinkgate block.
type Config struct {
	Link       string
	Kubeconfig string
	Context    string
	TTL        uint32
}

// DefaultTTL caps answer TTLs (seconds).
const DefaultTTL = 1

func setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error(PluginName, err)
	}
	w, err := sharedWatch(cfg)
	if err != nil {
		return plugin.Error(PluginName, err)
	}
	zone := ""
	if keys := c.ServerBlockKeys; len(keys) > 0 {
		if z := plugin.OriginsFromArgsOrServerBlock(nil, keys); len(z) > 0 {
			zone = z[0]
		}
	}
	c.OnStartup(func() error {
		w.acquire()
		if !w.waitSynced(5 * time.Second) {
			log.Warningf("KubeLinks not listed after 5s; answering SERVFAIL until they are")
		}
		return nil
	})
	c.OnShutdown(func() error { w.release(); return nil })
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		return &Gate{Next: next, Link: cfg.Link, Zone: zone, TTL: cfg.TTL, States: w}
	})
	return nil
}

// parse reads one kubelinkgate block: the link name and options.
func parse(c *caddy.Controller) (Config, error) {
	cfg := Config{TTL: DefaultTTL}
	i := 0
	for c.Next() {
		if i > 0 {
			return cfg, plugin.ErrOnce
		}
		i++
		args := c.RemainingArgs()
		if len(args) != 1 || args[0] == "" {
			return cfg, c.Errf("kubelinkgate needs exactly one KubeLink name, got %q", args)
		}
		cfg.Link = args[0]
		for c.NextBlock() {
			switch c.Val() {
			case "kubeconfig":
				args := c.RemainingArgs()
				if len(args) < 1 || len(args) > 2 {
					return cfg, c.ArgErr()
				}
				cfg.Kubeconfig = args[0]
				if len(args) == 2 {
					cfg.Context = args[1]
				}
			case "ttl":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return cfg, c.ArgErr()
				}
				t, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || t > 300 {
					return cfg, c.Errf("ttl must be 0-300 seconds: %q", args[0])
				}
				cfg.TTL = uint32(t)
			default:
				return cfg, c.Errf("unknown property %q", c.Val())
			}
		}
	}
	return cfg, nil
}
