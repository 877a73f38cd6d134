// Package discover finds what an install of kubelink needs to know about a
// cluster and what users otherwise look up by hand: the service CIDR, the
// pod CIDRs, the node network, the kube-proxy mode, the cluster domain and
// the cluster DNS Service. Every value says where it came from, so that a
// user can check it, and each has a documented fallback for clusters that
// lack the first source (docs/install.md).
package discover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Value is one discovered fact and where it came from.
type Value[T any] struct {
	Value  T      `json:"value"`
	Source string `json:"source"`
}

// Cluster is what Discover found.
type Cluster struct {
	ServiceCIDRs   Value[[]netip.Prefix] `json:"serviceCIDRs"`
	PodCIDRs       Value[[]netip.Prefix] `json:"podCIDRs"`
	NodeCIDR       Value[netip.Prefix]   `json:"nodeCIDR"`
	KubeProxyMode  Value[string]         `json:"kubeProxyMode"`
	ClusterDomain  Value[string]         `json:"clusterDomain"`
	DNSServiceIP   Value[netip.Addr]     `json:"dnsServiceIP"`
	ClusterDNSName string                `json:"clusterDNSDeployment,omitempty"`
}

// ServiceCIDR is the first service CIDR (the one of the address family
// kubelink routes).
func (c *Cluster) ServiceCIDR() netip.Prefix {
	if len(c.ServiceCIDRs.Value) == 0 {
		return netip.Prefix{}
	}
	return c.ServiceCIDRs.Value[0]
}

// Discover reads the cluster's facts with the client's permissions (an
// admin running install). A fact that cannot be found is an error naming
// it and the flag that sets it by hand.
func Discover(ctx context.Context, cs kubernetes.Interface) (*Cluster, error) {
	c := &Cluster{}
	// Read once: several facts come from these two.
	kubeadm := kubeadmNetworking(ctx, cs)
	proxy := kubeProxyConfig(ctx, cs)
	var errs []error
	var err error
	if c.ServiceCIDRs, err = serviceCIDRs(ctx, cs, kubeadm); err != nil {
		errs = append(errs, fmt.Errorf("service CIDR: %w (set it with --service-cidr)", err))
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the nodes: %w", err)
	}
	if c.PodCIDRs, err = podCIDRs(kubeadm, proxy, nodes.Items); err != nil {
		errs = append(errs, fmt.Errorf("pod CIDR: %w (set it with --pod-cidr)", err))
	}
	if c.NodeCIDR, err = nodeCIDR(nodes.Items); err != nil {
		errs = append(errs, fmt.Errorf("node network: %w (set it with --node-cidr)", err))
	}
	c.KubeProxyMode = kubeProxyMode(proxy)
	c.ClusterDomain = clusterDomain(ctx, cs, kubeadm)
	if c.DNSServiceIP, c.ClusterDNSName, err = dnsService(ctx, cs); err != nil {
		errs = append(errs, fmt.Errorf("cluster DNS: %w", err))
	}
	return c, errors.Join(errs...)
}

// kubeadm's ClusterConfiguration networking, when the cluster has one.
type kubeadmNet struct {
	PodSubnet, ServiceSubnet, DNSDomain string
}

func kubeadmNetworking(ctx context.Context, cs kubernetes.Interface) *kubeadmNet {
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubeadm-config", metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var cfg struct {
		Networking struct {
			PodSubnet     string `json:"podSubnet"`
			ServiceSubnet string `json:"serviceSubnet"`
			DNSDomain     string `json:"dnsDomain"`
		} `json:"networking"`
	}
	if yaml.Unmarshal([]byte(cm.Data["ClusterConfiguration"]), &cfg) != nil {
		return nil
	}
	return &kubeadmNet{cfg.Networking.PodSubnet, cfg.Networking.ServiceSubnet, cfg.Networking.DNSDomain}
}

