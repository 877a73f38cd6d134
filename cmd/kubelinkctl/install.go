package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/buildinfo"
	"github.com/kubelink/kubelink/lib/discover"
	"github.com/kubelink/kubelink/lib/meshdns"
)

const (
	releaseName = "kubelink"
	// EndpointAnnotation on the LocalLink is the host:port peers reach this
	// cluster's broker at, as install announced it (join reads it).
	EndpointAnnotation = "kubelink.mandelsoft.org/endpoint"
	// The chart's default NodePorts, and its Service ports (which are also
	// the container ports, and the host ports of broker.expose.type HostPort).
	wireguardPort        = 30777
	bridgePort           = 30088
	wireguardServicePort = 8777
	bridgeServicePort    = 8088
)

type installOptions struct {
	ns                            *string
	name, mesh, meshCIDR, address string
	dataPlane, expose, announce   string
	gatewayNode                   string
	// hostPortNode: with --expose hostport, the gateway node's
	// kubernetes.io/hostname label (the chart's broker.expose.hostPort.node).
	hostPortNode                   string
	serviceCIDR, podCIDR, nodeCIDR string
	registry, version, chart       string
	meshAuthority                  bool
	dnsHook                        bool
	skipImageCheck                 bool
	insecureRegistry               bool
	dryRun                         bool
	valueFiles, set                []string
}

