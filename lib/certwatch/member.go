package certwatch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The member side of the mesh authority (signer.go): csr mode.

// KeyPendingKey is the Secret key holding the private key of a request that
// the authority has not answered yet; it becomes tls.key with the
// certificate. Keeping it in the Secret makes a restart ask for the same
// request instead of a new one.
const KeyPendingKey = "pending.key"

// csrPoll is how often a member looks for the answer to its request.
const csrPoll = 2 * time.Second

// requestTLS is manageTLS for csr mode: it keeps the Secret holding the
// authority's CA certificate and a current certificate signed by it for
// --dns-name and --identities, asking the authority for one through a CSR
// when there is none or it is due. It returns the Secret as stored and when
// to look again (the answer to a pending request, the next renewal: zero
// when nothing is pending). Until the first certificate arrives it returns
// an error that says what it waits for; a renewal in progress is no error
// (the current certificate stays in use).
func (c *Controller) requestTLS(ctx context.Context, s *corev1.Secret) (*corev1.Secret, time.Time, error) {
	now := c.now()
	if err := c.loadAuthority(ctx); err != nil {
		return s, time.Time{}, err
	}
	caPEM, err := c.authorityCA(ctx)
	if err != nil {
		return s, time.Time{}, err
	}
	create := s == nil
	if create {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: c.cfg.TLSSecret,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-certwatch"}},
			// Opaque: it holds only pending.key until the first certificate.
			Type: corev1.SecretTypeOpaque}
	}
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	if len(data[KeyCAKey]) > 0 {
		return s, time.Time{}, fmt.Errorf("secret %s/%s holds ca.key: a member in csr mode must not hold the mesh CA key; remove it", c.cfg.Namespace, c.cfg.TLSSecret)
	}
	ids := c.cfg.IdentityList()
	current, certErr := CheckCert(data[KeyTLSCert], data[KeyTLSKey], caPEM, c.cfg.DNSName, now, ids...)
	if (certErr == nil || errors.Is(certErr, ErrDue)) && revokedSerials(c.memberRevoked)[current.SerialNumber.Text(16)] {
		// Revoked (the member was removed and registered again): the
		// peers refuse it, so a new one now; it stays in the files
		// meanwhile (as a due one does).
		certErr = fmt.Errorf("tls.crt: the mesh authority revoked this certificate (serial %s): %w", current.SerialNumber.Text(16), ErrDue)
	}
	if certErr == nil && len(data[KeyPendingKey]) == 0 {
		if string(data[KeyCACert]) == string(caPEM) {
			return s, time.Time{}, nil
		}
		data[KeyCACert] = caPEM // e.g. a new CA bundle that still verifies the certificate
		s, err := c.storeTLS(ctx, s, data, create, "CA certificate updated")
		return s, time.Time{}, err
	}
	// A renewal (the current certificate is fine but due) keeps the
	// current one in use while the request is pending.
	usable := certErr == nil || errors.Is(certErr, ErrDue) && now.Before(current.NotAfter)
	key := data[KeyPendingKey]
	if len(key) == 0 {
		if key, err = newKeyPEM(); err != nil {
			return s, time.Time{}, err
		}
		data[KeyPendingKey] = key
		// Stored before the request exists, so a restart finds the same one.
		if s, err = c.storeTLS(ctx, s, data, create, ""); err != nil {
			return s, time.Time{}, err
		}
		create = false
		data = maps.Clone(s.Data)
	}
	name, csr, err := c.ensureRequest(ctx, key, ids)
	if err != nil {
		return s, time.Time{}, err
	}
	reason := certErr
	switch {
	case reason == nil:
		reason = errors.New("renewal requested")
	case len(data[KeyTLSCert]) == 0:
		reason = errors.New("no certificate yet")
	}
	if finished(csr) {
		// Denied or failed: drop the key, so that the next attempt (after a
		// resync, in case the registration changes) is a new request.
		delete(data, KeyPendingKey)
		if s2, err := c.storeTLS(ctx, s, data, create, ""); err == nil {
			s = s2
		}
		return s, now.Add(c.cfg.Resync), fmt.Errorf("the mesh authority refused CertificateSigningRequest %s: %s; a new request follows in %s",
			name, conditionMessage(csr), c.cfg.Resync)
	}
	if len(csr.Status.Certificate) == 0 {
		if usable {
			return s, now.Add(csrPoll), nil
		}
		return s, now.Add(csrPoll), fmt.Errorf("waiting for the mesh authority to sign CertificateSigningRequest %s (%v; for %s %v)",
			name, reason, c.cfg.DNSName, ids)
	}
	crt := csr.Status.Certificate
	if _, err := CheckCert(crt, key, caPEM, c.cfg.DNSName, now, ids...); err != nil {
		delete(data, KeyPendingKey)
		if s2, err := c.storeTLS(ctx, s, data, create, ""); err == nil {
			s = s2
		}
		return s, now.Add(c.cfg.Resync), fmt.Errorf("the certificate of CertificateSigningRequest %s does not verify (%w); not used, a new request follows in %s",
			name, err, c.cfg.Resync)
	}
	data[KeyTLSCert], data[KeyTLSKey], data[KeyCACert] = crt, key, caPEM
	delete(data, KeyPendingKey)
	if s, err = c.storeTLS(ctx, s, data, create, reason.Error()); err != nil {
		return s, time.Time{}, err
	}
	c.metrics.renewals.Inc()
	return s, time.Time{}, nil
}

