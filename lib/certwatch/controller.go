package certwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mesh"
)

// Controller keeps the files in Config.Dir in line with the Secrets: a
// level-triggered loop that runs on every change of a Secret in the
// namespace, periodically, and when the certificate is due for renewal.
type Controller struct {
	cfg Config
	log *slog.Logger
	api client.Client // direct reads and writes: always the latest state
	// authority is the mesh authority's API (csr mode), as this member,
	// built from authorityConfig, the kubeconfig last read (loadAuthority
	// reads it again on every sync).
	authority       client.Client
	authorityConfig []byte
	scheme          *runtime.Scheme
	// watches are the caches whose changes start a sync: one per Secret,
	// each selecting its Secret by name (so that RBAC can grant list and
	// watch by resourceNames), and the CSRs when signing.
	watches []watch
	loop    *kubeflags.Loop
	metrics *metrics
	now     func() time.Time
	// memberRevoked is the revocation list read from the authority with
	// its CA (csr mode), written with the TLS files.
	memberRevoked []byte
	memberListErr error // why memberRevoked is nil after a read

	syncs     atomic.Int64 // completed syncs
	goodSyncs atomic.Int64 // syncs without error, for /readyz
	lastErr   string
}

// watch is a cache and the objects whose events it reports.
type watch struct {
	cache cache.Cache
	objs  []client.Object
}

var (
	secretMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
	csrMeta    = metav1.TypeMeta{APIVersion: "certificates.k8s.io/v1", Kind: "CertificateSigningRequest"}
)

// New prepares a controller; Run starts it.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	var watches []watch
	for _, name := range []string{cfg.TLSSecret, cfg.WireGuardSecret, cfg.AuthoritySecret} {
		if name == "" {
			continue
		}
		secret := &metav1.PartialObjectMetadata{TypeMeta: secretMeta}
		c, err := cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
			secret: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}, Field: fields.OneTermEqualSelector("metadata.name", name)},
		}})
		if err != nil {
			return nil, fmt.Errorf("creating the cache of Secret %s: %w", name, err)
		}
		watches = append(watches, watch{c, []client.Object{secret}})
	}
	if cfg.Sign {
		// The authority answers a member's request as soon as it appears.
		csrs := &metav1.PartialObjectMetadata{TypeMeta: csrMeta}
		c, err := cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{csrs: {}}})
		if err != nil {
			return nil, fmt.Errorf("creating the cache of CertificateSigningRequests: %w", err)
		}
		watches = append(watches, watch{c, []client.Object{csrs}})
		// A member removed (its ServiceAccount deleted or its identities
		// changed) is revoked at once, not at the next resync.
		sas := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}}
		c, err = cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
			sas: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
		}})
		if err != nil {
			return nil, fmt.Errorf("creating the cache of ServiceAccounts: %w", err)
		}
		watches = append(watches, watch{c, []client.Object{sas}})
	}
	api, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	ctrl := &Controller{cfg: cfg, log: log, api: api, watches: watches, loop: kubeflags.NewLoop(), metrics: newMetrics(), now: time.Now, scheme: scheme}
	if cfg.Mode == ModeCSR && cfg.AuthorityKubeconfig != "" {
		// A file that is not there is an error at start; the Secret may
		// come later (the cluster is registered after the install).
		if err := ctrl.loadAuthority(context.Background()); err != nil {
			return nil, err
		}
	}
	return ctrl, nil
}

// KeyAuthorityKubeconfig is the key of --authority-secret.
const KeyAuthorityKubeconfig = "kubeconfig"