func newInstall(g *globals) *cobra.Command {
	o := &installOptions{ns: g.kube.Namespace}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade kubelink in a cluster and create its LocalLink",
		Long: `install finds the cluster's service CIDR, pod CIDRs, node network, kube-proxy
mode, cluster domain and DNS Service, checks that the mesh overlaps none of
them, installs the kubelink chart (or upgrades it in place when it is there),
creates the cluster's LocalLink, hooks the mesh domain into the cluster DNS,
and waits until the broker is ready and the LocalLink shows its key.
Nothing is changed when a check fails.`,
		Example: fmt.Sprintf(`  # the first cluster of a mesh, reached by peers on a NodePort of its nodes
  %[1]s install --context eu --name eu --mesh-cidr 192.168.0.0/24 --address 192.168.0.11

  # the TLS bridge data plane behind a LoadBalancer at lb.example.com, images
  # from a private registry; this cluster holds the mesh CA for the others
  %[1]s install --context us --name us --mesh-cidr 192.168.0.0/24 --address 192.168.0.12 \
      --data-plane bridge --mesh-authority --expose loadbalancer --announce lb.example.com \
      --registry registry.example.com:5000

  # no NodePort range or LoadBalancer: the one broker binds UDP 8777 on the
  # gateway node gw-1, and peers reach that node's address (no standby)
  %[1]s install --context edge --name edge --mesh-cidr 192.168.0.0/24 --address 192.168.0.13 \
      --expose hostport --gateway-node gw-1`, commandName()),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return err
			}
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "this cluster's name in the mesh (a DNS label; the LocalLink's name) (required)")
	f.StringVar(&o.mesh, "mesh", "default", "the mesh's name (in the clusters' bridge identities kubelink://<mesh>/<name>)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh network, e.g. 192.168.0.0/24: one address per cluster, outside every cluster's service, pod and node ranges (required)")
	f.StringVar(&o.address, "address", "", "this cluster's address in the mesh (default: the one it has, else the first free one)")
	f.StringVar(&o.dataPlane, "data-plane", "wireguard", "wireguard or bridge (WireGuard over UDP, or the TLS bridge over TCP)")
	f.StringVar(&o.expose, "expose", "nodeport", "how peers reach the broker: nodeport, loadbalancer, or hostport (one broker on --gateway-node binds the port there; no standby)")
	f.StringVar(&o.gatewayNode, "gateway-node", "", "with --expose hostport: the node that runs the broker and whose address peers reach (default: the one the release has, else the cluster's only node)")
	f.StringVar(&o.announce, "announce", "", "the host[:port] peers reach the broker at (default: a Ready node's InternalIP and the NodePort; with --expose hostport the gateway node's ExternalIP, else its InternalIP, and port 8777/8088; with --expose loadbalancer the LoadBalancer's address, waited for, and the Service port 8777/8088)")
	f.StringVar(&o.serviceCIDR, "service-cidr", "", "the cluster's service CIDR (default: discovered)")
	f.StringVar(&o.podCIDR, "pod-cidr", "", "the cluster's pod CIDR (default: discovered)")
	f.StringVar(&o.nodeCIDR, "node-cidr", "", "the cluster's node network (default: discovered, the /24 or wider prefix covering the nodes)")
	f.StringVar(&o.registry, "registry", "", "the registry the images are pulled from, host[:port][/path] (default: the chart's)")
	f.StringVar(&o.version, "version", "", "the image tag (default: this kubelinkctl's version, as make images tags them)")
	f.StringVar(&o.chart, "chart", "", "install this chart (a directory or archive) instead of the embedded one")
	f.BoolVar(&o.meshAuthority, "mesh-authority", false, "this cluster holds the mesh CA and signs the other members' certificates (bridge)")
	f.BoolVar(&o.dnsHook, "dns-hook", true, "add the mesh domain to the cluster DNS's Corefile (kube-system/coredns); false prints what to add")
	f.BoolVar(&o.skipImageCheck, "skip-image-check", false, "do not check that the registry has the images before installing")
	f.BoolVar(&o.insecureRegistry, "insecure-registry", false, "check the images over plain HTTP (localhost registries always are)")
	f.StringArrayVarP(&o.valueFiles, "values", "f", nil, "a values file for the chart (repeatable); its values win over the discovered ones (see the chart's values.yaml)")
	f.StringArrayVar(&o.set, "set", nil, "a chart value, key=value as in helm --set (repeatable); wins over --values and the discovered values")
	f.BoolVar(&o.dryRun, "dry-run", false, "discover and check, print the values it would install, change nothing")
	f.StringVarP(&g.output, "output", "o", "", "print the LocalLink (or with --dry-run the plan) as json or yaml")
	return cmd
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (o *installOptions) validate(cmd *cobra.Command) error {
	if o.name == "" {
		return usagef(cmd, "--name is required: this cluster's name in the mesh, e.g. --name eu")
	}
	if !dnsLabel.MatchString(o.name) {
		return usagef(cmd, "--name %q: must be a DNS label (lower case letters, digits and '-', at most 63)", o.name)
	}
	if o.mesh != "default" {
		return usagef(cmd, "--mesh %q: install joins the default mesh only for now; a cluster in several meshes gets its other LocalLinks by hand (docs/operations.md)", o.mesh)
	}
	if o.meshCIDR == "" {
		return usagef(cmd, "--mesh-cidr is required: the mesh network, e.g. --mesh-cidr 192.168.0.0/24")
	}
	p, err := netip.ParsePrefix(o.meshCIDR)
	if err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() < 16 || p.Bits() > 30 {
		return usagef(cmd, "--mesh-cidr %q: must be an IPv4 network from /16 to /30 with no host bits, e.g. 192.168.0.0/24", o.meshCIDR)
	}
	if o.address != "" {
		a, err := netip.ParseAddr(o.address)
		if err != nil || !p.Contains(a) || a == p.Addr() || a == lastAddr(p) {
			return usagef(cmd, "--address %q: must be a host address inside --mesh-cidr %s", o.address, p)
		}
	}
	switch o.dataPlane {
	case "wireguard", "bridge":
	default:
		return usagef(cmd, "--data-plane %q: must be wireguard or bridge", o.dataPlane)
	}
	switch o.expose {
	case "nodeport", "loadbalancer", "hostport":
	default:
		return usagef(cmd, "--expose %q: must be nodeport, loadbalancer or hostport", o.expose)
	}
	if o.gatewayNode != "" && o.expose != "hostport" {
		return usagef(cmd, "--gateway-node is for --expose hostport only: with %s every node (or the load balancer) reaches the active broker", o.expose)
	}
	for flag, v := range map[string]string{"--service-cidr": o.serviceCIDR, "--pod-cidr": o.podCIDR, "--node-cidr": o.nodeCIDR} {
		if v == "" {
			continue
		}
		if q, err := netip.ParsePrefix(v); err != nil || q != q.Masked() || !q.Addr().Is4() {
			return usagef(cmd, "%s %q: must be an IPv4 network in CIDR notation with no host bits", flag, v)
		}
	}
	if strings.EqualFold(o.version, "latest") {
		return usagef(cmd, "--version latest: give the exact image tag (kubelink images are never tagged latest)")
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// plan is what install decided, before it changes anything.
type plan struct {
	Cluster      string             `json:"cluster"`
	Context      string             `json:"context"`
	Discovered   *discover.Cluster  `json:"discovered"`
	Address      string             `json:"clusterAddress"`
	Endpoint     string             `json:"endpoint"`
	CoreDNSIP    string             `json:"kubelinkDNSServiceIP"`
	Images       []string           `json:"images"`
	Values       map[string]any     `json:"values"`
	Upgrade      bool               `json:"upgrade"`
	Chart        string             `json:"chart"`
	existingLink *v1alpha1.KubeLink `json:"-"`
	release      *releasev1.Release `json:"-"`
}

func (o *installOptions) run(ctx context.Context, g *globals) error {
	if g.output != "" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("-o %q: must be json or yaml", g.output)
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	ch, chartFrom, err := loadChart(o.chart)
	if err != nil {
		return err
	}
	c, err := g.connect(ctx)
	if err != nil {
		return err
	}
	ns := *g.kube.Namespace
	g.progress("cluster %q (%s, Kubernetes %s): discovering its networks", c.context, c.host, c.version)
	p := &plan{Cluster: o.name, Context: c.context, Chart: chartFrom}
	if p.Discovered, err = o.discover(ctx, c); err != nil {
		return err
	}
	d := p.Discovered
	for _, l := range []string{
		fmt.Sprintf("service CIDR %s (from %s)", d.ServiceCIDR(), d.ServiceCIDRs.Source),
		fmt.Sprintf("pod CIDR %s (from %s)", prefixes(d.PodCIDRs.Value), d.PodCIDRs.Source),
		fmt.Sprintf("node network %s (from %s)", d.NodeCIDR.Value, d.NodeCIDR.Source),
		fmt.Sprintf("kube-proxy mode %s (from %s)", d.KubeProxyMode.Value, d.KubeProxyMode.Source),
		fmt.Sprintf("cluster domain %s (from %s)", d.ClusterDomain.Value, d.ClusterDomain.Source),
		fmt.Sprintf("cluster DNS %s (from %s)", d.DNSServiceIP.Value, d.DNSServiceIP.Source),
	} {
		g.progress("  %s", l)
	}
	meshCIDR := netip.MustParsePrefix(o.meshCIDR)
	if err := d.CheckOutside("mesh CIDR", meshCIDR); err != nil {
		return err
	}

	// What is there already: the release and this cluster's links.
	cfg := action.NewConfiguration()
	if err := cfg.Init(c.flags, ns, "secret"); err != nil {
		return fmt.Errorf("helm: %w", err)
	}
	if rel, err := action.NewGet(cfg).Run(releaseName); err == nil {
		p.release, _ = rel.(*releasev1.Release)
		p.Upgrade = true
	} else if !errors.Is(err, driver.ErrReleaseNotFound) {
		return fmt.Errorf("reading the kubelink release in namespace %s: %w", ns, err)
	}
	addr, err := o.pickAddress(ctx, c, meshCIDR, p)
	if err != nil {
		return err
	}
	p.Address = netip.PrefixFrom(addr, meshCIDR.Bits()).String()
	// A kubelink DNS address given with -f/--set (dns.serviceIP) is used
	// as it is, also for the DNS hook; else install picks one.
	given, err := o.userValues(map[string]any{})
	if err != nil {
		return err
	}
	if dv, ok := given["dns"].(map[string]any); ok {
		if ip, ok := dv["serviceIP"].(string); ok && ip != "" {
			a, perr := netip.ParseAddr(ip)
			if perr != nil || !d.ServiceCIDR().Contains(a) {
				return fmt.Errorf("dns.serviceIP %q: must be an address of the service CIDR %s", ip, d.ServiceCIDR())
			}
			p.CoreDNSIP = ip
		}
	}
	if p.CoreDNSIP == "" {
		if p.CoreDNSIP, err = o.coreDNSIP(ctx, c, ns, d.ServiceCIDR()); err != nil {
			return err
		}
	}
	if o.expose == "hostport" && o.gatewayNode == "" && p.release != nil {
		// Run again: the gateway node the release has.
		o.gatewayNode = valueAt(p.release.Config, "broker.expose.hostPort.node")
	}
	if p.Endpoint, err = o.endpoint(ctx, c); err != nil {
		return err
	}
	tag := o.version
	if tag == "" {
		// The images of the same build as this binary (make images tags
		// them with its version); a binary without a version (go build)
		// takes the chart's appVersion.
		tag = ch.Metadata.AppVersion
		if buildinfo.Version != "" && buildinfo.Version != "v0.0.0-dev" {
			tag = buildinfo.Version
		}
		o.version = tag
	}
	base := map[string]any{}
	if p.release != nil {
		// An upgrade keeps what the earlier installs set (e.g. --set,
		// -f, --mesh-authority) unless this run sets it again.
		base = deepCopyValues(p.release.Config)
	}
	mergeValues(base, o.values(p))
	if p.Values, err = o.userValues(base); err != nil {
		return err
	}
	if dp, ok := p.Values["dataPlane"].(string); ok {
		o.dataPlane = dp // a --set or -f dataPlane is what runs
	}
	// The images the chart will run, from the merged values: an earlier
	// install's registry, or one given with -f/--set, is the one checked.
	img, _ := p.Values["image"].(map[string]any)
	repos, _ := p.Values["images"].(map[string]any)
	registry, _ := img["registry"].(string)
	if t, ok := img["tag"].(string); ok && t != "" {
		tag = t
	}
	components := []string{"broker", "router", "meshdns", "certwatch", "coredns"}
	if mcsEnabled(p.Values) {
		components = append(components, "mcs")
	}
	for _, component := range components {
		repo, _ := repos[component].(string)
		if repo == "" {
			repo = "kubelink/" + component
		}
		p.Images = append(p.Images, imageRef(registry, repo, tag))
	}
	if !o.skipImageCheck {
		g.progress("checking that the registry has the %d images (tag %s)", len(p.Images), tag)
		if err := checkImages(ctx, p.Images, o.insecureRegistry); err != nil {
			return err
		}
	}
	// The chart renders with these values (its own checks pass) before
	// anything is written: helm would install the CRDs first.
	if err := renderCheck(ctx, c.version, ch, ns, p.Values); err != nil {
		return err
	}
	if o.dryRun {
		g.progress("dry run: nothing changed")
		return printObject(g, p, func() {
			fmt.Fprintf(g.out, "would %s kubelink in %q as %s (mesh %s, address %s, endpoint %s, %s data plane)\n",
				map[bool]string{true: "upgrade", false: "install"}[p.Upgrade], c.context, o.name, o.mesh, p.Address, p.Endpoint, o.dataPlane)
		})
	}

	// From here on the cluster changes.
	if err := ensureNamespace(ctx, g, c, ns); err != nil {
		return err
	}
	if err := ensureCRDs(ctx, g, c, ch); err != nil {
		return err
	}
	if err := o.helm(ctx, g, cfg, ch, ns, p); err != nil {
		return err
	}
	if p.Endpoint == "" {
		if err := o.waitLoadBalancer(ctx, g, cfg, ch, ns, p, c); err != nil {
			return err
		}
	}
	if err := o.localLink(ctx, c, p); err != nil {
		return err
	}
	if err := o.hookDNS(ctx, g, c, p.CoreDNSIP, p.Discovered.ClusterDNSName, mcsEnabled(p.Values)); err != nil {
		return err
	}
	kl, err := waitReady(ctx, g, c, ns, o.name, o.dataPlane, p.Upgrade)
	if err != nil {
		return err
	}
	return printObject(g, kl, func() {
		printLinks(g.out, []v1alpha1.KubeLink{*kl})
		fmt.Fprintf(g.out, "\nkubelink %s in %q: cluster %s at %s in mesh %s, reached at %s.\n",
			map[bool]string{true: "upgraded", false: "installed"}[p.Upgrade], c.context, o.name, p.Address, o.mesh, p.Endpoint)
	})
}

func prefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

// discover runs the discovery; a flag given by hand replaces its fact.
func (o *installOptions) discover(ctx context.Context, c *cluster) (*discover.Cluster, error) {
	d, err := discover.Discover(ctx, c.cs)
	if d == nil {
		return nil, err
	}
	if o.serviceCIDR != "" {
		d.ServiceCIDRs = discover.Value[[]netip.Prefix]{Value: []netip.Prefix{netip.MustParsePrefix(o.serviceCIDR)}, Source: "--service-cidr"}
	}
	if o.podCIDR != "" {
		d.PodCIDRs = discover.Value[[]netip.Prefix]{Value: []netip.Prefix{netip.MustParsePrefix(o.podCIDR)}, Source: "--pod-cidr"}
	}
	if o.nodeCIDR != "" {
		d.NodeCIDR = discover.Value[netip.Prefix]{Value: netip.MustParsePrefix(o.nodeCIDR), Source: "--node-cidr"}
	}
	var missing []string
	if !d.ServiceCIDR().IsValid() {
		missing = append(missing, "the service CIDR (--service-cidr)")
	}
	if len(d.PodCIDRs.Value) == 0 {
		missing = append(missing, "the pod CIDR (--pod-cidr)")
	}
	if !d.NodeCIDR.Value.IsValid() {
		missing = append(missing, "the node network (--node-cidr)")
	}
	if !d.DNSServiceIP.Value.IsValid() {
		missing = append(missing, "the cluster DNS Service")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("could not discover %s: %v", strings.Join(missing, ", "), err)
	}
	return d, nil
}

// pickAddress: --address, else the LocalLink's, else the first address of
// the mesh CIDR no KubeLink of this cluster uses. An address a peer's
// KubeLink holds is refused, naming the link.
func (o *installOptions) pickAddress(ctx context.Context, c *cluster, mesh netip.Prefix, p *plan) (netip.Addr, error) {
	var links v1alpha1.KubeLinkList
	if err := c.c.List(ctx, &links); err != nil && !isNoKind(err) {
		return netip.Addr{}, fmt.Errorf("listing KubeLinks: %w", err)
	}
	used := map[netip.Addr]string{}
	for i := range links.Items {
		l := &links.Items[i]
		a, err := netip.ParsePrefix(l.Spec.ClusterAddress)
		if err != nil {
			continue
		}
		if l.Spec.Endpoint == v1alpha1.EndpointLocalLink {
			if l.Name != o.name {
				return netip.Addr{}, fmt.Errorf("this cluster is already in the mesh as %q (LocalLink %s, address %s): install again with --name %s, or delete that LocalLink first", l.Name, l.Name, l.Spec.ClusterAddress, l.Name)
			}
			p.existingLink = l.DeepCopy()
			if o.address == "" && mesh.Contains(a.Addr()) {
				return a.Addr(), nil
			}
			continue
		}
		if l.Name == o.name {
			return netip.Addr{}, fmt.Errorf("KubeLink %s is a link to a peer (endpoint %s), not this cluster's LocalLink: install with another --name", l.Name, l.Spec.Endpoint)
		}
		used[a.Addr()] = "KubeLink " + l.Name
	}
	if o.address != "" {
		a := netip.MustParseAddr(o.address)
		if who, ok := used[a]; ok {
			return netip.Addr{}, fmt.Errorf("mesh address %s is taken by the peer of %s in this cluster: choose another --address (or leave it out for the first free one)", a, who)
		}
		return a, nil
	}
	for a := mesh.Addr().Next(); mesh.Contains(a) && a != lastAddr(mesh); a = a.Next() {
		if _, ok := used[a]; !ok {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("mesh CIDR %s has no free address left (%d KubeLinks use it): choose a larger --mesh-cidr", mesh, len(used))
}

// isNoKind: the CRDs are not there yet (a fresh cluster), so no KubeLinks.
func isNoKind(err error) bool {
	return err != nil && (meta.IsNoMatchError(err) || discovery.IsGroupDiscoveryFailedError(err) ||
		strings.Contains(err.Error(), "no matches for") || apierrors.IsNotFound(err))
}

// coreDNSIP is the address of the kubelink CoreDNS Service: what it has,
// else the service CIDR's base + 11 if that is free.
func (o *installOptions) coreDNSIP(ctx context.Context, c *cluster, ns string, svcCIDR netip.Prefix) (string, error) {
	svc, err := c.cs.CoreV1().Services(ns).Get(ctx, "kubelink-coredns", metav1.GetOptions{})
	if err == nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != "None" {
		return svc.Spec.ClusterIP, nil
	}
	ip := svcCIDR.Addr()
	for range 11 {
		ip = ip.Next()
	}
	probe := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelink-coredns-probe", Namespace: "default"},
		Spec:       corev1.ServiceSpec{ClusterIP: ip.String(), Ports: []corev1.ServicePort{{Port: 53}}},
	}
	if _, err := c.cs.CoreV1().Services("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		return "", fmt.Errorf("the kubelink DNS Service's address %s (service CIDR + 11) is not free: %v", ip, err)
	}
	return ip.String(), nil
}

// endpoint is where peers reach this cluster's broker.
func (o *installOptions) endpoint(ctx context.Context, c *cluster) (string, error) {
	port := wireguardPort
	if o.dataPlane == "bridge" {
		port = bridgePort
	}
	var gateway *corev1.Node
	if o.expose == "hostport" {
		n, err := o.pickGatewayNode(ctx, c)
		if err != nil {
			return "", err
		}
		gateway = n
		o.hostPortNode = n.Name
		if h := n.Labels[corev1.LabelHostname]; h != "" {
			o.hostPortNode = h
		}
	}
	if o.expose == "loadbalancer" || o.expose == "hostport" {
		port = wireguardServicePort
		if o.dataPlane == "bridge" {
			port = bridgeServicePort
		}
	}
	if o.announce != "" {
		if _, _, err := splitHostPort(o.announce, port); err != nil {
			return "", fmt.Errorf("--announce %q: %v", o.announce, err)
		}
		h, pt, _ := splitHostPort(o.announce, port)
		return fmt.Sprintf("%s:%d", h, pt), nil
	}
	if o.expose == "loadbalancer" {
		// The LoadBalancer's address, when the Service has one already
		// (an upgrade); else it is waited for after the install.
		svc, err := c.cs.CoreV1().Services(*o.ns).Get(ctx, "kubelink-broker", metav1.GetOptions{})
		if err == nil && svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			if h := lbAddress(svc); h != "" {
				return fmt.Sprintf("%s:%d", h, port), nil
			}
		}
		return "", nil
	}
	if gateway != nil {
		for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
			if ip, ok := nodeIPv4(gateway, t); ok {
				return fmt.Sprintf("%s:%d", ip, port), nil
			}
		}
		return "", fmt.Errorf("the gateway node %s has no IPv4 ExternalIP or InternalIP to announce: give --announce host[:port]", gateway.Name)
	}
	nodes, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	sort.Slice(nodes.Items, func(i, j int) bool { return nodes.Items[i].Name < nodes.Items[j].Name })
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			continue
		}
		if ip, ok := nodeIPv4(&n, corev1.NodeInternalIP); ok {
			return fmt.Sprintf("%s:%d", ip, port), nil
		}
	}
	return "", errors.New("no Ready node with an IPv4 InternalIP to announce: give --announce host[:port]")
}