// storeTLS writes data into the Secret s (created when create); a
// non-empty what is logged as the reason of a certificate change.
func (c *Controller) storeTLS(ctx context.Context, s *corev1.Secret, data map[string][]byte, create bool, what string) (*corev1.Secret, error) {
	s = s.DeepCopy()
	s.Data = data
	var err error
	if create {
		err = c.api.Create(ctx, s)
	} else {
		err = c.api.Update(ctx, s)
	}
	if err != nil {
		return nil, fmt.Errorf("storing %s/%s: %w", c.cfg.Namespace, c.cfg.TLSSecret, err)
	}
	if what != "" {
		c.log.Info("stored a certificate from the mesh authority", "cn", c.cfg.DNSName, "identities", c.cfg.IdentityList(), "reason", what)
	}
	return s, nil
}

// authorityCA reads the mesh CA certificate the authority publishes.
func (c *Controller) authorityCA(ctx context.Context) ([]byte, error) {
	var cm corev1.ConfigMap
	ref := c.cfg.AuthorityNamespace + "/" + CAConfigMap
	if err := c.authority.Get(ctx, client.ObjectKey{Namespace: c.cfg.AuthorityNamespace, Name: CAConfigMap}, &cm); err != nil {
		return nil, fmt.Errorf("reading the mesh CA from ConfigMap %s of the authority: %w", ref, err)
	}
	ca := []byte(cm.Data[KeyCACert])
	if _, err := ParseCertificate(ca); err != nil {
		return nil, fmt.Errorf("ConfigMap %s of the authority: ca.crt: %w", ref, err)
	}
	// The revocation list comes with the CA, in the same read: the files
	// this sync writes carry both.
	// A list that does not parse must not hold up the certificate: the
	// sync writes the certificate with the previous list and reports it.
	c.memberRevoked, c.memberListErr = checkRevoked(cm.Data[KeyRevoked])
	if c.memberListErr != nil {
		c.memberListErr = fmt.Errorf("ConfigMap %s of the authority: %w", ref, c.memberListErr)
	}
	return ca, nil
}

// ensureRequest finds or creates this member's CSR for key in the
// authority's API. Its name is derived from the key, the name and the
// identities, so the same request is found again after a restart and a
// changed --identities makes a new one.
func (c *Controller) ensureRequest(ctx context.Context, keyPEM []byte, ids []string) (string, *certificatesv1.CertificateSigningRequest, error) {
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return "", nil, fmt.Errorf("%s/%s: %s: %w", c.cfg.Namespace, c.cfg.TLSSecret, KeyPendingKey, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	h.Write(pub)
	h.Write([]byte("\x00" + c.cfg.DNSName + "\x00" + strings.Join(slices.Sorted(slices.Values(ids)), ",")))
	name := "kubelink-" + hex.EncodeToString(h.Sum(nil))[:20]

	var csr certificatesv1.CertificateSigningRequest
	err = c.authority.Get(ctx, client.ObjectKey{Name: name}, &csr)
	if err == nil {
		return name, &csr, nil
	}
	if !apierrors.IsNotFound(err) {
		return name, nil, fmt.Errorf("reading CertificateSigningRequest %s from the authority: %w", name, err)
	}
	req, err := CertificateRequest(key, c.cfg.DNSName, ids)
	if err != nil {
		return name, nil, err
	}
	// The API rejects requests for less than 10 minutes; the authority
	// signs for at most its own --cert-validity anyway.
	seconds := int32(min(max(c.cfg.CertValidity, 10*time.Minute)/time.Second, 1<<31-1))
	csr = certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-certwatch"}},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           req,
			SignerName:        SignerName,
			ExpirationSeconds: &seconds,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth},
		},
	}
	if err := c.authority.Create(ctx, &csr); err != nil {
		if apierrors.IsForbidden(err) {
			return name, nil, fmt.Errorf("creating CertificateSigningRequest %s at the authority: %w (the member's ServiceAccount needs the kubelink-member ClusterRole there)", name, err)
		}
		return name, nil, fmt.Errorf("creating CertificateSigningRequest %s at the authority: %w", name, err)
	}
	c.metrics.csrRequested.Inc()
	c.log.Info("asked the mesh authority for a certificate", "csr", name, "cn", c.cfg.DNSName, "identities", ids)
	return name, &csr, nil
}

// CertificateRequest is the PEM request of a member: CN and the one DNS or
// IP SAN name, the URI SANs identities.
func CertificateRequest(key any, name string, identities []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name, Organization: []string{Organization}}}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	for _, id := range identities {
		u, err := url.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("identity %q: %w", id, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func newKeyPEM() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func conditionMessage(csr *certificatesv1.CertificateSigningRequest) string {
	for _, cond := range csr.Status.Conditions {
		if (cond.Type == certificatesv1.CertificateDenied || cond.Type == certificatesv1.CertificateFailed) && cond.Status == corev1.ConditionTrue {
			return fmt.Sprintf("%s (%s): %s", cond.Type, cond.Reason, cond.Message)
		}
	}
	return "no reason given"
}