// loadAuthority (re)builds the authority's client when its kubeconfig
// (--authority-secret, or the file --authority-kubeconfig) differs from the
// one in use. A member that leaves the mesh and joins again gets a new
// ServiceAccount, and so a new token, at the authority; the old token is
// refused (Unauthorized) from the leave on. It is read again on every sync
// (every 5 s while a sync fails, and on every change of the Secret), so the
// new token is used without a restart. A kubeconfig that cannot be read or
// parsed is an error; the client in use stays.
func (c *Controller) loadAuthority(ctx context.Context) error {
	var b []byte
	var from string
	if name := c.cfg.AuthoritySecret; name != "" {
		from = fmt.Sprintf("Secret %s/%s, key %s", c.cfg.Namespace, name, KeyAuthorityKubeconfig)
		var s corev1.Secret
		err := c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: name}, &s)
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("waiting for %s: this cluster is not registered at the mesh authority yet (kubelinkctl join registers it and writes the Secret)", from)
		case err != nil:
			return fmt.Errorf("reading %s: %w", from, err)
		}
		if b = s.Data[KeyAuthorityKubeconfig]; len(b) == 0 {
			return fmt.Errorf("%s: empty or missing; it holds the authority's kubeconfig with this member's token (kubelinkctl join writes it)", from)
		}
	} else {
		from = "--authority-kubeconfig=" + c.cfg.AuthorityKubeconfig
		var err error
		if b, err = os.ReadFile(c.cfg.AuthorityKubeconfig); err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
	}
	if c.authority != nil && bytes.Equal(b, c.authorityConfig) {
		return nil
	}
	arc, err := clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	cl, err := client.New(arc, client.Options{Scheme: c.scheme})
	if err != nil {
		return fmt.Errorf("creating the authority's client from %s: %w", from, err)
	}
	if c.authority != nil {
		c.log.Info("the authority's kubeconfig changed: using the new one", "from", from)
	}
	c.authority, c.authorityConfig = cl, b
	return nil
}

// Syncs is the number of completed syncs (successful or not).
func (c *Controller) Syncs() int64 { return c.syncs.Load() }

