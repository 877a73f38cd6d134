// Package router runs on every node: it sends traffic for the mesh and the
// remote service networks to the active gateway, whose node IP the active
// broker publishes in the LocalLink status. It touches only its own routes
// (route protocol RouteProtocol) and writes no status: the broker is the one
// writer of link status.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/netapply"
)

// RouteProtocol marks the router's routes. It differs from the broker's
// (netapply.RouteProtocol), so on a gateway in node mode, where both share
// the host's routing table, neither removes the other's routes.
const RouteProtocol = 77

// Tunnel modes towards the gateway.
const (
	TunnelNone  = "none"
	TunnelVXLAN = "vxlan"
	TunnelIPIP  = "ipip"
)

// Config of the router.
type Config struct {
	NodeCIDR netip.Prefix
	// PodCIDR (optional): with the node network, the cluster's own
	// networks; a link that claims them is Stale, as in the broker.
	PodCIDR      netip.Prefix
	Tunnel       string
	RouteTable   int
	RulePriority int
	Datafile     string
	Resync       time.Duration
}

// Validate checks the flags.
func (c *Config) Validate() error {
	var errs []error
	if !c.NodeCIDR.IsValid() {
		errs = append(errs, errors.New("--node-cidr is required (the router runs with hostNetwork and finds the node interface in it)"))
	}
	switch c.Tunnel {
	case TunnelNone, TunnelVXLAN, TunnelIPIP:
	default:
		errs = append(errs, fmt.Errorf("--tunnel=%q: must be none, vxlan or ipip", c.Tunnel))
	}
	if c.Resync <= 0 {
		c.Resync = 10 * time.Second
	}
	return errors.Join(errs...)
}

// Router is the per-node route agent.
type Router struct {
	cfg     Config
	log     *slog.Logger
	nodeIP  netip.Addr
	nodeIfc string
	kube    client.Reader
	cache   cache.Cache
	routes  *netapply.Routes
	tunnel  tunnel // nil for --tunnel=none
	loop    *kubeflags.Loop
	stale   []netip.Prefix // from the datafile, removed after the first Set
	saved   []netip.Prefix
	last    map[string][]mesh.Route // routes set per mesh, kept while its gateway is unknown
	refused string                  // the gateways last refused (Gateways), logged when it changes
}

// New prepares a router.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ifc, ip, err := findInterface(cfg.NodeCIDR)
	if err != nil {
		return nil, err
	}
	routes, err := netapply.NewRoutes(netapply.RouteConfig{Table: cfg.RouteTable, Protocol: RouteProtocol, RulePriority: cfg.RulePriority})
	if err != nil {
		return nil, err
	}
	c, err := cache.New(rc, cache.Options{Scheme: kubeflags.NewScheme()})
	if err != nil {
		return nil, fmt.Errorf("creating cache: %w", err)
	}
	r := &Router{cfg: cfg, log: log, nodeIP: ip, nodeIfc: ifc, kube: c, cache: c, routes: routes, loop: kubeflags.NewLoop()}
	switch cfg.Tunnel {
	case TunnelVXLAN:
		r.tunnel = &vxlanTunnel{nodeIP: ip, parent: ifc}
	case TunnelIPIP:
		r.tunnel = &ipipTunnel{nodeIP: ip, parent: ifc}
	}
	if cfg.Datafile != "" {
		if r.stale, err = netapply.LoadDatafile(cfg.Datafile); err != nil {
			return nil, fmt.Errorf("--datafile: %w", err)
		}
	}
	log.Info("router configured", "node", ip, "interface", ifc)
	return r, nil
}

func findInterface(cidr netip.Prefix) (string, netip.Addr, error) {
	ifcs, err := net.Interfaces()
	if err != nil {
		return "", netip.Addr{}, err
	}
	if name, ip := netapply.InterfaceIn(ifcs, cidr); name != "" {
		return name, ip, nil
	}
	return "", netip.Addr{}, fmt.Errorf("no interface with an address in --node-cidr %s (the router needs hostNetwork)", cidr)
}