// parsePrefixes parses a comma-separated list of CIDRs (kubeadm's form).
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// serviceCIDRs: the networking.k8s.io/v1 ServiceCIDR objects (GA in
// Kubernetes 1.33); then kubeadm's serviceSubnet; then the range the API
// server names when a dry-run Service asks for an address outside it.
func serviceCIDRs(ctx context.Context, cs kubernetes.Interface, kubeadm *kubeadmNet) (Value[[]netip.Prefix], error) {
	list, err := cs.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if err == nil {
		var out []netip.Prefix
		var names []string
		for _, sc := range list.Items {
			if sc.DeletionTimestamp != nil {
				continue
			}
			for _, s := range sc.Spec.CIDRs {
				if p, err := netip.ParsePrefix(s); err == nil && !slices.Contains(out, p.Masked()) {
					out = append(out, p.Masked())
				}
			}
			names = append(names, sc.Name)
		}
		if len(out) > 0 {
			sortFamilies(out)
			return Value[[]netip.Prefix]{out, "ServiceCIDR " + strings.Join(names, ", ")}, nil
		}
	} else if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) && !isNoMatch(err) {
		return Value[[]netip.Prefix]{}, fmt.Errorf("listing ServiceCIDRs: %w", err)
	}
	if kubeadm != nil && kubeadm.ServiceSubnet != "" {
		if out, err := parsePrefixes(kubeadm.ServiceSubnet); err == nil {
			sortFamilies(out)
			return Value[[]netip.Prefix]{out, "kube-system/kubeadm-config networking.serviceSubnet"}, nil
		}
	}
	return serviceRangeFromDryRun(ctx, cs)
}

var validRange = regexp.MustCompile(`valid IPs is ([0-9a-fA-F.:/]+)`)

// serviceRangeFromDryRun asks the API server, in a server-side dry run
// that stores nothing, for a Service with an address no cluster uses; the
// refusal names the service range ("The range of valid IPs is ...").
func serviceRangeFromDryRun(ctx context.Context, cs kubernetes.Interface) (Value[[]netip.Prefix], error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelink-discover-service-range", Namespace: "default"},
		Spec:       corev1.ServiceSpec{ClusterIP: "0.0.0.1", Ports: []corev1.ServicePort{{Port: 1}}},
	}
	_, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil {
		return Value[[]netip.Prefix]{}, errors.New("not found: no ServiceCIDR objects, no kubeadm-config, and the API server accepted a dry-run Service at 0.0.0.1")
	}
	m := validRange.FindStringSubmatch(err.Error())
	if m == nil {
		return Value[[]netip.Prefix]{}, fmt.Errorf("not found: no ServiceCIDR objects, no kubeadm-config, and the API server's answer names no range: %v", err)
	}
	p, perr := netip.ParsePrefix(m[1])
	if perr != nil {
		return Value[[]netip.Prefix]{}, fmt.Errorf("the API server names the range %q: %v", m[1], perr)
	}
	return Value[[]netip.Prefix]{[]netip.Prefix{p.Masked()}, "the API server's answer to a dry-run Service outside the range"}, nil
}

func isNoMatch(err error) bool {
	// An API server without networking.k8s.io/v1 ServiceCIDR answers 404.
	var se apierrors.APIStatus
	return errors.As(err, &se) && se.Status().Code == 404
}

// podCIDRs: kubeadm's podSubnet; then kube-proxy's clusterCIDR; then the
// smallest prefix per family covering every node's spec.podCIDRs.
func podCIDRs(kubeadm *kubeadmNet, cfg *proxyConfig, nodes []corev1.Node) (Value[[]netip.Prefix], error) {
	if kubeadm != nil && kubeadm.PodSubnet != "" {
		if out, err := parsePrefixes(kubeadm.PodSubnet); err == nil {
			sortFamilies(out)
			return Value[[]netip.Prefix]{out, "kube-system/kubeadm-config networking.podSubnet"}, nil
		}
	}
	if cfg != nil && cfg.ClusterCIDR != "" {
		if out, err := parsePrefixes(cfg.ClusterCIDR); err == nil {
			sortFamilies(out)
			return Value[[]netip.Prefix]{out, "kube-system/kube-proxy clusterCIDR"}, nil
		}
	}
	var per []netip.Prefix
	for _, n := range nodes {
		for _, s := range n.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				per = append(per, p.Masked())
			}
		}
	}
	if len(per) == 0 {
		return Value[[]netip.Prefix]{}, errors.New("not found: no kubeadm-config podSubnet, no kube-proxy clusterCIDR, and no node has spec.podCIDRs")
	}
	out := coverPerFamily(per, 0)
	return Value[[]netip.Prefix]{out, fmt.Sprintf("the prefix covering the spec.podCIDRs of %d nodes", len(nodes))}, nil
}