// Run serves until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	srv, err := kubeflags.ServeHealth(ctx, c.cfg.MetricsAddr, c.metrics.reg, func() error {
		if c.goodSyncs.Load() == 0 {
			return errors.New("no successful sync yet")
		}
		return nil
	}, c.log)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, w := range c.watches {
		if err := kubeflags.WatchAndSync(ctx, w.cache, c.kick, w.objs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	c.log.Info("certwatch running", "namespace", c.cfg.Namespace, "tlsSecret", c.cfg.TLSSecret,
		"wireguardSecret", c.cfg.WireGuardSecret, "dir", c.cfg.Dir, "mode", c.cfg.Mode)
	c.loop.Run(ctx, c.cfg.Resync, func(ctx context.Context) time.Duration {
		renewAt, err := c.sync(ctx)
		if ctx.Err() != nil {
			return 0
		}
		c.report(err)
		c.syncs.Add(1)
		wait := c.cfg.Resync
		if err != nil && renewAt.IsZero() {
			wait = min(wait, 5*time.Second) // retry soon, e.g. after an update conflict
		}
		if !renewAt.IsZero() {
			wait = min(wait, max(renewAt.Sub(c.now())+10*time.Millisecond, time.Millisecond))
		}
		return wait
	})
	return nil
}

func (c *Controller) kick() { c.loop.Kick() }

// report logs a sync error once per change rather than on every resync.
func (c *Controller) report(err error) {
	msg := ""
	if err != nil {
		c.metrics.syncErrors.Inc()
		msg = err.Error()
	} else {
		c.goodSyncs.Add(1)
	}
	if msg == c.lastErr {
		return
	}
	c.lastErr = msg
	if err != nil {
		c.log.Error("sync", "err", err)
	} else {
		c.log.Info("sync ok again")
	}
}

// sync makes the files match the Secrets (managing them first in self
// mode) and returns when the certificate is next due for renewal (zero:
// not managed).
func (c *Controller) sync(ctx context.Context) (renewAt time.Time, err error) {
	var errs []error
	if c.cfg.TLSSecret != "" {
		renewAt, err = c.syncTLS(ctx)
		errs = append(errs, err)
	}
	if c.cfg.WireGuardSecret != "" {
		errs = append(errs, c.syncWireGuard(ctx))
	}
	if c.cfg.Sign {
		revokedChanged, err := c.signRequests(ctx)
		errs = append(errs, err)
		if revokedChanged {
			c.kick() // this cluster's files follow the list at once
		}
	}
	return renewAt, errors.Join(errs...)
}

func (c *Controller) getSecret(ctx context.Context, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading Secret %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return &s, nil
}

func (c *Controller) syncTLS(ctx context.Context) (time.Time, error) {
	ref := c.cfg.Namespace + "/" + c.cfg.TLSSecret
	s, err := c.getSecret(ctx, c.cfg.TLSSecret)
	if err != nil {
		return time.Time{}, err
	}
	var renewAt time.Time
	switch c.cfg.Mode {
	case ModeSelf:
		if s, err = c.manageTLS(ctx, s); err != nil {
			return time.Time{}, err
		}
	case ModeCSR:
		var pollAt time.Time
		c.memberRevoked, c.memberListErr = nil, nil // read again with the CA
		if s, pollAt, err = c.requestTLS(ctx, s); err != nil {
			// The revocation list must not wait for the certificate
			// (a denied renewal, an answer pending).
			if c.memberRevoked != nil {
				err = errors.Join(err, c.writeRevokedOnly(c.memberRevoked))
			}
			return pollAt, err
		}
		renewAt = pollAt
	}
	if s == nil {
		// Managed elsewhere and not there (yet): keep what was written last.
		return time.Time{}, fmt.Errorf("secret %s not found", ref)
	}
	var missing []string
	for _, k := range []string{KeyTLSCert, KeyTLSKey, KeyCACert} {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return time.Time{}, fmt.Errorf("secret %s lacks %s; files left as they are", ref, strings.Join(missing, ", "))
	}
	cert, err := ParseCertificate(s.Data[KeyTLSCert])
	if err != nil {
		return time.Time{}, fmt.Errorf("secret %s: tls.crt: %w; files left as they are", ref, err)
	}
	if c.cfg.Mode != ModeNone && (renewAt.IsZero() || RenewalTime(cert).Before(renewAt)) {
		renewAt = RenewalTime(cert)
	}
	files := tlsFiles(s.Data)
	revoked, ok, listErr := c.revocationList(ctx)
	if listErr != nil {
		// The certificates are written all the same (a bad list must
		// not stop renewals), with the list written last.
		revoked, ok = c.previousRevoked()
		listErr = fmt.Errorf("%w; the revocation list in use stays as it was", listErr)
	}
	if ok {
		files = append(files, File{Name: FileRevoked, Data: revoked, Mode: 0o644})
		c.metrics.revoked.Set(float64(len(parseLines(string(revoked)))))
	}
	changed, err := WriteAtomic(filepath.Join(c.cfg.Dir, TLSDir), files)
	if err != nil {
		return renewAt, fmt.Errorf("writing %s: %w", filepath.Join(c.cfg.Dir, TLSDir), err)
	}
	c.metrics.notAfter.Store(cert.NotAfter.Unix())
	if changed {
		c.metrics.writes.WithLabelValues(TLSDir).Inc()
		c.log.Info("TLS files swapped", "dir", filepath.Join(c.cfg.Dir, TLSDir), "cn", cert.Subject.CommonName,
			"notAfter", cert.NotAfter.Format(time.RFC3339), "revoked", len(parseLines(string(revoked))))
	}
	return renewAt, listErr
}

// tlsFiles are the files of the TLS directory from data (the Secret's, or
// those written last), without the revocation list.
func tlsFiles(data map[string][]byte) []File {
	return []File{
		{Name: KeyTLSCert, Data: data[KeyTLSCert], Mode: 0o644},
		{Name: KeyTLSKey, Data: data[KeyTLSKey], Mode: KeyFileMode},
		{Name: KeyCACert, Data: data[KeyCACert], Mode: 0o644},
	}
}

// manageTLS makes the Secret hold a CA and a current certificate for
// --dns-name, creating the Secret, the CA or the certificate as needed.
// It returns the Secret as stored.
func (c *Controller) manageTLS(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error) {
	now := c.now()
	create := s == nil
	if create {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: c.cfg.TLSSecret,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-certwatch"}}, Type: corev1.SecretTypeTLS}
	}
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	caCert, caKey := data[KeyCACert], data[KeyCAKey]
	newCA := false
	switch {
	case len(caCert) == 0 && len(caKey) == 0:
		var err error
		if caCert, caKey, err = NewCA(now, CAValidity); err != nil {
			return nil, err
		}
		data[KeyCACert], data[KeyCAKey] = caCert, caKey
		newCA = true
		c.log.Info("created a CA", "secret", c.cfg.Namespace+"/"+c.cfg.TLSSecret)
	case len(caKey) == 0:
		return nil, fmt.Errorf("secret %s/%s has ca.crt but no ca.key: cannot sign in self-managed mode (add ca.key, or remove ca.crt to have a new CA created)",
			c.cfg.Namespace, c.cfg.TLSSecret)
	}
	reason := "new CA"
	if !newCA {
		_, err := CheckCert(data[KeyTLSCert], data[KeyTLSKey], caCert, c.cfg.DNSName, now, c.cfg.IdentityList()...)
		if err == nil {
			return s, nil
		}
		reason = err.Error()
		if len(data[KeyTLSCert]) == 0 {
			reason = "no certificate yet"
		}
	}
	crt, key, err := IssueCert(caCert, caKey, c.cfg.DNSName, now, c.cfg.CertValidity, c.cfg.IdentityList()...)
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate with the CA of %s/%s: %w", c.cfg.Namespace, c.cfg.TLSSecret, err)
	}
	data[KeyTLSCert], data[KeyTLSKey] = crt, key
	s.Data = data
	if create {
		err = c.api.Create(ctx, s)
	} else {
		err = c.api.Update(ctx, s)
	}
	if err != nil {
		return nil, fmt.Errorf("storing the certificate in %s/%s: %w", c.cfg.Namespace, c.cfg.TLSSecret, err)
	}
	c.metrics.renewals.Inc()
	c.log.Info("issued a certificate", "cn", c.cfg.DNSName, "identities", c.cfg.IdentityList(), "reason", reason, "validity", c.cfg.CertValidity)
	return s, nil
}

