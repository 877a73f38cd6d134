// Package certwatch materialises the kubelink TLS Secret and WireGuard key
// Secret as files in a shared directory, swapped atomically like the
// kubelet's AtomicWriter, and optionally manages them: a self-managed CA and
// a CA-signed certificate renewed when a third of its lifetime remains, and
// a WireGuard key pair generated when the key Secret lacks one.
package certwatch

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Secret management modes (--secret-manage-mode).
const (
	ModeNone = "none" // the TLS Secret is managed elsewhere; only read
	ModeSelf = "self" // certwatch keeps a CA and a CA-signed certificate in the Secret
	// ModeCSR: certwatch keeps a key in the Secret and has the mesh
	// authority sign its certificate through a CertificateSigningRequest;
	// the cluster never holds the CA key.
	ModeCSR = "csr"
)

// MinCertValidity is the shortest --cert-validity (tests use seconds).
const MinCertValidity = 3 * time.Second

// Secret data keys.
const (
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
	KeyCACert  = "ca.crt"
	KeyCAKey   = "ca.key"

	KeyWireGuardPrivate    = "WireguardPrivateKey"
	KeyWireGuardPrivateAlt = "WireGuardPrivateKey" // the README's spelling, also accepted
	KeyWireGuardPublic     = "WireguardPublicKey"  // informational
)

// KeyFileMode is the mode of the key files: readable by the owner
// (certwatch) and its group, never by others. In the chart the pod's
// fsGroup is that group, so the broker — root without CAP_DAC_OVERRIDE —
// reads the keys through it and nobody else in the pod's image can.
const KeyFileMode = 0o640

// Files under Config.Dir.
const (
	TLSDir           = "tls"       // <dir>/tls/{tls.crt,tls.key,ca.crt}
	WireGuardDir     = "wireguard" // <dir>/wireguard/{privatekey,publickey}
	FilePrivateKey   = "privatekey"
	FilePublicKey    = "publickey"
	defaultNamespace = "kubelink"
)

// Config are the settings of a Controller.
type Config struct {
	Namespace       string // namespace of both Secrets
	TLSSecret       string // TLS Secret; empty: no TLS handling
	WireGuardSecret string // WireGuard key Secret; empty: no WireGuard handling
	Dir             string // output directory
	Mode            string // ModeNone or ModeSelf
	DNSName         string // CN and DNS SAN of the self-managed certificate
	// Identities are the URI SANs of the self-managed certificate, comma
	// separated: this cluster's identity in each of its meshes,
	// kubelink://<mesh>/<cluster> (mesh.Identity), which the peers' links
	// require.
	Identities string
	// Sign (self mode only) makes this certwatch the mesh authority: it
	// publishes the CA certificate and signs the CSRs of registered members.
	Sign bool
	// AuthorityKubeconfig (csr mode) is the kubeconfig of the authority's
	// API server, with the credentials of this cluster's member
	// ServiceAccount there.
	AuthorityKubeconfig string
	// AuthoritySecret (csr mode), instead of AuthorityKubeconfig, is the
	// Secret in Namespace holding that kubeconfig (key kubeconfig), read
	// through the API and watched: a new token there (a member that left
	// and joined again) is used at once, not when the kubelet next updates
	// a volume (up to about a minute and a half).
	AuthoritySecret string
	// AuthorityNamespace (csr mode) is the authority's kubelink namespace.
	AuthorityNamespace string
	CertValidity       time.Duration // validity of a self-managed certificate
	Resync             time.Duration // period of the full sync
	MetricsAddr        string        // /healthz, /readyz, /metrics; empty: off
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Namespace:          defaultNamespace,
		TLSSecret:          "kubelink-tls",
		WireGuardSecret:    "wireguard",
		Dir:                "/var/run/kubelink/certs",
		Mode:               ModeNone,
		AuthorityNamespace: defaultNamespace,
		CertValidity:       10 * 24 * time.Hour,
		Resync:             time.Minute,
		MetricsAddr:        ":8080",
	}
}