// nodeCIDR is the smallest prefix covering every node's InternalIP, at
// least a /24 (IPv4) or /64 (IPv6): the API knows the nodes' addresses, not
// their subnet, so a wider node network must be given by hand.
func nodeCIDR(nodes []corev1.Node) (Value[netip.Prefix], error) {
	var ips []netip.Prefix
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ips = append(ips, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	if len(ips) == 0 {
		return Value[netip.Prefix]{}, errors.New("not found: no node has an InternalIP")
	}
	out := coverPerFamily(ips, 24)
	return Value[netip.Prefix]{out[0], fmt.Sprintf("the /%d or wider prefix covering the InternalIPs of %d nodes", out[0].Bits(), len(nodes))}, nil
}

// coverPerFamily returns, per address family (IPv4 first), the longest
// prefix that contains all of ps, at most minBits4 long for IPv4 (and
// minBits4+40 for IPv6) when minBits4 > 0.
func coverPerFamily(ps []netip.Prefix, minBits4 int) []netip.Prefix {
	var out []netip.Prefix
	for _, v4 := range []bool{true, false} {
		var fam []netip.Prefix
		for _, p := range ps {
			if p.Addr().Is4() == v4 {
				fam = append(fam, p)
			}
		}
		if len(fam) == 0 {
			continue
		}
		c := fam[0]
		for _, p := range fam[1:] {
			for !c.Contains(p.Addr()) || c.Bits() > p.Bits() {
				c = netip.PrefixFrom(c.Addr(), c.Bits()-1).Masked()
			}
		}
		limit := minBits4
		if !v4 && minBits4 > 0 {
			limit = minBits4 + 40
		}
		if limit > 0 && c.Bits() > limit {
			c = netip.PrefixFrom(c.Addr(), limit).Masked()
		}
		out = append(out, c)
	}
	return out
}

func sortFamilies(ps []netip.Prefix) {
	slices.SortStableFunc(ps, func(a, b netip.Prefix) int {
		switch {
		case a.Addr().Is4() && !b.Addr().Is4():
			return -1
		case !a.Addr().Is4() && b.Addr().Is4():
			return 1
		}
		return 0
	})
}

type proxyConfig struct {
	Mode        string `json:"mode"`
	ClusterCIDR string `json:"clusterCIDR"`
}

func kubeProxyConfig(ctx context.Context, cs kubernetes.Interface) *proxyConfig {
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var cfg proxyConfig
	if yaml.Unmarshal([]byte(cm.Data["config.conf"]), &cfg) != nil {
		return nil
	}
	return &cfg
}

// kubeProxyMode reads kube-proxy's configuration; an empty mode is
// iptables on Linux. Without a kube-proxy ConfigMap the mode is "unknown"
// (e.g. a CNI that replaces kube-proxy): kubelink needs none in particular.
func kubeProxyMode(cfg *proxyConfig) Value[string] {
	switch {
	case cfg == nil:
		return Value[string]{"unknown", "no readable kube-system/kube-proxy ConfigMap"}
	case cfg.Mode == "":
		return Value[string]{"iptables", "kube-system/kube-proxy (mode unset: the Linux default)"}
	}
	return Value[string]{cfg.Mode, "kube-system/kube-proxy mode"}
}

var corefileDomain = regexp.MustCompile(`(?m)^\s*kubernetes\s+(\S+)`)

// clusterDomain: the kubelet's clusterDomain; then kubeadm's dnsDomain;
// then the first zone of the cluster DNS's kubernetes plugin; else
// cluster.local.
func clusterDomain(ctx context.Context, cs kubernetes.Interface, kubeadm *kubeadmNet) Value[string] {
	if cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubelet-config", metav1.GetOptions{}); err == nil {
		var cfg struct {
			ClusterDomain string `json:"clusterDomain"`
		}
		if yaml.Unmarshal([]byte(cm.Data["kubelet"]), &cfg) == nil && cfg.ClusterDomain != "" {
			return Value[string]{strings.TrimSuffix(cfg.ClusterDomain, "."), "kube-system/kubelet-config clusterDomain"}
		}
	}
	if kubeadm != nil && kubeadm.DNSDomain != "" {
		return Value[string]{strings.TrimSuffix(kubeadm.DNSDomain, "."), "kube-system/kubeadm-config networking.dnsDomain"}
	}
	if cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err == nil {
		if m := corefileDomain.FindStringSubmatch(cm.Data["Corefile"]); m != nil {
			return Value[string]{strings.TrimSuffix(m[1], "."), "kube-system/coredns Corefile (kubernetes plugin)"}
		}
	}
	return Value[string]{"cluster.local", "the Kubernetes default (no kubelet-config, kubeadm-config or CoreDNS Corefile says otherwise)"}
}