// Run serves until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	if err := kubeflags.WatchAndSyncFiltered(ctx, r.cache, r.loop.Kick,
		kubeflags.Watch{Object: &v1alpha1.KubeLink{}, Relevant: kubeflags.KubeLinkChangedBeyondHealth}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := r.routes.Watch(ctx, r.loop.Kick); err != nil {
		r.log.Warn("route watch unavailable; relying on periodic resync", "err", err)
	}
	r.loop.Run(ctx, r.cfg.Resync, func(ctx context.Context) time.Duration {
		if err := r.sync(ctx); err != nil {
			r.log.Error("sync", "err", err)
		}
		return 0
	})
	return nil
}

// GatewayInfo is where the active broker of a mesh runs, as the status of
// the mesh's LocalLink says.
type GatewayInfo struct {
	Node netip.Addr
	// Pod is set when the broker runs in pod mode.
	Pod netip.Addr
}

// Gateways returns, per mesh (by name), where its active broker runs as
// published in the status of its accepted LocalLink. A mesh whose LocalLink
// names no gateway yet is absent. Brokers may split the meshes
// (--served-links), so each mesh has a gateway of its own.
//
// The status is only as trustworthy as whoever wrote it: a gateway node
// outside nodeCIDR, or a broker pod outside nodeCIDR (node mode) and
// podCIDR, is no gateway of this cluster, and a route to it would carry
// the mesh's traffic elsewhere. Such a mesh is left out (its routes stay
// as they were, as for an unknown gateway) and named in refused. An
// invalid nodeCIDR or podCIDR is not checked against.
func Gateways(m *mesh.Model, links []v1alpha1.KubeLink, nodeCIDR, podCIDR netip.Prefix) (gws map[string]GatewayInfo, refused []string) {
	byName := map[string]*v1alpha1.KubeLink{}
	for i := range links {
		byName[links[i].Name] = &links[i]
	}
	gws = map[string]GatewayInfo{}
	for _, ms := range m.Meshes {
		kl := byName[ms.Local.Name.String()]
		if kl == nil {
			continue
		}
		a, err := netip.ParseAddr(kl.Status.Gateway)
		if err != nil {
			continue
		}
		g := GatewayInfo{Node: a}
		g.Pod, _ = netip.ParseAddr(kl.Status.GatewayPod)
		switch {
		case nodeCIDR.IsValid() && !nodeCIDR.Contains(g.Node):
			refused = append(refused, fmt.Sprintf("LocalLink %s: status.gateway %s is outside the node network %s", kl.Name, g.Node, nodeCIDR))
			continue
		case g.Pod.IsValid() && podCIDR.IsValid() && !podCIDR.Contains(g.Pod) && !(nodeCIDR.IsValid() && nodeCIDR.Contains(g.Pod)):
			refused = append(refused, fmt.Sprintf("LocalLink %s: status.gatewayPod %s is outside the pod network %s and the node network %s", kl.Name, g.Pod, podCIDR, nodeCIDR))
			continue
		}
		gws[ms.Name] = g
	}
	return gws, refused
}

// Desired computes this node's routes, mesh by mesh, each towards the
// gateway of its mesh. On another node: the mesh's networks via the gateway
// node on device. On the gateway node: nothing when the broker runs on the
// node itself (its own routes serve), or the mesh's networks via the broker
// pod, on the node's interface towards it (podDevices: pod IP → device). A
// mesh whose gateway is unknown keeps the routes last set for it (last, by
// mesh name); ok is false when there are none to keep, and the caller
// then leaves every installed route alone ("gateway unknown: keep what is
// installed", also across a restart of the router).
func Desired(m *mesh.Model, gws map[string]GatewayInfo, last map[string][]mesh.Route, nodeIP netip.Addr, device string, podDevices map[netip.Addr]string) (routes []mesh.Route, perMesh map[string][]mesh.Route, ok bool) {
	perMesh = map[string][]mesh.Route{}
	ok = true
	for _, ms := range m.Meshes {
		gw, known := gws[ms.Name]
		var rs []mesh.Route
		switch {
		case !known:
			prev, had := last[ms.Name]
			if !had {
				ok = false
			}
			rs = prev
		case gw.Node != nodeIP:
			rs = m.MeshNodeRoutes(ms, gw.Node, device)
		case gw.Pod.IsValid() && podDevices[gw.Pod] != "":
			// CNIs like ptp give the node's route to a pod scope host; a
			// gateway reached through such a route is ignored by the kernel,
			// which then ARPs for every destination itself (found in the kind
			// lab). onlink makes the pod the next hop on that device.
			rs = m.MeshNodeRoutes(ms, gw.Pod, podDevices[gw.Pod])
			for i := range rs {
				rs[i].OnLink = true
			}
		}
		perMesh[ms.Name] = rs
		routes = append(routes, rs...)
	}
	return routes, perMesh, ok
}

