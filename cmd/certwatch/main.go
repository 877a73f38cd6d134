// Command kubelink-certwatch materialises the kubelink TLS Secret and
// WireGuard key Secret as files with an atomic swap (like the kubelet's
// AtomicWriter), so that the broker and the bridge pick up new certificates
// and keys without a restart; with --secret-manage-mode=self it keeps its
// own CA and renews a CA-signed certificate (with --sign-requests it also
// signs the other clusters' requests), with csr it has that mesh authority
// sign its certificate without holding the CA key, and it generates a WireGuard
// key pair into the Secret when there is none.
package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/certwatch"
	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/kubeflags"
)

func main() {
	cmd := cli.New("kubelink-certwatch", "materialises TLS and WireGuard secrets as files with an atomic swap and manages keys and certificates")
	c := certwatch.Defaults()
	var common kubeflags.Common
	f := cmd.Flags
	common.Register(f)
	f.StringVar(&c.Namespace, "namespace", kubeflags.DefaultNamespace(c.Namespace), "namespace of the TLS and WireGuard Secrets")
	f.StringVar(&c.TLSSecret, "tls-secret", c.TLSSecret, "TLS Secret (keys tls.crt, tls.key, ca.crt; ca.key when self-managed); empty: no TLS files")
	f.StringVar(&c.WireGuardSecret, "wireguard-secret", c.WireGuardSecret, "WireGuard key Secret (key WireguardPrivateKey, WireGuardPrivateKey also accepted; generated when missing); empty: no WireGuard files")
	f.StringVar(&c.Dir, "dir", c.Dir, "output directory: <dir>/tls/{tls.crt,tls.key,ca.crt} and <dir>/wireguard/{privatekey,publickey}")
	f.StringVar(&c.Mode, "secret-manage-mode", c.Mode, "none (the TLS Secret is managed elsewhere and only read), self (keep a CA and a CA-signed certificate for --dns-name in the Secret) or csr (keep a key in the Secret and have the mesh authority sign the certificate; no CA key here)")
	f.BoolVar(&c.Sign, "sign-requests", c.Sign, "with self: be the mesh authority, i.e. publish the CA certificate in ConfigMap "+certwatch.CAConfigMap+" and sign the CertificateSigningRequests ("+certwatch.SignerName+") of registered members")
	f.StringVar(&c.AuthorityKubeconfig, "authority-kubeconfig", c.AuthorityKubeconfig, "with csr: kubeconfig of the mesh authority's API server with this member's ServiceAccount credentials there")
	f.StringVar(&c.AuthoritySecret, "authority-secret", c.AuthoritySecret, "with csr, instead of --authority-kubeconfig: Secret in --namespace holding that kubeconfig (key "+certwatch.KeyAuthorityKubeconfig+"), read and watched through the API, so a new token there is used at once")
	f.StringVar(&c.AuthorityNamespace, "authority-namespace", c.AuthorityNamespace, "with csr: kubelink namespace of the mesh authority (where it publishes the CA)")
	f.StringVar(&c.DNSName, "dns-name", c.DNSName, "CN and DNS SAN of the managed certificate (required with self and csr)")
	f.StringVar(&c.Identities, "identities", c.Identities, "URI SANs of the self-managed certificate, comma separated: this cluster's identity in each mesh, kubelink://<mesh>/<cluster> (e.g. kubelink://default/a); bridge peers require it")
	f.DurationVar(&c.CertValidity, "cert-validity", c.CertValidity, "validity of a self-managed certificate; renewed when a third of it remains")
	f.DurationVar(&c.Resync, "resync", c.Resync, "period of the full sync (also runs on every Secret change and when the certificate is due)")
	f.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "address serving /healthz, /readyz and /metrics (empty: off)")

	cmd.Main(func() error {
		if err := c.Validate(); err != nil {
			return err
		}
		return common.Serve(func(ctx context.Context, rc *rest.Config, log *slog.Logger) error {
			ctrl, err := certwatch.New(c, rc, log)
			if err != nil {
				return err
			}
			return ctrl.Run(ctx)
		})
	})
}
