package meshdns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Names of what the controller writes.
const (
	// SecretKeyCorefile and SecretKeyKubeconfig are the keys of the Secret
	// the kubelink CoreDNS deployment mounts at /etc/coredns.
	SecretKeyCorefile   = "Corefile"
	SecretKeyKubeconfig = "kubeconfig"
	// HookNamespace, HookConfigMap and ClusterDNSDeployment are the cluster
	// DNS's import hook and deployment (gardener, AKS and others).
	HookNamespace        = "kube-system"
	HookConfigMap        = "coredns-custom"
	ClusterDNSDeployment = "coredns"
	// RestartAnnotation on a pod template restarts a deployment (as in the
	// original; kubectl rollout restart works the same way).
	RestartAnnotation = "kubelink.mandelsoft.org/restartedAt"
	// ConfigHashAnnotation records which Secret content the kubelink CoreDNS
	// pods were started with, so a restart missed (crash between writing the
	// Secret and restarting) is made up for, and no other sync restarts.
	ConfigHashAnnotation = "kubelink.mandelsoft.org/config-hash"
)

// Config is the controller's configuration (one flag each, see cmd/meshdns).
type Config struct {
	// Mode is none, dns or kubernetes (--dns-propagation).
	Mode string
	// ClusterName names the local cluster in the meshes ("": each LocalLink's
	// cluster name).
	ClusterName   string
	ClusterDomain string
	// DNSServiceIP is the local cluster DNS (default: service CIDR + 10).
	DNSServiceIP netip.Addr
	ServiceCIDR  netip.Prefix
	// NodeCIDR and PodCIDR are the cluster's own networks: links that
	// claim them are Stale here as in the broker (mesh.ReservedNetworks).
	NodeCIDR, PodCIDR netip.Prefix
	// KubelinkDNSIP is the ClusterIP of the kubelink CoreDNS Service the hook
	// forwards to (default: service CIDR + 11).
	KubelinkDNSIP netip.Addr

	Namespace  string
	Secret     string
	Deployment string
	// Configure manages the coredns-custom hook of the cluster DNS.
	Configure bool
	// LinkGate renders every link's block behind kubelinkgate (dns mode):
	// see InputOptions.LinkGate. The kubelink CoreDNS then needs read
	// access to KubeLinks.
	LinkGate       bool
	ClusterDNSPort int
	// ClusterSetZone serves the Multi-Cluster Services API's names under
	// this zone from the cluster's ServiceImports (--clusterset-zone, ""
	// off; the chart sets clusterset.local with mcs.enabled): the kubelink
	// CoreDNS then needs to read Services, EndpointSlices, Namespaces and
	// ServiceImports.
	ClusterSetZone string

	Resync time.Duration
	// AccessPoll (kubernetes mode) is how often the apiAccess Secrets are
	// re-read to notice a rotated token: they are read by name, with get
	// only, rather than watched (which needs list and watch on every Secret
	// of their namespace).
	AccessPoll  time.Duration
	MetricsAddr string
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		Mode: ModeNone, ClusterDomain: mesh.DefaultClusterDomain,
		Namespace: "kubelink", Secret: "kubelink-coredns", Deployment: "kubelink-coredns",
		ClusterDNSPort: DefaultClusterDNSPort, Resync: 30 * time.Second, AccessPoll: 2 * time.Second, MetricsAddr: ":8080",
	}
}

// Validate checks the flags and fills in derived defaults.
func (c *Config) Validate() error {
	var errs []error
	// DNS names are case-insensitive; CoreDNS zones are compared lower-case.
	c.ClusterName, c.ClusterDomain = strings.ToLower(c.ClusterName), strings.ToLower(c.ClusterDomain)
	switch c.Mode {
	case ModeNone, ModeDNS, ModeKubernetes:
	default:
		errs = append(errs, fmt.Errorf("--dns-propagation=%q: must be none, dns or kubernetes", c.Mode))
	}
	if c.ClusterName != "" {
		if err := checkName("--cluster-name", c.ClusterName); err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkName("--cluster-domain", c.ClusterDomain); err != nil {
		errs = append(errs, err)
	}
	if c.Namespace == "" || c.Secret == "" || c.Deployment == "" {
		errs = append(errs, errors.New("--namespace, --coredns-secret and --coredns-deployment must not be empty"))
	}
	if !c.DNSServiceIP.IsValid() && c.ServiceCIDR.IsValid() {
		c.DNSServiceIP = mesh.DNSServiceIP(c.ServiceCIDR)
	}
	if !c.KubelinkDNSIP.IsValid() {
		c.KubelinkDNSIP = DefaultKubelinkDNS(c.ServiceCIDR)
	}
	if c.Configure && c.Mode != ModeNone && !c.KubelinkDNSIP.IsValid() {
		errs = append(errs, errors.New("--coredns-configure needs --kubelink-dns-ip or --service-cidr (the hook forwards the mesh domains to the kubelink DNS Service)"))
	}
	c.ClusterSetZone = strings.ToLower(strings.TrimSuffix(c.ClusterSetZone, "."))
	if c.ClusterSetZone != "" {
		if err := checkName("--clusterset-zone", c.ClusterSetZone); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClusterDNSPort < 1 || c.ClusterDNSPort > 65535 {
		errs = append(errs, fmt.Errorf("--cluster-dns-port=%d: must be 1-65535", c.ClusterDNSPort))
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.AccessPoll <= 0 {
		c.AccessPoll = 2 * time.Second
	}
	return errors.Join(errs...)
}