// pickGatewayNode is --gateway-node (a node's name or its
// kubernetes.io/hostname label), else the cluster's only node. It must be
// Ready: the broker is pinned to it.
func (o *installOptions) pickGatewayNode(ctx context.Context, c *cluster) (*corev1.Node, error) {
	nodes, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the nodes for --expose hostport: %w", err)
	}
	var names []string
	var found *corev1.Node
	for i := range nodes.Items {
		n := &nodes.Items[i]
		names = append(names, n.Name)
		if o.gatewayNode != "" && (n.Name == o.gatewayNode || n.Labels[corev1.LabelHostname] == o.gatewayNode) {
			found = n
		}
	}
	sort.Strings(names)
	switch {
	case o.gatewayNode == "" && len(nodes.Items) == 1:
		found = &nodes.Items[0]
	case o.gatewayNode == "":
		return nil, fmt.Errorf("--expose hostport pins the broker to one node: name it with --gateway-node (one of %s), a node whose address the peers reach", strings.Join(names, ", "))
	case found == nil:
		return nil, fmt.Errorf("--gateway-node %q: no such node (the nodes: %s)", o.gatewayNode, strings.Join(names, ", "))
	}
	if !nodeReady(found) {
		return nil, fmt.Errorf("--gateway-node %s: the node is not Ready; the broker is pinned to it, so pick a Ready node", found.Name)
	}
	if found.Spec.Unschedulable {
		return nil, fmt.Errorf("--gateway-node %s: the node is cordoned, so the broker pinned to it could not start: kubectl uncordon %s, or pick another node", found.Name, found.Name)
	}
	return found, nil
}

