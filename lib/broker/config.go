// Package broker is the gateway controller: it turns KubeLinks into a
// running data plane (WireGuard device, addresses, routes, SNAT and firewall
// chains, peers) and reports each link's health in its status. One replica is
// active at a time (Lease); the others wait.
package broker

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/netapply"
	"github.com/kubelink/kubelink/lib/probe"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// Modes of the broker.
const (
	ModeWireGuard = "wireguard"
	ModeNone      = "none"
	ModeBridge    = "bridge"
)

// Config is the broker's configuration (one flag each, see cmd/broker).
type Config struct {
	Namespace string
	Mode      string
	// WireGuard is auto, kernel or userspace.
	WireGuard  string
	Interface  string
	ListenPort int
	Secret     string
	MTU        int
	// CertDir holds tls.crt, tls.key and ca.crt of the bridge (bridge mode).
	CertDir string
	// BridgePort is the TCP port of the bridge (bridge mode), also the
	// default port of link endpoints there.
	BridgePort int
	// AutoConnect (bridge mode) creates a KubeLink for an authenticated
	// peer without one, from its HELLO.
	AutoConnect bool
	// AutoConnectLargestCIDR is the shortest prefix length of a service
	// CIDR that auto-connect proposes (a larger one is refused).
	AutoConnectLargestCIDR int
	// AdvertisedPort (bridge mode) is the port announced in the HELLO:
	// where peers reach this bridge, e.g. a NodePort; 0 means BridgePort.
	AdvertisedPort int
	// DNSAdvertisement (bridge mode) announces ClusterDomain and
	// DNSServiceIP in the HELLO (the DNS extension).
	DNSAdvertisement bool
	// ClusterDomain is the local cluster domain (DNS advertisement).
	ClusterDomain string
	// DNSServiceIP is the local cluster DNS Service IP (DNS
	// advertisement); invalid means the local service CIDR + 10.
	DNSServiceIP netip.Addr

	NodeCIDR    netip.Prefix
	PodCIDR     netip.Prefix
	NodeIP      netip.Addr
	ServiceCIDR netip.Prefix

	RouteTable   int
	RulePriority int

	Keepalive       time.Duration
	ResolveInterval time.Duration
	ProbeInterval   time.Duration
	ProbeDownAfter  time.Duration
	ProbePort       int
	// MCSPort is the TCP port on the cluster addresses where the active
	// broker serves this cluster's export record of the Multi-Cluster
	// Services API and fetches the peers' (lib/mcs Exchange); 0: off.
	MCSPort     int
	HealthEvery time.Duration
	Resync      time.Duration

	LeaderElect   bool
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	Identity      string
	// FencePort is the UDP port on which the active broker takes fence
	// requests of a standby that took its lease over (fence.go); 0: off.
	FencePort int
	// FenceWait bounds how long a new holder waits for the old one to
	// acknowledge the fence before it opens its data plane anyway.
	FenceWait time.Duration

	MetricsAddr string

	// ActiveEndpointSlice names the EndpointSlice of ActiveService that
	// the active broker points at its own pod (endpoint.go); empty: off
	// (a Service selecting Ready brokers, and only the active one is
	// Ready).
	ActiveEndpointSlice string
	ActiveService       string
	// The pod of this broker (downward API): its address, name, UID and
	// node, for the EndpointSlice.
	PodIP    netip.Addr
	PodName  string
	PodUID   string
	NodeName string

	// Served selects the meshes this broker serves (--served-links).
	Served Served
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		Namespace: "kubelink", Mode: ModeWireGuard, WireGuard: wireguard.ModeAuto, Interface: "kubelink",
		ListenPort: 8777, BridgePort: 8088, ClusterDomain: mesh.DefaultClusterDomain, Secret: "wireguard", RouteTable: 254, RulePriority: 32750,
		Keepalive: 21 * time.Second, ResolveInterval: 30 * time.Second,
		ProbeInterval: 500 * time.Millisecond, ProbeDownAfter: 1500 * time.Millisecond, ProbePort: probe.DefaultPort, MCSPort: probe.DefaultPort,
		HealthEvery: 10 * time.Second, Resync: 10 * time.Second,
		LeaderElect: true, LeaseName: "kubelink-broker", LeaseDuration: 4 * time.Second,
		RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond, FencePort: 8776, FenceWait: 1500 * time.Millisecond,
		MetricsAddr: ":8080", AutoConnectLargestCIDR: 16,
	}
}

