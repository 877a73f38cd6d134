//go:build e2e

package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/certwatch"
)

// csrKept: kube-controller-manager's csrcleaner deletes an approved CSR an
// hour after its approval, so a certificate whose NotBefore (backdated by at
// most 5 minutes, lib/certwatch) is older than that may have lost its CSR.
const csrKept = time.Hour

// Cluster a is the lab's mesh authority, b a member: b's certificate comes
// from a through a CertificateSigningRequest, and b never holds the CA key.
func TestMemberCertificateFromAuthority(t *testing.T) {
	f := features.New("b's certificate is signed by the authority a; b holds no CA key").
		Assess("b's Secret, a's published CA and a's signed request agree", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			var ca corev1.ConfigMap
			if err := lab.A.In("kubelink").Get(ctx, certwatch.CAConfigMap, "kubelink", &ca); err != nil {
				t.Fatalf("a: ConfigMap %s: %v", certwatch.CAConfigMap, err)
			}
			var s corev1.Secret
			_, err := Eventually(ctx, 120*time.Second, time.Second, func(ctx context.Context) error {
				if err := lab.B.In("kubelink").Get(ctx, "kubelink-tls", "kubelink", &s); err != nil {
					return err
				}
				crt, err := certwatch.ParseCertificate(s.Data["tls.crt"])
				if err != nil {
					return err
				}
				_, err = certwatch.CheckCert(s.Data["tls.crt"], s.Data["tls.key"], []byte(ca.Data["ca.crt"]), crt.Subject.CommonName, time.Now(), "kubelink://default/b")
				return err
			})
			if err != nil {
				t.Errorf("b's certificate does not verify against a's CA as kubelink://default/b: %v", err)
			}
			if len(s.Data["ca.key"]) > 0 {
				t.Error("b's Secret kubelink-tls holds ca.key")
			}
			var csrs certificatesv1.CertificateSigningRequestList
			if err := lab.A.Res.List(ctx, &csrs); err != nil {
				t.Fatalf("a: listing CSRs: %v", err)
			}
			signed := slices.ContainsFunc(csrs.Items, func(c certificatesv1.CertificateSigningRequest) bool {
				return c.Spec.SignerName == certwatch.SignerName && c.Spec.Username == "system:serviceaccount:kubelink:member-b" &&
					string(c.Status.Certificate) == string(s.Data["tls.crt"])
			})
			switch crt, err := certwatch.ParseCertificate(s.Data["tls.crt"]); {
			case signed:
			case err != nil:
				t.Errorf("b's tls.crt: %v", err)
			case time.Since(crt.NotBefore) > csrKept:
				// A lab that stayed up (csrKept).
				t.Logf("b's certificate is from %s (NotBefore, backdated ≤ 5 min): its CSR at a is past the csrcleaner's hour", crt.NotBefore.Format(time.RFC3339))
			default:
				t.Errorf("a has no signed CSR of member-b carrying b's certificate (%d CSRs; the certificate's NotBefore is %s, within the hour a signed CSR is kept)",
					len(csrs.Items), crt.NotBefore.Format(time.RFC3339))
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