// nodeIPv4 is n's first IPv4 address of type t.
func nodeIPv4(n *corev1.Node, t corev1.NodeAddressType) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); a.Type == t && err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func splitHostPort(s string, def int) (string, int, error) {
	if i := strings.LastIndex(s, ":"); i > 0 && !strings.HasSuffix(s, "]") {
		p, err := strconv.Atoi(s[i+1:])
		if err != nil || p < 1 || p > 65535 {
			return "", 0, errors.New("port must be 1-65535")
		}
		return s[:i], p, nil
	}
	return s, def, nil
}

// userValues merges --values files and then --set into v.
func (o *installOptions) userValues(v map[string]any) (map[string]any, error) {
	for _, f := range o.valueFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--values: %w", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("--values %s: %w", f, err)
		}
		mergeValues(v, m)
	}
	for _, kv := range o.set {
		if err := strvals.ParseInto(kv, v); err != nil {
			return nil, fmt.Errorf("--set %s: %w", kv, err)
		}
	}
	return v, nil
}

// deepCopyValues copies a values tree (maps are copied, leaves shared).
func deepCopyValues(src map[string]any) map[string]any {
	out := make(map[string]any, len(src))
	for k, v := range src {
		if m, ok := v.(map[string]any); ok {
			v = deepCopyValues(m)
		}
		out[k] = v
	}
	return out
}