// Validate checks the configuration and explains what is wrong.
func (c *Config) Validate() error {
	var errs []error
	if c.MCSPort < 0 || c.MCSPort > 65535 {
		errs = append(errs, fmt.Errorf("--mcs-port=%d: must be 1-65535, or 0 (off)", c.MCSPort))
	}
	if c.ProbePort < 1 || c.ProbePort > 65534 {
		errs = append(errs, fmt.Errorf("--probe-port=%d: must be 1-65534 (probes are sent from the next port)", c.ProbePort))
	}
	switch c.Mode {
	case ModeWireGuard, ModeNone:
	case ModeBridge:
		if c.CertDir == "" {
			errs = append(errs, errors.New("--cert-dir is required in bridge mode (tls.crt, tls.key and ca.crt)"))
		}
		if c.BridgePort < 1 || c.BridgePort > 65535 {
			errs = append(errs, fmt.Errorf("--bridge-port=%d: must be 1-65535", c.BridgePort))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode=%q: must be wireguard, bridge or none", c.Mode))
	}
	if c.AutoConnectLargestCIDR < 1 || c.AutoConnectLargestCIDR > 32 {
		errs = append(errs, fmt.Errorf("--auto-connect-largest-cidr=%d: must be a prefix length 1-32", c.AutoConnectLargestCIDR))
	}
	if c.AutoConnect && c.Mode != ModeBridge {
		errs = append(errs, errors.New("--auto-connect works in bridge mode only (peers are identified by their certificates)"))
	}
	if c.AdvertisedPort < 0 || c.AdvertisedPort > 65535 {
		errs = append(errs, fmt.Errorf("--advertised-port=%d: must be 1-65535 (0: --bridge-port)", c.AdvertisedPort))
	} else if c.AdvertisedPort != 0 && c.Mode != ModeBridge {
		errs = append(errs, errors.New("--advertised-port works in bridge mode only (it is announced in the bridge handshake)"))
	}
	if c.DNSAdvertisement {
		if c.Mode != ModeBridge {
			errs = append(errs, errors.New("--dns-advertisement works in bridge mode only (it is announced in the bridge handshake)"))
		}
		if err := CheckClusterDomain(c.ClusterDomain); err != nil {
			errs = append(errs, fmt.Errorf("--cluster-domain: %w", err))
		}
		if a := c.DNSServiceIP; a.IsValid() && (a.IsUnspecified() || a.Is4In6() || a.Zone() != "") {
			errs = append(errs, fmt.Errorf("--dns-service-ip=%s: must be a plain IPv4 or IPv6 address", a))
		}
	}
	switch c.WireGuard {
	case wireguard.ModeAuto, wireguard.ModeKernel, wireguard.ModeUserspace:
	default:
		errs = append(errs, fmt.Errorf("--wireguard=%q: must be auto, kernel or userspace", c.WireGuard))
	}
	if c.Mode == ModeWireGuard && c.Secret == "" {
		errs = append(errs, errors.New("--secret is required in wireguard mode (the Secret holding WireguardPrivateKey)"))
	}
	if !c.NodeCIDR.IsValid() {
		errs = append(errs, errors.New("--node-cidr is required (the node network, used to tell node mode from pod mode)"))
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("--listen-port=%d: must be 1-65535", c.ListenPort))
	}
	if c.RouteTable < 1 || c.RouteTable > 252 && c.RouteTable != 254 {
		errs = append(errs, fmt.Errorf("--route-table=%d: must be 254 (main) or 1-252", c.RouteTable))
	}
	if c.ProbeDownAfter < c.ProbeInterval {
		errs = append(errs, errors.New("--probe-down-after must be at least --probe-interval"))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("--resync=%s: must be positive", c.Resync))
	}
	if c.LeaderElect && !(c.LeaseDuration > c.RenewDeadline && c.RenewDeadline > c.RetryPeriod) {
		errs = append(errs, errors.New("leader election needs --lease-duration > --lease-renew-deadline > --lease-retry-period"))
	}
	if c.FencePort < 0 || c.FencePort > 65535 {
		errs = append(errs, fmt.Errorf("--fence-port=%d: must be 0 (off) or 1-65535", c.FencePort))
	}
	if c.FencePort != 0 && c.FenceWait <= 0 {
		errs = append(errs, fmt.Errorf("--fence-wait=%s: must be positive", c.FenceWait))
	}
	if c.ActiveEndpointSlice != "" {
		if c.ActiveService == "" {
			errs = append(errs, errors.New("--active-endpoint-slice needs --active-service (the Service it belongs to)"))
		}
		if !c.PodIP.IsValid() || c.PodIP.IsUnspecified() || c.PodIP.Zone() != "" {
			errs = append(errs, errors.New("--active-endpoint-slice needs --pod-ip (from the downward API status.podIP)"))
		}
		if c.PodName == "" || c.PodUID == "" {
			errs = append(errs, errors.New("--active-endpoint-slice needs --pod-name and --pod-uid (from the downward API metadata.name and metadata.uid)"))
		}
	}
	if len(c.Interface) == 0 || len(c.Interface) > 15 {
		errs = append(errs, fmt.Errorf("--ifce-name=%q: must be 1-15 characters", c.Interface))
	}
	return errors.Join(errs...)
}