// deviceTowards names the interface the kernel uses to reach a (the broker
// pod: the CNI's route to it).
func deviceTowards(a netip.Addr) (string, error) {
	rs, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(rs) == 0 {
		return "", fmt.Errorf("no route to the broker pod %s: %v", a, err)
	}
	link, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", err
	}
	return link.Attrs().Name, nil
}

func (r *Router) sync(ctx context.Context) error {
	var list v1alpha1.KubeLinkList
	if err := r.kube.List(ctx, &list); err != nil {
		return err
	}
	// The same verdicts as the broker's: a link claiming this cluster's own
	// networks is Stale and gets no route.
	m := mesh.Build(list.Items, mesh.ParseOptions{Reserved: mesh.ReservedNetworks(r.cfg.NodeCIDR, r.cfg.PodCIDR)})
	gws, refused := Gateways(m, list.Items, r.cfg.NodeCIDR, r.cfg.PodCIDR)
	if msg := strings.Join(refused, "; "); msg != r.refused {
		if msg != "" {
			r.log.Warn("not routing to a gateway outside this cluster's networks; the mesh keeps the routes it had", "refused", msg)
		}
		r.refused = msg
	}
	device := r.nodeIfc
	if r.tunnel != nil {
		// Every node has the device, the gateways receive through it: it is
		// made ready towards each gateway (or none yet).
		nodes := []netip.Addr{{}}
		if len(gws) > 0 {
			nodes = nodes[:0]
			for _, gw := range gws {
				nodes = append(nodes, gw.Node)
			}
		}
		for _, n := range nodes {
			dev, err := r.tunnel.ensure(n)
			if err != nil {
				return err
			}
			device = dev
		}
	}
	podDevices := map[netip.Addr]string{}
	for _, gw := range gws {
		if gw.Node == r.nodeIP && gw.Pod.IsValid() {
			dev, err := deviceTowards(gw.Pod)
			if err != nil {
				return err
			}
			podDevices[gw.Pod] = dev
		}
	}
	want, perMesh, ok := Desired(m, gws, r.last, r.nodeIP, device, podDevices)
	if !ok {
		r.log.Debug("gateway of a mesh unknown; keeping installed routes")
		return nil
	}
	if r.tunnel != nil {
		for i := range want {
			if want[i].Device == device {
				want[i].OnLink = true
			}
		}
	}
	if err := r.routes.Set(want); err != nil {
		return err
	}
	r.last = perMesh
	if r.stale != nil {
		if err := r.routes.RemoveStale(r.stale); err != nil {
			return err
		}
		r.stale = nil
	}
	return r.save()
}

// save records installed routes in the datafile when they changed.
func (r *Router) save() error {
	if r.cfg.Datafile == "" {
		return nil
	}
	inst, err := r.routes.Installed()
	if err != nil {
		return err
	}
	if slices.Equal(inst, r.saved) && r.saved != nil {
		return nil
	}
	if err := netapply.SaveDatafile(r.cfg.Datafile, inst); err != nil {
		return err
	}
	r.saved = inst
	return nil
}

// Cleanup removes the router's routes, rule and tunnel devices.
func Cleanup(cfg Config) error {
	routes, err := netapply.NewRoutes(netapply.RouteConfig{Table: cfg.RouteTable, Protocol: RouteProtocol, RulePriority: cfg.RulePriority})
	if err != nil {
		return err
	}
	return errors.Join(routes.CleanUp(), netapply.DeleteLink(VXLANDevice), netapply.DeleteLink(IPIPDevice))
}
