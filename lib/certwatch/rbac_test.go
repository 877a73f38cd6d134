package certwatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/testenv"
)

// The RBAC and admission policy of the chart (deploy/chart/kubelink)
// against a real API server:
// each component gets exactly its own Secrets (by name), none can read
// another's or list Secrets at all, certwatch and meshdns create only their
// own Secrets, Opaque or TLS (no service-account-token Secret minting another
// account's token), and certwatch does its work with nothing more.
func TestBaseRBAC(t *testing.T) {
	cp := &testenv.ControlPlane{Name: "rbac"}
	testenv.StartControlPlaneForTest(t, cp)
	ctx := context.Background()
	admin, err := cp.Client()
	must(t, err)
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}}))
	// The chart's RBAC and admission policy, rendered with its defaults.
	must(t, testenv.CreateObjects(ctx, admin, testenv.ChartRBAC(t, nil)...))

	const ns = "kubelink"
	sa := func(name string) string { return "system:serviceaccount:kubelink:kubelink-" + name }
	type check struct {
		who, verb, resource, group, name string
		want                             bool
	}
	secret := func(who, verb, name string, want bool) check { return check{who, verb, "secrets", "", name, want} }
	checks := []check{
		secret("broker", "get", "wireguard", true),
		secret("broker", "watch", "wireguard", true),
		secret("broker", "update", "wireguard", false),
		secret("broker", "get", "kubelink-tls", false),
		secret("broker", "get", "kubelink-certwatch-token", false),
		secret("broker", "list", "", false),
		secret("broker", "create", "", false),
		secret("certwatch", "get", "kubelink-tls", true),
		secret("certwatch", "update", "kubelink-tls", true),
		secret("certwatch", "list", "kubelink-tls", true),
		secret("certwatch", "update", "wireguard", true),
		secret("certwatch", "get", "kubelink-coredns", false),
		secret("certwatch", "get", "kubelink-certwatch-token", false),
		secret("certwatch", "get", "kubelink-authority", false),
		secret("certwatch", "list", "", false),
		secret("certwatch", "delete", "kubelink-tls", false),
		secret("meshdns", "get", "kubelink-coredns", true),
		secret("meshdns", "update", "kubelink-coredns", true),
		secret("meshdns", "get", "kubelink-tls", false),
		secret("meshdns", "get", "wireguard", false),
		secret("meshdns", "list", "", false),
		secret("router", "get", "wireguard", false),
		secret("coredns", "get", "kubelink-coredns", false),
		{"broker", "create", "kubelinks", "kubelink.mandelsoft.org", "", false},
		{"broker", "update", "kubelinks", "kubelink.mandelsoft.org", "b", false},
		{"broker", "update", "leases", "coordination.k8s.io", "kubelink-broker", true},
		{"meshdns", "patch", "deployments", "apps", "kubelink-coredns", true},
		{"meshdns", "patch", "deployments", "apps", "kubelink-broker", false},
	}
	for _, c := range checks {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   sa(c.who),
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kubelink", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: c.verb, Group: c.group,
				Resource: c.resource, Name: c.name},
		}}
		must(t, admin.Create(ctx, sar))
		if sar.Status.Allowed != c.want {
			t.Errorf("kubelink-%s %s %s %q: allowed %v, want %v (%s)", c.who, c.verb, c.resource, c.name,
				sar.Status.Allowed, c.want, sar.Status.Reason)
		}
	}

	// Creating Secrets: only the component's own names, only Opaque. The
	// policy takes a moment to load after it is created.
	certwatch, meshdns := asSA(t, cp, "kubelink-certwatch"), asSA(t, cp, "kubelink-meshdns")
	create := func(c client.Client, name string, typ corev1.SecretType) error {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ}
		if typ == corev1.SecretTypeServiceAccountToken {
			s.Annotations = map[string]string{corev1.ServiceAccountNameKey: "kubelink-broker"}
		}
		err := c.Create(ctx, s)
		if err == nil {
			must(t, admin.Delete(ctx, s))
		}
		return err
	}
	denied := func(what string, err error, wantMsg string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: admitted", what)
		} else if !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("%s: %v, want a message containing %q", what, err, wantMsg)
		}
	}
	eventually(t, "the Secret policy in force", func() bool {
		return create(certwatch, "elsewhere", corev1.SecretTypeOpaque) != nil
	})
	denied("certwatch creating Secret elsewhere", create(certwatch, "elsewhere", corev1.SecretTypeOpaque),
		"may create only the Secrets kubelink-tls, wireguard, not elsewhere")
	denied("certwatch creating a token Secret for kubelink-broker",
		create(certwatch, "kubelink-tls", corev1.SecretTypeServiceAccountToken), "not kubernetes.io/service-account-token")
	denied("meshdns creating kubelink-tls", create(meshdns, "kubelink-tls", corev1.SecretTypeOpaque),
		"may create only the Secrets kubelink-coredns")
	for _, c := range []struct {
		who  client.Client
		name string
	}{{certwatch, "kubelink-tls"}, {certwatch, "wireguard"}, {meshdns, "kubelink-coredns"}} {
		if err := create(c.who, c.name, corev1.SecretTypeOpaque); err != nil {
			t.Errorf("creating its own Secret %s: %v", c.name, err)
		}
	}

	// certwatch in self mode as kubelink-certwatch with nothing else: it
	// creates both Secrets, watches them by name and writes the files.
	dir := t.TempDir()
	cfg := Defaults()
	cfg.Namespace, cfg.Mode, cfg.DNSName, cfg.Identities = ns, ModeSelf, "a.example.com", "kubelink://lab/a"
	cfg.Dir, cfg.MetricsAddr, cfg.Resync = dir, "", time.Hour
	startController(t, cfg, saConfig(t, cp, ns, "kubelink-certwatch"))
	eventually(t, "TLS and WireGuard files written as kubelink-certwatch", func() bool {
		tls := secretOf(t, admin, ns, cfg.TLSSecret)
		wg := secretOf(t, admin, ns, cfg.WireGuardSecret)
		return tls != nil && wg != nil && fileIs(filepath.Join(dir, TLSDir, KeyTLSCert), tls.Data[KeyTLSCert]) &&
			exists(filepath.Join(dir, WireGuardDir, FilePublicKey))
	})
	// A change to a Secret reaches certwatch through its watch by name (the
	// resync is an hour): a WireGuard key removed from its Secret is
	// replaced by a new one, in the Secret and in the files.
	pub := filepath.Join(dir, WireGuardDir, FilePublicKey)
	old, err := os.ReadFile(pub)
	must(t, err)
	wg := secretOf(t, admin, ns, cfg.WireGuardSecret)
	wg.Data = nil
	must(t, admin.Update(ctx, wg))
	eventually(t, "a new WireGuard key after its Secret was emptied", func() bool {
		now, err := os.ReadFile(pub)
		s := secretOf(t, admin, ns, cfg.WireGuardSecret)
		return err == nil && len(now) > 0 && string(now) != string(old) && s != nil && len(s.Data) > 0
	})
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