// mergeValues copies src into dst, merging maps key by key.
func mergeValues(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// values are the chart's values for this install.
func (o *installOptions) values(p *plan) map[string]any {
	d := p.Discovered
	host, _, _ := splitHostPort(p.Endpoint, 0)
	if host == "" {
		// A LoadBalancer without its address yet: the certificate's name
		// until install has waited for the address and set it.
		host = "kubelink-broker." + *o.ns + ".svc"
	}
	v := map[string]any{
		"cluster": map[string]any{
			"podCIDR":     d.PodCIDRs.Value[0].String(),
			"serviceCIDR": d.ServiceCIDR().String(),
			"nodeCIDR":    d.NodeCIDR.Value.String(),
		},
		"dataPlane": o.dataPlane,
		"bridge":    map[string]any{"name": host, "identities": "kubelink://" + o.mesh + "/" + o.name},
		"dns":       map[string]any{"serviceIP": p.CoreDNSIP},
		"broker": map[string]any{"expose": map[string]any{
			"type": map[string]string{"nodeport": "NodePort", "loadbalancer": "LoadBalancer", "hostport": "HostPort"}[o.expose]}},
	}
	if o.hostPortNode != "" {
		v["broker"].(map[string]any)["expose"].(map[string]any)["hostPort"] = map[string]any{"node": o.hostPortNode}
	}
	if o.meshAuthority || p.release == nil {
		v["meshAuthority"] = map[string]any{"enabled": o.meshAuthority}
	}
	img := map[string]any{}
	if o.registry != "" {
		img["registry"] = o.registry
	}
	if o.version != "" {
		img["tag"] = o.version
	}
	if len(img) > 0 {
		v["image"] = img
	}
	return v
}

func imageRef(registry, repo, tag string) string {
	if registry == "" {
		return repo + ":" + tag
	}
	return strings.TrimSuffix(registry, "/") + "/" + repo + ":" + tag
}

// helm installs the chart, or upgrades the release in place.
func (o *installOptions) helm(ctx context.Context, g *globals, cfg *action.Configuration, ch chartType, ns string, p *plan) error {
	if p.Upgrade {
		g.progress("upgrading release %s in namespace %s (revision %d)", releaseName, ns, p.release.Version)
		return helmTimedOut(ctx, g, "upgrading", upgrade(ctx, g, cfg, ch, ns, p.Values))
	}
	g.progress("installing release %s into namespace %s (chart %s)", releaseName, ns, p.Chart)
	in := action.NewInstall(cfg)
	in.Namespace, in.ReleaseName, in.CreateNamespace = ns, releaseName, true
	in.WaitStrategy = kube.HookOnlyStrategy
	in.Timeout = g.timeout
	if _, err := in.RunWithContext(ctx, ch, p.Values); err != nil {
		return helmTimedOut(ctx, g, "installing", fmt.Errorf("helm install: %w", err))
	}
	return nil
}

// helmTimedOut says so when --timeout ran out while helm wrote the
// release (on a slow API server), in the words of the other waits.
func helmTimedOut(ctx context.Context, g *globals, doing string, err error) error {
	if err == nil || (!errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
		return err
	}
	return fmt.Errorf("timed out after %s %s release %s (--timeout sets the limit): %w", g.timeout, doing, releaseName, err)
}

// renderCheck renders the chart with the values, as helm install would,
// without touching the cluster: a value the chart refuses stops install
// before anything is written.
func renderCheck(ctx context.Context, kubeVersion string, ch chartType, ns string, values map[string]any) error {
	// A client-only install replaces its Configuration's client and
	// storage with fakes: it gets one of its own.
	in := action.NewInstall(action.NewConfiguration())
	in.Namespace, in.ReleaseName = ns, releaseName
	in.DryRunStrategy = action.DryRunClient
	in.Replace = true
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return fmt.Errorf("the cluster's Kubernetes version %q: %w", kubeVersion, err)
	}
	in.KubeVersion = kv
	if _, err := in.RunWithContext(ctx, ch, values); err != nil {
		return fmt.Errorf("the chart refuses these values: %w", err)
	}
	return nil
}

