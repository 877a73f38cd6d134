package certwatch

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
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

// The mesh authority. One cluster's certwatch (--secret-manage-mode=self
// --sign-requests) holds the mesh CA; the other clusters' certwatch
// (--secret-manage-mode=csr) ask it for their certificates through
// CertificateSigningRequests in the authority's API, so that no member holds
// the CA key. A member is a ServiceAccount in the authority's namespace that
// an admin registered by annotating it with the identities (and bridge
// names) it may hold: the API server fills in the requester of every CSR,
// so a member can only ever obtain its own identities.
const (
	// SignerName is the signerName of kubelink's member certificate requests.
	SignerName = "kubelink.mandelsoft.org/member"
	// AnnotationIdentities lists, on a member's ServiceAccount in the
	// authority cluster, the URI SANs (kubelink://<mesh>/<cluster>) the
	// member may hold, comma separated.
	AnnotationIdentities = "kubelink.mandelsoft.org/identities"
	// AnnotationNames lists the DNS names or IP addresses the member's
	// bridge may be named by (CN and DNS/IP SAN), comma separated.
	AnnotationNames = "kubelink.mandelsoft.org/names"
	// CAConfigMap is the ConfigMap in the authority's namespace that
	// publishes the mesh CA certificate (key ca.crt) to the members.
	CAConfigMap = "kubelink-mesh-ca"
	// conditionReason is the reason of the conditions the signer sets.
	conditionReason = "KubelinkMemberPolicy"
	// KeyIssued, in CAConfigMap, records the identities the authority has
	// signed certificates for that are still valid: one line each, the
	// identity and the latest NotAfter (RFC 3339). The authority keeps it,
	// so that it knows them after the CSRs are gone (the API's cleaner
	// deletes issued requests after an hour).
	KeyIssued = "issued"
	// KeyRevoked, in CAConfigMap, lists the identities of KeyIssued that
	// no member holds any more (its ServiceAccount was deleted or no
	// longer lists them), one per line: each cluster's certwatch copies it
	// next to its certificates (file revoked), and the bridge refuses
	// certificates that carry them until they expire.
	KeyRevoked = "revoked"
)

// signRequests publishes the CA certificate and answers every pending CSR
// for SignerName: approved and signed when the requester is a registered
// member asking only for what it was registered with, denied with the
// reason otherwise. One bad request never stops the others.
//
// It then publishes in CAConfigMap the CA certificate, the record of what
// it signed (KeyIssued) and the revocation list (KeyRevoked), and reports
// whether the list changed (the files of this cluster follow it).
func (c *Controller) signRequests(ctx context.Context) (revokedChanged bool, err error) {
	s, err := c.getSecret(ctx, c.cfg.TLSSecret)
	if err != nil {
		return false, err
	}
	if s == nil {
		return false, fmt.Errorf("secret %s/%s not found: no CA to sign with", c.cfg.Namespace, c.cfg.TLSSecret)
	}
	ca, caKey, err := parseCA(s.Data[KeyCACert], s.Data[KeyCAKey])
	if err != nil {
		return false, fmt.Errorf("secret %s/%s: %w", c.cfg.Namespace, c.cfg.TLSSecret, err)
	}
	var list certificatesv1.CertificateSigningRequestList
	if err := c.api.List(ctx, &list, client.MatchingFields{"spec.signerName": SignerName}); err != nil {
		// The CA (and the record as it stands) is published all the same.
		changed, perr := c.publish(ctx, s.Data[KeyCACert], ca, nil)
		return changed, errors.Join(fmt.Errorf("listing CertificateSigningRequests of %s: %w", SignerName, err), perr)
	}
	var errs []error
	for i := range list.Items {
		csr := &list.Items[i]
		if csr.Spec.SignerName != SignerName || len(csr.Status.Certificate) > 0 || finished(csr) {
			continue
		}
		if err := c.answer(ctx, csr, ca, caKey); err != nil {
			errs = append(errs, fmt.Errorf("CertificateSigningRequest %s: %w", csr.Name, err))
		}
	}
	revokedChanged, err = c.publish(ctx, s.Data[KeyCACert], ca, list.Items)
	return revokedChanged, errors.Join(append(errs, err)...)
}