// RunMode says where the broker's device lives.
type RunMode struct {
	// PodMode is true when no local interface is in the node CIDR: the broker
	// runs in its own pod network namespace.
	PodMode bool
	// NodeIP is the gateway address published in link status.
	NodeIP netip.Addr
	// Interface is the node interface (node mode) or pod interface (pod mode).
	Interface string
	// PodIP is the broker pod's address (pod mode only).
	PodIP netip.Addr
}

// DetectRunMode implements node/pod mode detection: an interface address
// inside the node CIDR means node mode (hostNetwork); otherwise pod mode,
// which needs the node IP (downward API) and the pod CIDR.
func DetectRunMode(c *Config, ifaces func() ([]net.Interface, error)) (RunMode, error) {
	list, err := ifaces()
	if err != nil {
		return RunMode{}, fmt.Errorf("listing interfaces: %w", err)
	}
	find := func(p netip.Prefix) (string, netip.Addr) { return netapply.InterfaceIn(list, p) }
	if name, ip := find(c.NodeCIDR); name != "" {
		return RunMode{NodeIP: ip, Interface: name}, nil
	}
	if !c.NodeIP.IsValid() {
		return RunMode{}, fmt.Errorf("no interface in --node-cidr %s, so this is pod mode, which needs --node-ip (from the downward API status.hostIP)", c.NodeCIDR)
	}
	if !c.NodeCIDR.Contains(c.NodeIP) {
		return RunMode{}, fmt.Errorf("--node-ip %s is not in --node-cidr %s", c.NodeIP, c.NodeCIDR)
	}
	if !c.PodCIDR.IsValid() {
		return RunMode{}, errors.New("pod mode needs --pod-cidr (to find the pod interface)")
	}
	name, podIP := find(c.PodCIDR)
	if name == "" {
		return RunMode{}, fmt.Errorf("pod mode: no interface with an address in --pod-cidr %s", c.PodCIDR)
	}
	return RunMode{PodMode: true, NodeIP: c.NodeIP, Interface: name, PodIP: podIP}, nil
}