// ensureNamespace creates the namespace with the Pod Security level the
// broker and router need (privileged: NET_ADMIN, host network, the tun
// device), or labels an existing one; a cluster that enforces a stricter
// level would otherwise refuse the pods and install would only time out.
func ensureNamespace(ctx context.Context, g *globals, c *cluster, ns string) error {
	const label = "pod-security.kubernetes.io/enforce"
	cur, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{label: "privileged", "app.kubernetes.io/part-of": "kubelink"}}}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if cur.Labels[label] == "privileged" {
		return nil
	}
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	g.progress("namespace %s: Pod Security level %q -> privileged (the broker and router need it)", ns, cur.Labels[label])
	cur.Labels[label] = "privileged"
	if _, err := c.cs.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("labelling namespace %s privileged: %w", ns, err)
	}
	return nil
}

// lbAddress is the first address a LoadBalancer Service got.
func lbAddress(svc *corev1.Service) string {
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			return in.IP
		}
		if in.Hostname != "" {
			return in.Hostname
		}
	}
	return ""
}

// waitLoadBalancer waits until the broker's LoadBalancer Service has an
// address, then makes it the endpoint and the bridge's certificate name
// (an upgrade of the release just installed).
func (o *installOptions) waitLoadBalancer(ctx context.Context, g *globals, cfg *action.Configuration, ch chartType, ns string, p *plan, c *cluster) error {
	port := wireguardServicePort
	if o.dataPlane == "bridge" {
		port = bridgeServicePort
	}
	start := time.Now()
	g.progress("waiting for the LoadBalancer address of Service %s/kubelink-broker (--announce host[:port] skips this)", ns)
	for {
		svc, err := c.cs.CoreV1().Services(ns).Get(ctx, "kubelink-broker", metav1.GetOptions{})
		if err == nil {
			if h := lbAddress(svc); h != "" {
				p.Endpoint = fmt.Sprintf("%s:%d", h, port)
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for the LoadBalancer address of Service %s/kubelink-broker: does this cluster provision LoadBalancers? (kubectl -n %s describe svc kubelink-broker shows its events; --expose nodeport, or --announce the address peers reach)",
				time.Since(start).Round(time.Second), ns, ns)
		case <-time.After(time.Second):
		}
	}
	g.progress("LoadBalancer address %s after %s; setting it as the broker's name", p.Endpoint, time.Since(start).Round(time.Second))
	host, _, _ := splitHostPort(p.Endpoint, 0)
	if b, ok := p.Values["bridge"].(map[string]any); ok {
		b["name"] = host
	}
	if err := upgrade(ctx, g, cfg, ch, ns, p.Values); err != nil {
		return fmt.Errorf("setting the LoadBalancer address: %w", err)
	}
	return nil
}

// upgrade upgrades the release in place with values; it does not wait
// for the workloads (install's own wait follows).
func upgrade(ctx context.Context, g *globals, cfg *action.Configuration, ch chartType, ns string, values map[string]any) error {
	up := action.NewUpgrade(cfg)
	up.Namespace = ns
	// The chart is the one source of the release's objects: a field someone
	// changed by hand (kubectl edit or scale of the broker) is set back to
	// the chart's value, not a conflict that stops the upgrade halfway.
	// What should stay goes into values (-f, --set). Only server-side apply
	// has conflicts: a release applied client side (helm 3, or helm 4 with
	// --server-side=false) stays so ("auto"), where helm refuses the force.
	if rel, err := action.NewGet(cfg).Run(releaseName); err == nil {
		if r, ok := rel.(*releasev1.Release); ok && r.ApplyMethod == string(releasev1.ApplyMethodServerSideApply) {
			up.ForceConflicts = true
		}
	}
	up.WaitStrategy = kube.HookOnlyStrategy
	up.Timeout = g.timeout
	if _, err := up.RunWithContext(ctx, releaseName, ch, values); err != nil {
		return fmt.Errorf("helm upgrade: %w", err)
	}
	return nil
}

// brokerEndpointSlice is the EndpointSlice of the Service kubelink-broker
// that the active broker points at itself (the Service has no selector).
const brokerEndpointSlice = "kubelink-broker-active"