// finished reports whether a CSR was denied or failed (nothing more to do).
func finished(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, cond := range csr.Status.Conditions {
		if (cond.Type == certificatesv1.CertificateDenied || cond.Type == certificatesv1.CertificateFailed) && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func approved(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, cond := range csr.Status.Conditions {
		if cond.Type == certificatesv1.CertificateApproved && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// answer approves and signs one CSR, or denies it with the reason.
func (c *Controller) answer(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, ca *x509.Certificate, caKey crypto.Signer) error {
	req, err := c.review(ctx, csr)
	if err != nil {
		c.metrics.csrDenied.Inc()
		c.log.Warn("denied a certificate request", "csr", csr.Name, "requester", csr.Spec.Username, "reason", err)
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: conditionReason,
			Message: err.Error(), LastUpdateTime: metav1.NewTime(c.now()),
		})
		return ignoreGone(c.api.SubResource("approval").Update(ctx, csr))
	}
	if !approved(csr) {
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: conditionReason,
			Message:        "requester " + csr.Spec.Username + " is a registered member asking for its own identities",
			LastUpdateTime: metav1.NewTime(c.now()),
		})
		if err := c.api.SubResource("approval").Update(ctx, csr); err != nil {
			return ignoreGone(err)
		}
	}
	validity := c.cfg.CertValidity
	if e := csr.Spec.ExpirationSeconds; e != nil && time.Duration(*e)*time.Second < validity {
		validity = max(time.Duration(*e)*time.Second, MinCertValidity)
	}
	name := req.Subject.CommonName
	der, err := signLeaf(ca, caKey, req.PublicKey, name, c.now(), validity, req.URIs)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := c.api.Status().Update(ctx, csr); err != nil {
		return ignoreGone(err)
	}
	c.metrics.csrSigned.Inc()
	c.log.Info("signed a member certificate", "csr", csr.Name, "requester", csr.Spec.Username, "name", name,
		"identities", uriStrings(req.URIs), "validity", validity)
	return nil
}

func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// review checks a CSR against the registration of its requester and
// returns the parsed request, or an error that says what is not allowed.
func (c *Controller) review(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*x509.CertificateRequest, error) {
	prefix := "system:serviceaccount:" + c.cfg.Namespace + ":"
	sa, ok := strings.CutPrefix(csr.Spec.Username, prefix)
	if !ok || sa == "" || strings.Contains(sa, ":") {
		return nil, fmt.Errorf("requester %q is not a member: members are ServiceAccounts of namespace %s annotated with %s",
			csr.Spec.Username, c.cfg.Namespace, AnnotationIdentities)
	}
	var acct corev1.ServiceAccount
	if err := c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: sa}, &acct); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("ServiceAccount %s/%s of the requester no longer exists", c.cfg.Namespace, sa)
		}
		return nil, fmt.Errorf("reading ServiceAccount %s/%s: %w", c.cfg.Namespace, sa, err)
	}
	ids := splitList(acct.Annotations[AnnotationIdentities])
	if len(ids) == 0 {
		return nil, fmt.Errorf("ServiceAccount %s/%s is not a registered member: it has no annotation %s",
			c.cfg.Namespace, sa, AnnotationIdentities)
	}
	names := splitList(acct.Annotations[AnnotationNames])
	return CheckRequest(csr.Spec.Request, csr.Spec.Usages, ids, names)
}

// CheckRequest parses a PEM certificate request and checks it against what
// a member may hold: a signature that verifies, an ECDSA P-256/P-384,
// Ed25519 or RSA ≥ 2048 key, at least one URI SAN and every URI SAN among
// identities, a CN that is also the only DNS/IP SAN and is among names, no
// e-mail SANs, and usages within server and client authentication.
func CheckRequest(requestPEM []byte, usages []certificatesv1.KeyUsage, identities, names []string) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(requestPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("spec.request: no PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("spec.request: signature: %w", err)
	}
	if err := checkKey(req.PublicKey); err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	for _, u := range usages {
		switch u {
		case certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth, certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment:
		default:
			return nil, fmt.Errorf("spec.usages: %q is not allowed (only server auth, client auth, digital signature, key encipherment)", u)
		}
	}
	if len(req.EmailAddresses) > 0 {
		return nil, fmt.Errorf("spec.request: e-mail SANs %v are not allowed", req.EmailAddresses)
	}
	if len(req.URIs) == 0 {
		return nil, fmt.Errorf("spec.request: no identity (URI SAN kubelink://<mesh>/<cluster>); the member may hold %v", identities)
	}
	for _, u := range req.URIs {
		if !slices.Contains(identities, u.String()) {
			return nil, fmt.Errorf("spec.request: identity %s is not the member's: it may hold %v (annotation %s)", u, identities, AnnotationIdentities)
		}
	}
	// The certificate is named like the bridge: the CN, and the same name
	// as the only DNS or IP SAN (signLeaf derives the SAN from the CN).
	cn := req.Subject.CommonName
	sans := slices.Clone(req.DNSNames)
	for _, ip := range req.IPAddresses {
		sans = append(sans, ip.String())
	}
	if cn == "" || len(sans) != 1 || !strings.EqualFold(sans[0], cn) {
		return nil, fmt.Errorf("spec.request: want CN = the one DNS or IP SAN = the bridge's name, got CN %q and SANs %v", cn, sans)
	}
	if !slices.ContainsFunc(names, func(m string) bool { return strings.EqualFold(m, cn) }) {
		return nil, fmt.Errorf("spec.request: name %q is not the member's: it may use %v (annotation %s)", cn, names, AnnotationNames)
	}
	return req, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not allowed (P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too short (at least 2048)", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T is not allowed", pub)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func uriStrings(us []*url.URL) []string {
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}
