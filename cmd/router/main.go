// Command kubelink-router runs on every node (DaemonSet, hostNetwork): it
// routes the mesh network and the remote service networks to the active
// gateway and nothing else.
package main

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/router"
)

func main() {
	cmd := cli.New("kubelink-router", "installs, on every node, the routes that send mesh traffic to the active gateway")
	c := router.Config{Tunnel: router.TunnelNone, RouteTable: 254, RulePriority: 32751, Resync: 10 * time.Second}
	var common kubeflags.Common
	var cleanup bool
	f := cmd.Flags
	common.Register(f)
	kubeflags.PrefixVar(f, &c.NodeCIDR, "node-cidr", "node network CIDR (required)")
	kubeflags.PrefixVar(f, &c.PodCIDR, "pod-cidr", "pod network CIDR: a link whose cidr or egress overlaps it (or the node network) is not routed")
	f.StringVar(&c.Tunnel, "tunnel", c.Tunnel, "how to reach the gateway: none (routed), vxlan or ipip (for networks that drop forwarded traffic; every node runs the router, the gateway too)")
	f.IntVar(&c.RouteTable, "route-table", c.RouteTable, "routing table (254 = main; other tables get an ip rule)")
	f.IntVar(&c.RulePriority, "rule-priority", c.RulePriority, "priority of the ip rule for --route-table")
	f.StringVar(&c.Datafile, "datafile", "", "file remembering installed routes, so a restart removes stale ones (e.g. /var/lib/kubelink/routes)")
	f.DurationVar(&c.Resync, "resync", c.Resync, "period of the full sync")
	f.BoolVar(&cleanup, "cleanup", false, "remove the router's routes and rule, then exit")
	cmd.Main(func() error {
		if cleanup {
			return router.Cleanup(c)
		}
		if err := c.Validate(); err != nil {
			return err
		}
		return common.Serve(func(ctx context.Context, rest *rest.Config, log *slog.Logger) error {
			r, err := router.New(c, rest, log)
			if err != nil {
				return err
			}
			return r.Run(ctx)
		})
	})
}