// dropControllerEndpoints deletes what Kubernetes' controllers made for the
// Service kubelink-broker while an older chart gave it a selector: its
// Endpoints and their EndpointSlices stay when the selector goes, and
// kube-proxy would keep sending peers to the pods they name (a standby, or
// a pod long gone) next to the active broker's own slice.
func dropControllerEndpoints(ctx context.Context, g *globals, c *cluster, ns string) error {
	const svc = "kubelink-broker"
	var errs []error
	if err := c.cs.CoreV1().Endpoints(ns).Delete(ctx, svc, metav1.DeleteOptions{}); err == nil {
		g.progress("deleted the Endpoints %s/%s an earlier version's Service selector left", ns, svc)
	} else if !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("deleting the Endpoints %s/%s left by an earlier version: %w", ns, svc, err))
	}
	list, err := c.cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing the EndpointSlices of %s/%s: %w", ns, svc, err))...)
	}
	for _, s := range list.Items {
		if s.Name == brokerEndpointSlice {
			continue
		}
		if err := c.cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting the EndpointSlice %s/%s left by an earlier version: %w", ns, s.Name, err))
			continue
		}
		g.progress("deleted the EndpointSlice %s/%s (managed by %s) an earlier version's Service selector left", ns, s.Name, s.Labels[discoveryv1.LabelManagedBy])
	}
	return errors.Join(errs...)
}

// localLink creates or updates the cluster's LocalLink.
func (o *installOptions) localLink(ctx context.Context, c *cluster, p *plan) error {
	kl := &v1alpha1.KubeLink{}
	kl.Name = o.name
	if p.existingLink != nil {
		kl = p.existingLink
	}
	_, err := ctrlCreateOrUpdate(ctx, c.c, kl, func() {
		kl.Spec.Endpoint = v1alpha1.EndpointLocalLink
		kl.Spec.ClusterAddress = p.Address
		kl.Spec.CIDR = p.Discovered.ServiceCIDR().String()
		if kl.Annotations == nil {
			kl.Annotations = map[string]string{}
		}
		kl.Annotations[EndpointAnnotation] = p.Endpoint
	})
	if err != nil {
		return fmt.Errorf("LocalLink %s: %w", o.name, err)
	}
	return nil
}

func ctrlCreateOrUpdate(ctx context.Context, c client.Client, kl *v1alpha1.KubeLink, mutate func()) (bool, error) {
	var cur v1alpha1.KubeLink
	err := c.Get(ctx, client.ObjectKey{Name: kl.Name}, &cur)
	if apierrors.IsNotFound(err) {
		mutate()
		return true, c.Create(ctx, kl)
	}
	if err != nil {
		return false, err
	}
	*kl = cur
	mutate()
	return false, c.Update(ctx, kl)
}

// meshZone is the DNS zone of the mesh the cluster DNS forwards.
const meshZone = "kubelink"

// mcsEnabled tells whether the chart values run kubelink-mcs (the chart's
// default: on).
func mcsEnabled(values map[string]any) bool {
	m, _ := values["mcs"].(map[string]any)
	return m == nil || m["enabled"] != false
}

// clusterSetMarker is the comment line install writes above its
// clusterset.local block: only a block under it is kubelink's to replace or
// remove (another MCS implementation may hook the same zone).
const clusterSetMarker = "# kubelink: clusterset.local to the kubelink CoreDNS (kubelinkctl install)"

// removeOurBlocks drops kubelink's blocks from a Corefile: the mesh zone's
// and the clusterset.local block under clusterSetMarker. It returns the
// rest and the zones it removed.
func removeOurBlocks(cf string) (string, []string) {
	var removed []string
	if strings.Contains(cf, meshZone+":53 {") {
		cf = removeBlock(cf, meshZone+":53 {")
		removed = append(removed, meshZone)
	}
	lines := strings.Split(cf, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.TrimSpace(lines[i]) == clusterSetMarker && strings.TrimSpace(lines[i+1]) == meshdns.ClusterSetZone+":53 {" {
			before := strings.Join(lines[:i], "\n")
			after := removeBlock(strings.Join(lines[i+1:], "\n"), meshdns.ClusterSetZone+":53 {")
			cf = strings.TrimRight(before, "\n") + "\n" + strings.TrimLeft(after, "\n")
			removed = append(removed, meshdns.ClusterSetZone)
			break
		}
	}
	return strings.TrimRight(cf, "\n"), removed
}

// hookDNS adds the mesh zone (and with clusterSet the clusterset.local
// zone) to the cluster DNS (a CoreDNS Corefile in kube-system/coredns),
// forwarding to the kubelink CoreDNS, and restarts CoreDNS when it changed.
// Without --dns-hook, or for another cluster DNS, it says what to add.
func (o *installOptions) hookDNS(ctx context.Context, g *globals, c *cluster, ip, deployment string, clusterSet bool) error {
	// The block kubelink-meshdns writes into coredns-custom where the
	// cluster DNS imports it.
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("the kubelink DNS address %q: %w", ip, err)
	}
	cm, err := c.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	var rest string
	if err == nil {
		rest, _ = removeOurBlocks(cm.Data["Corefile"])
	}
	zone := ""
	if clusterSet {
		zone = meshdns.ClusterSetZone
		if strings.Contains(rest, meshdns.ClusterSetZone+":53 {") {
			g.progress("warning: kube-system/coredns already has a %s block that is not kubelink's (another MCS implementation?): left alone, and %s names are not forwarded to kubelink", meshdns.ClusterSetZone, meshdns.ClusterSetZone)
			zone = ""
		}
	}
	block, err2 := meshdns.CorednsCustom([]meshdns.MeshInput{{Name: "default", Domain: meshZone}}, zone, addr, meshdns.DefaultClusterDNSPort)
	if err2 != nil {
		return err2
	}
	block = strings.TrimRight(block, "\n")
	if zone != "" {
		block = strings.Replace(block, "\n"+zone+":53 {", "\n"+clusterSetMarker+"\n"+zone+":53 {", 1)
	}
	if !o.dnsHook || err != nil || cm.Data["Corefile"] == "" {
		why := "--dns-hook=false"
		if o.dnsHook {
			why = "no CoreDNS Corefile in kube-system/coredns"
		}
		g.progress("the cluster DNS is not changed (%s): add these server blocks to it, so that names under .%s resolve:\n%s", why, strings.TrimSuffix(meshZone+" and ."+zone, " and ."), block)
		return nil
	}
	cf := rest + "\n" + block + "\n"
	if strings.TrimSpace(cf) == strings.TrimSpace(cm.Data["Corefile"]) {
		return nil
	}
	cm.Data["Corefile"] = cf
	if _, err := c.cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("adding the mesh zone to kube-system/coredns: %w (or install with --dns-hook=false and add it by hand)", err)
	}
	if deployment == "" {
		deployment = "coredns"
	}
	g.progress("added zone %s (forward to %s) to kube-system/coredns; restarting kube-system/%s", meshZone, ip, deployment)
	return restartDeployment(ctx, c, "kube-system", deployment)
}

