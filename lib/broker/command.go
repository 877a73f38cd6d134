package broker

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/kubeflags"
)

// Main is the main function of kubelink-broker (fixedMode "") and of
// kubelink-bridge (fixedMode ModeBridge: the bridge data plane on its own,
// with only the flags that matter to it). Both are this one broker.
func Main(name, short, fixedMode string) {
	setGCPercent()
	cmd := cli.New(name, short)
	c := Defaults()
	if fixedMode != "" {
		c.Mode = fixedMode
	}
	bridge := c.Mode == ModeBridge && fixedMode != ""
	var common kubeflags.Common
	var cleanup bool
	var served string
	f := cmd.Flags
	common.Register(f)
	f.StringVar(&c.Namespace, "namespace", kubeflags.DefaultNamespace(c.Namespace), "namespace of the key Secret and the Lease")
	if fixedMode == "" {
		f.StringVar(&c.Mode, "mode", c.Mode, "data plane: wireguard, bridge (TLS over TCP) or none")
	}
	f.StringVar(&c.CertDir, "cert-dir", c.CertDir, "bridge mode: directory with tls.crt, tls.key and ca.crt (reloaded when they change)")
	f.IntVar(&c.BridgePort, "bridge-port", c.BridgePort, "bridge mode: TCP port of the bridge (also the default port of link endpoints)")
	f.BoolVar(&c.AutoConnect, "auto-connect", c.AutoConnect, "bridge mode: create a KubeLink for a peer whose certificate verifies against the CA but that has no link, from its handshake")
	f.IntVar(&c.AutoConnectLargestCIDR, "auto-connect-largest-cidr", c.AutoConnectLargestCIDR, "bridge mode, with --auto-connect: the largest service CIDR (as a prefix length) a peer's handshake may announce for a proposal; a larger one is refused")
	f.IntVar(&c.AdvertisedPort, "advertised-port", c.AdvertisedPort, "bridge mode: the port announced in the handshake, where peers reach this bridge (e.g. a NodePort; 0: --bridge-port)")
	f.BoolVar(&c.DNSAdvertisement, "dns-advertisement", c.DNSAdvertisement, "bridge mode: announce --cluster-domain and --dns-service-ip in the handshake, for the peers' mesh DNS")
	f.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "bridge mode, with --dns-advertisement: the local cluster domain")
	kubeflags.AddrVar(f, &c.DNSServiceIP, "dns-service-ip", "bridge mode, with --dns-advertisement: the local cluster DNS Service IP (default: the LocalLink's cidr, else --service-cidr, + 10)")
	if !bridge {
		f.StringVar(&c.WireGuard, "wireguard", c.WireGuard, "WireGuard implementation: auto (kernel if available, else embedded wireguard-go), kernel or userspace")
		f.IntVar(&c.ListenPort, "listen-port", c.ListenPort, "WireGuard UDP port (also the default port of link endpoints)")
		f.IntVar(&c.ListenPort, "broker-port", c.ListenPort, "the original's name of --listen-port")
		_ = f.MarkDeprecated("broker-port", "use --listen-port")
		f.StringVar(&c.Secret, "secret", c.Secret, "Secret with the WireGuard private key (key WireguardPrivateKey or WireGuardPrivateKey)")
		f.DurationVar(&c.Keepalive, "keepalive", c.Keepalive, "WireGuard persistent keepalive")
		f.DurationVar(&c.ResolveInterval, "resolve-interval", c.ResolveInterval, "how often endpoint DNS names are resolved again")
	}
	f.StringVar(&c.Interface, "ifce-name", c.Interface, "name of the mesh device")
	f.IntVar(&c.MTU, "mtu", c.MTU, "device MTU (0: node interface MTU - 80)")
	kubeflags.PrefixVar(f, &c.NodeCIDR, "node-cidr", "node network CIDR (required; an interface in it means node mode)")
	kubeflags.PrefixVar(f, &c.PodCIDR, "pod-cidr", "pod network CIDR (pod mode)")
	kubeflags.AddrVar(f, &c.NodeIP, "node-ip", "IP of the node (pod mode; from the downward API status.hostIP)")
	kubeflags.PrefixVar(f, &c.ServiceCIDR, "service-cidr", "local service CIDR")
	f.IntVar(&c.RouteTable, "route-table", c.RouteTable, "routing table for mesh routes (254 = main; other tables get an ip rule)")
	f.IntVar(&c.RulePriority, "rule-priority", c.RulePriority, "priority of the ip rule for --route-table")
	f.DurationVar(&c.ProbeInterval, "probe-interval", c.ProbeInterval, "health probe interval through the tunnel")
	f.DurationVar(&c.ProbeDownAfter, "probe-down-after", c.ProbeDownAfter, "a link is Down after this long without a probe reply")
	f.IntVar(&c.ProbePort, "probe-port", c.ProbePort, "UDP port of the health-probe responder on the cluster addresses; probes are sent from the next port")
	f.IntVar(&c.MCSPort, "mcs-port", c.MCSPort, "TCP port on the cluster addresses where the active broker serves this cluster's Multi-Cluster Services export record to the peers and fetches theirs (docs/mcs.md); 0: off")
	f.DurationVar(&c.HealthEvery, "health-status-interval", c.HealthEvery, "minimum time between status writes that only change health figures")
	f.DurationVar(&c.Resync, "resync", c.Resync, "period of the full sync (also runs on every change)")
	f.BoolVar(&c.LeaderElect, "leader-elect", c.LeaderElect, "run only while holding the Lease (replicas wait as standby)")
	f.StringVar(&c.LeaseName, "lease-name", c.LeaseName, "name of the Lease")
	f.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "Lease duration")
	f.DurationVar(&c.RenewDeadline, "lease-renew-deadline", c.RenewDeadline, "Lease renew deadline")
	f.DurationVar(&c.RetryPeriod, "lease-retry-period", c.RetryPeriod, "Lease retry period")
	f.IntVar(&c.FencePort, "fence-port", c.FencePort, "UDP port on which the active broker, on its pod (node) IP, takes the request of a standby that took its lease over to stop its data plane (one gateway at a time also when only this node lost the API server); the same on every replica, brokers splitting the meshes on one node need different ones; 0: off")
	f.DurationVar(&c.FenceWait, "fence-wait", c.FenceWait, "how long a broker that took the lease over waits for the previous holder to confirm it stopped before it opens its data plane anyway (a dead node never answers)")
	f.StringVar(&c.Identity, "identity", kubeflags.DefaultIdentity(), "identity of this replica in the Lease")
	f.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "address serving /healthz, /readyz and /metrics (empty: off)")
	f.StringVar(&c.ActiveEndpointSlice, "active-endpoint-slice", c.ActiveEndpointSlice, "while active, point this EndpointSlice of --active-service at this pod (the Service has no selector; every healthy replica is then Ready); empty: only the active replica is Ready")
	f.StringVar(&c.ActiveService, "active-service", c.ActiveService, "with --active-endpoint-slice: the Service through which peers reach the gateway")
	kubeflags.AddrVar(f, &c.PodIP, "pod-ip", "with --active-endpoint-slice: this pod's IP (downward API status.podIP)")
	f.StringVar(&c.PodName, "pod-name", os.Getenv("POD_NAME"), "with --active-endpoint-slice: this pod's name (downward API metadata.name)")
	f.StringVar(&c.PodUID, "pod-uid", c.PodUID, "with --active-endpoint-slice: this pod's UID (downward API metadata.uid)")
	f.StringVar(&c.NodeName, "node-name", c.NodeName, "with --active-endpoint-slice: this pod's node (downward API spec.nodeName; externalTrafficPolicy Local needs it)")
	f.StringVar(&served, "served-links", "all", "meshes this broker serves: all, or a comma list of mesh names (default for the default mesh) or mesh CIDRs; brokers splitting the meshes need different --lease-name")
	f.BoolVar(&cleanup, "cleanup", false, "remove every device, route, rule and chain kubelink created in this network namespace, then exit")

	cmd.Main(func() error {
		var err error
		if c.Served, err = ParseServed(served); err != nil {
			return err
		}
		if cleanup {
			return Cleanup(c)
		}
		if err := c.Validate(); err != nil {
			return err
		}
		return common.Serve(func(ctx context.Context, rest *rest.Config, log *slog.Logger) error {
			b, err := New(c, rest, log)
			if err != nil {
				return err
			}
			return b.Run(ctx, rest)
		})
	})
}

// gcPercent is the broker's GOGC unless the environment sets one. Most of
// its heap is embedded WireGuard's preallocated packet buffers (about
// 24 MiB of 64 KiB buffers, whatever the number of links), which hold no
// pointers: a collection does not scan them, so collecting more often costs
// little, while Go's default of 100 lets the heap grow to twice them before
// it collects — half of the broker's memory at 250 links (issue #33).
const gcPercent = 25

func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
