// Command kubelink-meshdns renders the Corefile of the kubelink CoreDNS so
// that <svc>.<ns>.svc.<cluster>.<mesh-domain> resolves in every cluster: one
// server block per remote cluster whose link is Up, written into a Secret,
// with a restart of the CoreDNS deployment when it changed; optionally it
// also hooks the mesh domains into the cluster DNS (coredns-custom).
package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/meshdns"
)

func main() {
	cmd := cli.New("kubelink-meshdns", "renders the Corefile of the kubelink CoreDNS so that <svc>.<ns>.svc.<cluster>.<mesh-domain> resolves in every cluster")
	c := meshdns.Defaults()
	var common kubeflags.Common
	f := cmd.Flags
	common.Register(f)
	f.StringVar(&c.Mode, "dns-propagation", c.Mode, "none (write nothing), dns (rewrite and forward to each remote cluster DNS) or kubernetes (kubernetes plugin against each remote API server, credentials from spec.apiAccess)")
	f.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "name of this cluster in the meshes (default: the cluster part of each mesh's LocalLink name)")
	f.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "domain of this cluster")
	kubeflags.AddrVar(f, &c.DNSServiceIP, "dns-service-ip", "IP of this cluster's DNS service (default: --service-cidr + 10, else the LocalLink's cidr + 10)")
	kubeflags.PrefixVar(f, &c.ServiceCIDR, "service-cidr", "this cluster's service CIDR")
	kubeflags.PrefixVar(f, &c.NodeCIDR, "node-cidr", "this cluster's node network: a link whose cidr or egress overlaps it gets no DNS block (as the broker makes it Stale)")
	kubeflags.PrefixVar(f, &c.PodCIDR, "pod-cidr", "this cluster's pod network (as --node-cidr)")
	kubeflags.AddrVar(f, &c.KubelinkDNSIP, "kubelink-dns-ip", "ClusterIP of the kubelink CoreDNS Service, target of the coredns-custom hook (default: --service-cidr + 11)")
	kubeflags.AddrVar(f, &c.KubelinkDNSIP, "coredns-service-ip", "the original's name of --kubelink-dns-ip")
	_ = f.MarkDeprecated("coredns-service-ip", "use --kubelink-dns-ip")
	f.StringVar(&c.Namespace, "namespace", kubeflags.DefaultNamespace(c.Namespace), "namespace of the CoreDNS Secret and Deployment, and the default namespace of apiAccess Secrets")
	f.StringVar(&c.Secret, "coredns-secret", c.Secret, "Secret that receives the keys Corefile and kubeconfig")
	f.StringVar(&c.Deployment, "coredns-deployment", c.Deployment, "kubelink CoreDNS Deployment, restarted when the Secret content changes")
	f.BoolVar(&c.LinkGate, "link-gate", c.LinkGate, "dns mode: keep every link's block in the Corefile behind the kubelinkgate plugin of kubelink's CoreDNS, which answers NXDOMAIN while the link is not Up (no Corefile change and no CoreDNS restart on health changes; the CoreDNS needs to read KubeLinks)")
	f.BoolVar(&c.Configure, "coredns-configure", c.Configure, "write key kubelink.server of kube-system/coredns-custom (forward the mesh domains to the kubelink DNS) and restart kube-system/coredns when it changes")
	f.StringVar(&c.ClusterSetZone, "clusterset-zone", c.ClusterSetZone, "serve <svc>.<ns>.svc.<zone> of the Multi-Cluster Services API from this cluster's ServiceImports in the kubelink CoreDNS, and forward the zone to it in the hook (e.g. clusterset.local; empty: off). The kubelink CoreDNS then needs to list and watch Services, EndpointSlices, Namespaces and ServiceImports")
	f.IntVar(&c.ClusterDNSPort, "cluster-dns-port", c.ClusterDNSPort, "port of the cluster DNS server blocks in the hook (53; gardener: 8053)")
	f.DurationVar(&c.Resync, "resync", c.Resync, "period of the full sync (also runs on every KubeLink change)")
	f.DurationVar(&c.AccessPoll, "api-access-poll", c.AccessPoll, "kubernetes mode: how often the apiAccess Secrets are re-read (by name, get only) to pick up a rotated token")
	f.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "address serving /healthz, /readyz and /metrics (empty: off)")

	cmd.Main(func() error {
		if err := c.Validate(); err != nil {
			return err
		}
		return common.Serve(func(ctx context.Context, rest *rest.Config, log *slog.Logger) error {
			ctrl, err := meshdns.New(c, rest, log)
			if err != nil {
				return err
			}
			return ctrl.Run(ctx)
		})
	})
}