func (c *Controller) syncWireGuard(ctx context.Context) error {
	ref := c.cfg.Namespace + "/" + c.cfg.WireGuardSecret
	s, err := c.getSecret(ctx, c.cfg.WireGuardSecret)
	if err != nil {
		return err
	}
	var priv mesh.Key
	raw, field := "", ""
	if s != nil {
		for _, k := range []string{KeyWireGuardPrivate, KeyWireGuardPrivateAlt} {
			if v := strings.TrimSpace(string(s.Data[k])); v != "" {
				raw, field = v, k
				break
			}
		}
	}
	if raw != "" {
		if priv, err = mesh.ParseKey(raw); err != nil {
			return fmt.Errorf("secret %s: %s: %w; not replaced, files left as they are", ref, field, err)
		}
	} else {
		if priv, err = c.storeNewKey(ctx, s); err != nil {
			return err
		}
	}
	pub := mesh.PublicKey(priv)
	dir := filepath.Join(c.cfg.Dir, WireGuardDir)
	changed, err := WriteAtomic(dir, []File{
		{Name: FilePrivateKey, Data: []byte(priv.String() + "\n"), Mode: KeyFileMode},
		{Name: FilePublicKey, Data: []byte(pub.String() + "\n"), Mode: 0o644},
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	if changed {
		c.metrics.writes.WithLabelValues(WireGuardDir).Inc()
		c.log.Info("WireGuard key files swapped", "dir", dir, "publicKey", pub.String())
	}
	return nil
}

// storeNewKey generates a key pair and stores it in the Secret s (nil:
// created). Other data of an existing Secret is kept; an update conflict
// (someone else wrote a key meanwhile) fails the sync, and the next sync
// reads that key.
func (c *Controller) storeNewKey(ctx context.Context, s *corev1.Secret) (mesh.Key, error) {
	priv, err := mesh.GeneratePrivateKey()
	if err != nil {
		return mesh.Key{}, err
	}
	create := s == nil
	if create {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: c.cfg.WireGuardSecret,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-certwatch"}}, Type: corev1.SecretTypeOpaque}
	}
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	data[KeyWireGuardPrivate] = []byte(priv.String())
	data[KeyWireGuardPublic] = []byte(mesh.PublicKey(priv).String())
	s.Data = data
	if create {
		err = c.api.Create(ctx, s)
	} else {
		err = c.api.Update(ctx, s)
	}
	if err != nil {
		return mesh.Key{}, fmt.Errorf("storing a new WireGuard key in %s/%s: %w", c.cfg.Namespace, c.cfg.WireGuardSecret, err)
	}
	c.metrics.generated.Inc()
	c.log.Info("generated a WireGuard key pair", "secret", c.cfg.Namespace+"/"+c.cfg.WireGuardSecret,
		"publicKey", mesh.PublicKey(priv).String())
	return priv, nil
}