// dnsService is the cluster DNS Service: kube-system/kube-dns (its name in
// kubeadm, kind, GKE, EKS and AKS), else the Service labelled
// k8s-app=kube-dns. It also names the Deployment behind it.
func dnsService(ctx context.Context, cs kubernetes.Interface) (Value[netip.Addr], string, error) {
	svcs := cs.CoreV1().Services("kube-system")
	svc, err := svcs.Get(ctx, "kube-dns", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		list, lerr := svcs.List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if lerr != nil {
			return Value[netip.Addr]{}, "", lerr
		}
		if len(list.Items) == 0 {
			return Value[netip.Addr]{}, "", errors.New("no Service kube-system/kube-dns or labelled k8s-app=kube-dns")
		}
		svc, err = &list.Items[0], nil
	}
	if err != nil {
		return Value[netip.Addr]{}, "", err
	}
	ip, perr := netip.ParseAddr(svc.Spec.ClusterIP)
	if perr != nil {
		return Value[netip.Addr]{}, "", fmt.Errorf("the Service kube-system/%s has no cluster IP (%q)", svc.Name, svc.Spec.ClusterIP)
	}
	deploy := ""
	if ds, err := cs.AppsV1().Deployments("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"}); err == nil && len(ds.Items) > 0 {
		deploy = ds.Items[0].Name
	}
	return Value[netip.Addr]{ip, "Service kube-system/" + svc.Name}, deploy, nil
}

// CheckOutside says whether p (e.g. the mesh CIDR, named what) overlaps
// anything of the cluster; the error names both ranges and where the
// cluster's came from.
func (c *Cluster) CheckOutside(what string, p netip.Prefix) error {
	type named struct {
		name, source string
		p            netip.Prefix
	}
	var ranges []named
	for _, s := range c.ServiceCIDRs.Value {
		ranges = append(ranges, named{"the service CIDR", c.ServiceCIDRs.Source, s})
	}
	for _, s := range c.PodCIDRs.Value {
		ranges = append(ranges, named{"the pod CIDR", c.PodCIDRs.Source, s})
	}
	if c.NodeCIDR.Value.IsValid() {
		ranges = append(ranges, named{"the node network", c.NodeCIDR.Source, c.NodeCIDR.Value})
	}
	var errs []error
	for _, r := range ranges {
		if r.p.Overlaps(p) {
			errs = append(errs, fmt.Errorf("%s %s overlaps %s %s of this cluster (from %s): choose a %s outside it", what, p, r.name, r.p, r.source, what))
		}
	}
	return errors.Join(errs...)
}