// Validate reports every invalid setting, named by its flag.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeNone, ModeSelf, ModeCSR:
	case "cert":
		errs = append(errs, errors.New(`--secret-manage-mode="cert": gardener cert-management is not supported by certwatch; use none (with cert-manager or similar writing the Secret), self or csr`))
	default:
		errs = append(errs, fmt.Errorf("--secret-manage-mode=%q: must be none, self or csr", c.Mode))
	}
	if c.Sign && c.Mode != ModeSelf {
		errs = append(errs, fmt.Errorf("--sign-requests needs --secret-manage-mode=self (the authority holds the CA), not %q", c.Mode))
	}
	if c.Mode == ModeCSR {
		switch {
		case c.AuthorityKubeconfig == "" && c.AuthoritySecret == "":
			errs = append(errs, errors.New("--secret-manage-mode=csr needs --authority-secret or --authority-kubeconfig (the mesh authority's API server and this member's credentials there)"))
		case c.AuthorityKubeconfig != "" && c.AuthoritySecret != "":
			errs = append(errs, errors.New("--authority-secret and --authority-kubeconfig: give one (the Secret, or a file)"))
		}
		if c.AuthoritySecret != "" {
			if msgs := validation.IsDNS1123Subdomain(c.AuthoritySecret); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("--authority-secret=%q: %s", c.AuthoritySecret, strings.Join(msgs, "; ")))
			}
		}
		if msgs := validation.IsDNS1123Label(c.AuthorityNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--authority-namespace=%q: %s", c.AuthorityNamespace, strings.Join(msgs, "; ")))
		}
		if len(c.IdentityList()) == 0 {
			errs = append(errs, errors.New("--secret-manage-mode=csr needs --identities (what the authority is asked to certify)"))
		}
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace: must not be empty"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("--dir: must not be empty"))
	}
	if c.TLSSecret == "" && c.WireGuardSecret == "" {
		errs = append(errs, errors.New("--tls-secret and --wireguard-secret are both empty: nothing to do"))
	}
	for flag, name := range map[string]string{"tls-secret": c.TLSSecret, "wireguard-secret": c.WireGuardSecret} {
		if name != "" {
			if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("--%s=%q: %s", flag, name, strings.Join(msgs, "; ")))
			}
		}
	}
	if c.Mode == ModeSelf || c.Mode == ModeCSR {
		if c.TLSSecret == "" {
			errs = append(errs, fmt.Errorf("--secret-manage-mode=%s needs --tls-secret", c.Mode))
		}
		if c.DNSName == "" {
			errs = append(errs, fmt.Errorf("--secret-manage-mode=%s needs --dns-name (CN and SAN of the certificate)", c.Mode))
		} else if msgs := validation.IsDNS1123Subdomain(c.DNSName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--dns-name=%q: not a DNS name: %s", c.DNSName, strings.Join(msgs, "; ")))
		}
		for _, id := range c.IdentityList() {
			if err := ValidIdentity(id); err != nil {
				errs = append(errs, fmt.Errorf("--identities: %w", err))
			}
		}
		if c.CertValidity < MinCertValidity {
			errs = append(errs, fmt.Errorf("--cert-validity=%s: must be at least %s", c.CertValidity, MinCertValidity))
		}
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("--resync=%s: must be positive", c.Resync))
	}
	return errors.Join(errs...)
}

// IdentityList is Identities split at commas, without empty entries.
func (c Config) IdentityList() []string {
	var out []string
	for _, id := range strings.Split(c.Identities, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// ValidIdentity checks that id is a member identity kubelink://<mesh>/<cluster>.
func ValidIdentity(id string) error {
	u, err := url.Parse(id)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URI: %w", id, err)
	case u.Scheme != mesh.IdentityScheme || u.Host == "" || len(u.Path) < 2 || strings.Contains(u.Path[1:], "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("%q: want kubelink://<mesh>/<cluster>, e.g. %s", id, mesh.Identity("", "a"))
	}
	for _, part := range []string{u.Host, u.Path[1:]} {
		if msgs := validation.IsDNS1123Label(part); len(msgs) > 0 {
			return fmt.Errorf("%q: %q is not a DNS label: %s", id, part, strings.Join(msgs, "; "))
		}
	}
	return nil
}