// removeBlock drops a server block starting with the line head, and the
// comment kubelink-meshdns writes above it.
func removeBlock(cf, head string) string {
	var out []string
	depth, skip := 0, false
	for _, line := range strings.Split(cf, "\n") {
		if !skip && strings.TrimSpace(line) == head {
			skip, depth = true, 0
			if n := len(out); n > 0 && strings.HasPrefix(strings.TrimSpace(out[n-1]), "# Generated by kubelink-meshdns") {
				out = out[:n-1]
			}
		}
		if skip {
			depth += strings.Count(line, "{") - strings.Count(line, "}")
			if depth <= 0 {
				skip = false
			}
			continue
		}
		out = append(out, line)
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n")
}

func restartDeployment(ctx context.Context, c *cluster, ns, name string) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
	_, err := c.cs.AppsV1().Deployments(ns).Patch(ctx, name, "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("restarting %s/%s: %w", ns, name, err)
	}
	return nil
}

// waitReady waits for a ready broker and a LocalLink with its gateway (and
// in WireGuard mode its public key), printing what it waits for. After an
// upgrade, once the active broker's EndpointSlice names a ready endpoint,
// it deletes what an older chart's Service selector left (not before: until
// then those are the only way to the old broker).
func waitReady(ctx context.Context, g *globals, c *cluster, ns, name, dataPlane string, upgrade bool) (*v1alpha1.KubeLink, error) {
	start := time.Now()
	last := ""
	for {
		if upgrade && activeEndpoint(ctx, c, ns) {
			if err := dropControllerEndpoints(ctx, g, c, ns); err != nil {
				return nil, err
			}
			upgrade = false
		}
		var kl v1alpha1.KubeLink
		state := ""
		dep, err := c.cs.AppsV1().Deployments(ns).Get(ctx, "kubelink-broker", metav1.GetOptions{})
		switch {
		case err != nil:
			state = "the broker Deployment: " + err.Error()
		case dep.Status.ObservedGeneration < dep.Generation || dep.Status.UpdatedReplicas < 1:
			state = "the broker Deployment to roll out"
		case dep.Status.ReadyReplicas < 1:
			state = "a ready broker: " + podTrouble(ctx, c, ns, dep)
		case !activeEndpoint(ctx, c, ns):
			state = "the active broker to point the Service kubelink-broker at itself (EndpointSlice " + brokerEndpointSlice + ")"
		default:
			if err := c.c.Get(ctx, client.ObjectKey{Name: name}, &kl); err != nil {
				state = "LocalLink " + name + ": " + err.Error()
			} else if !strings.HasPrefix(kl.Status.DataPlane, dataPlane) { // wireguard-kernel, wireguard-userspace, bridge
				state = fmt.Sprintf("the LocalLink's data plane to be %s (it is %q)", dataPlane, kl.Status.DataPlane)
			} else if dataPlane == "wireguard" && kl.Status.PublicKey == "" {
				state = "the LocalLink's public key"
			} else if kl.Status.Gateway == "" {
				state = "the LocalLink's gateway"
			} else {
				g.progress("broker ready and LocalLink %s published after %s", name, time.Since(start).Round(time.Second))
				return &kl, nil
			}
		}
		if state != last {
			g.progress("waiting for %s", state)
			last = state
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("timed out after %s waiting for %s (--timeout sets the limit; `kubectl -n %s get pods` and `kubectl -n %s logs deploy/kubelink-broker` show more)",
				time.Since(start).Round(time.Second), state, ns, ns)
		case <-time.After(time.Second):
		}
	}
}

// activeEndpoint tells whether the active broker's EndpointSlice names a
// ready endpoint.
func activeEndpoint(ctx context.Context, c *cluster, ns string) bool {
	s, err := c.cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, brokerEndpointSlice, metav1.GetOptions{})
	return err == nil && sliceNames(s, "")
}

// podTrouble names why the broker pods are not ready, e.g. an image that
// cannot be pulled.
func podTrouble(ctx context.Context, c *cluster, ns string, dep *appsv1.Deployment) string {
	pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kubelink-broker"})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Sprintf("%d of %d pods created", len(pods.Items), ptrInt(dep.Spec.Replicas))
	}
	var why []string
	for _, p := range pods.Items {
		for _, s := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			if w := s.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
				why = append(why, fmt.Sprintf("%s/%s %s: %s", p.Name, s.Name, w.Reason, w.Message))
			}
		}
	}
	if len(why) == 0 {
		return fmt.Sprintf("%d pods, none ready yet", len(pods.Items))
	}
	return strings.Join(why, "; ")
}

func ptrInt(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
