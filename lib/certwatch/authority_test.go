package certwatch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/kubelink/kubelink/lib/testenv"
)

// The mesh authority against two real API servers: the authority's
// (certwatch in self mode with --sign-requests) and a member's (certwatch
// in csr mode, speaking to the authority as its member ServiceAccount with
// the chart's RBAC with meshAuthority.enabled). The member gets a
// certificate for its own identity without ever holding the CA key, renews
// it without a gap, and a hostile member can get nothing for another's
// identity or name, nor approve or sign anything itself.
func TestMeshAuthority(t *testing.T) {
	authCP := &testenv.ControlPlane{Name: "authority"}
	testenv.StartControlPlaneForTest(t, authCP)
	memberCP := &testenv.ControlPlane{Name: "member"}
	testenv.StartControlPlaneForTest(t, memberCP)
	ctx := context.Background()
	auth, err := authCP.Client()
	must(t, err)
	member, err := memberCP.Client()
	must(t, err)
	for _, c := range []client.Client{auth, member} {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}}))
	}
	// The chart's RBAC of a mesh authority (the ServiceAccounts,
	// certwatch's own Secrets, and the authority's signing rights).
	must(t, testenv.CreateObjects(ctx, auth, testenv.ChartRBAC(t, map[string]string{"meshAuthority.enabled": "true"})...))

	// The authority itself runs as kubelink-certwatch, with only that RBAC.
	authCfg := Defaults()
	authCfg.Namespace, authCfg.Mode, authCfg.Sign, authCfg.DNSName, authCfg.Identities = "kubelink", ModeSelf, true, "a.example.com", "kubelink://lab/a"
	authCfg.TLSSecret, authCfg.WireGuardSecret, authCfg.Dir, authCfg.MetricsAddr, authCfg.Resync = "kubelink-tls", "", t.TempDir(), "", time.Second
	// The authority's validity caps the members' (a CSR cannot ask for less
	// than 10 minutes): 9 s, so that the test sees a renewal after 6 s.
	authCfg.CertValidity = 9 * time.Second
	startController(t, authCfg, saConfig(t, authCP, "kubelink", "kubelink-certwatch"))
	var caCM corev1.ConfigMap
	eventually(t, "the CA published in ConfigMap kubelink-mesh-ca", func() bool {
		return auth.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: CAConfigMap}, &caCM) == nil
	})
	authTLS := secretOf(t, auth, "kubelink", "kubelink-tls")
	if caCM.Data[KeyCACert] != string(authTLS.Data[KeyCACert]) {
		t.Fatal("ConfigMap kubelink-mesh-ca does not hold the authority's ca.crt")
	}

	// Members b and c are registered; x has an account but no registration.
	register(t, auth, "member-b", "kubelink://lab/b", "b.example.com")
	register(t, auth, "member-c", "kubelink://lab/c", "c.example.com")
	register(t, auth, "member-x", "", "")

	t.Run("a member gets its own certificate and renews it without a gap", func(t *testing.T) {
		kc := writeKubeconfig(t, saConfig(t, authCP, "kubelink", "member-b"))
		dir := t.TempDir()
		cfg := Defaults()
		cfg.Namespace, cfg.Mode, cfg.DNSName, cfg.Identities, cfg.AuthorityKubeconfig = "kubelink", ModeCSR, "b.example.com", "kubelink://lab/b", kc
		cfg.TLSSecret, cfg.WireGuardSecret, cfg.Dir, cfg.MetricsAddr, cfg.Resync = "kubelink-tls", "", dir, "", time.Second
		startController(t, cfg, memberCP.Config())

		var first *x509.Certificate
		eventually(t, "b's certificate from the authority", func() bool {
			s := secretOf(t, member, "kubelink", "kubelink-tls")
			if s == nil {
				return false
			}
			c, err := CheckCert(s.Data[KeyTLSCert], s.Data[KeyTLSKey], authTLS.Data[KeyCACert], "b.example.com", time.Now(), "kubelink://lab/b")
			if err != nil {
				return false
			}
			first = c
			return fileIs(filepath.Join(dir, TLSDir, KeyTLSCert), s.Data[KeyTLSCert])
		})
		s := secretOf(t, member, "kubelink", "kubelink-tls")
		if len(s.Data[KeyCAKey]) > 0 || len(s.Data[KeyPendingKey]) > 0 {
			t.Errorf("member Secret keys %v: no ca.key, no pending.key wanted", slices.Sorted(mapsKeys(s.Data)))
		}
		if string(s.Data[KeyCACert]) != string(authTLS.Data[KeyCACert]) {
			t.Error("member's ca.crt is not the authority's")
		}
		// Over 12 s (past the renewal at 6 s and the first certificate's
		// expiry at 9 s), the file in the directory is always a valid
		// certificate for b, and a second one replaces the first.
		renewed := false
		for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			m, err := ReadSnapshot(filepath.Join(dir, TLSDir), KeyTLSCert, KeyTLSKey, KeyCACert)
			if err != nil {
				t.Fatalf("reading the TLS files: %v", err)
			}
			c, err := CheckCert(m[KeyTLSCert], m[KeyTLSKey], authTLS.Data[KeyCACert], "b.example.com", time.Now(), "kubelink://lab/b")
			if err != nil && !strings.Contains(err.Error(), ErrDue.Error()) {
				t.Fatalf("at %s the member's TLS files are not a valid certificate for b: %v", time.Now().Format(time.StampMilli), err)
			}
			if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
				renewed = true
			}
		}
		if !renewed {
			t.Error("the certificate was not renewed within 12 s of a 9 s validity")
		}
		var list certificatesv1.CertificateSigningRequestList
		must(t, auth.List(ctx, &list))
		signed := 0
		for _, csr := range list.Items {
			if csr.Spec.Username == "system:serviceaccount:kubelink:member-b" && len(csr.Status.Certificate) > 0 && approved(&csr) {
				signed++
			}
		}
		if signed < 2 {
			t.Errorf("%d approved and signed requests of member-b, want ≥ 2 (first + renewal)", signed)
		}
	})

	t.Run("a hostile member gets nothing that is not its own", func(t *testing.T) {
		hostile, err := client.New(saConfig(t, authCP, "kubelink", "member-c"), client.Options{Scheme: auth.Scheme()})
		must(t, err)
		for _, tc := range []struct {
			name, cn string
			ids      []string
			usages   []certificatesv1.KeyUsage
			as       client.Client
			want     string
		}{
			{"another member's identity", "c.example.com", []string{"kubelink://lab/b"}, nil, hostile, "identity kubelink://lab/b is not the member's"},
			{"its own and another's identity", "c.example.com", []string{"kubelink://lab/c", "kubelink://lab/b"}, nil, hostile, "identity kubelink://lab/b is not the member's"},
			{"another member's name", "b.example.com", []string{"kubelink://lab/c"}, nil, hostile, `name "b.example.com" is not the member's`},
			{"a CA's usage", "c.example.com", []string{"kubelink://lab/c"}, []certificatesv1.KeyUsage{certificatesv1.UsageCertSign}, hostile, `"cert sign" is not allowed`},
			{"no identity", "c.example.com", nil, nil, hostile, "no identity"},
			{"an unregistered account", "x.example.com", []string{"kubelink://lab/x"}, nil, asSA(t, authCP, "member-x"), "is not a registered member"},
			{"the admin itself", "a.example.com", []string{"kubelink://lab/a"}, nil, auth, "is not a member"},
		} {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			req, err := CertificateRequest(key, tc.cn, tc.ids)
			must(t, err)
			usages := tc.usages
			if usages == nil {
				usages = []certificatesv1.KeyUsage{certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth}
			}
			csr := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{GenerateName: "hostile-"},
				Spec: certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: SignerName, Usages: usages}}
			must(t, tc.as.Create(ctx, csr))
			var got certificatesv1.CertificateSigningRequest
			eventually(t, tc.name+": an answer", func() bool {
				return auth.Get(ctx, client.ObjectKeyFromObject(csr), &got) == nil && (finished(&got) || len(got.Status.Certificate) > 0)
			})
			if len(got.Status.Certificate) > 0 || approved(&got) || !strings.Contains(conditionMessage(&got), tc.want) {
				t.Errorf("%s: certificate %d bytes, approved %v, conditions %q; want denied with %q", tc.name, len(got.Status.Certificate), approved(&got), conditionMessage(&got), tc.want)
			}
		}

		// Nor can it approve or sign its own request, or read any Secret.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		req, _ := CertificateRequest(key, "c.example.com", []string{"kubelink://lab/b"})
		csr := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{GenerateName: "self-approve-"},
			Spec: certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: SignerName, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}}}
		must(t, hostile.Create(ctx, csr))
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "self"})
		if err := hostile.SubResource("approval").Update(ctx, csr); !apierrors.IsForbidden(err) {
			t.Errorf("a member approving its request: %v, want Forbidden", err)
		}
		csr.Status.Certificate = []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
		if err := hostile.Status().Update(ctx, csr); !apierrors.IsForbidden(err) {
			t.Errorf("a member writing a certificate: %v, want Forbidden", err)
		}
		if err := hostile.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: "kubelink-tls"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("a member reading the authority's Secret: %v, want Forbidden", err)
		}
		// Nor ask another signer of the cluster (the chart's admission
		// policy kubelink-member-csrs): here a client certificate of the
		// API server, whose approver might trust any account's request.
		for _, signer := range []string{certificatesv1.KubeAPIServerClientSignerName, certificatesv1.KubeAPIServerClientKubeletSignerName, "example.com/other"} {
			other := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{GenerateName: "other-signer-"},
				Spec: certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: signer, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}}}
			if err := hostile.Create(ctx, other); err == nil || !strings.Contains(err.Error(), "only of the signer "+SignerName) {
				t.Errorf("a member asking the signer %s: %v, want a refusal naming %s", signer, err, SignerName)
			}
		}
		// The policy matches the members only: the admin still may.
		adminCSR := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{GenerateName: "admin-"},
			Spec: certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: "example.com/other", Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}}}
		if err := auth.Create(ctx, adminCSR); err != nil {
			t.Errorf("the admin asking another signer: %v", err)
		}
	})

	t.Run("a member asking for another's identity is refused and retries with a new request", func(t *testing.T) {
		must(t, member.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "posing"}}))
		kc := writeKubeconfig(t, saConfig(t, authCP, "kubelink", "member-c"))
		cfg := Defaults()
		cfg.Namespace, cfg.Mode, cfg.DNSName, cfg.Identities, cfg.AuthorityKubeconfig = "posing", ModeCSR, "c.example.com", "kubelink://lab/b", kc
		cfg.TLSSecret, cfg.WireGuardSecret, cfg.Dir, cfg.MetricsAddr, cfg.Resync = "kubelink-tls", "", t.TempDir(), "", time.Second
		ctrl := startController(t, cfg, memberCP.Config())
		denied := func() int {
			var list certificatesv1.CertificateSigningRequestList
			must(t, auth.List(ctx, &list))
			n := 0
			for _, csr := range list.Items {
				if csr.Spec.Username == "system:serviceaccount:kubelink:member-c" && strings.HasPrefix(csr.Name, "kubelink-") && finished(&csr) {
					n++
				}
			}
			return n
		}
		eventually(t, "two denied requests (the first and a retry with a new key)", func() bool { return denied() >= 2 })
		if s := secretOf(t, member, "posing", "kubelink-tls"); s != nil && len(s.Data[KeyTLSCert]) > 0 {
			t.Error("the posing member has a certificate")
		}
		if ctrl.goodSyncs.Load() != 0 {
			t.Errorf("%d good syncs of the posing member, want 0 (never ready)", ctrl.goodSyncs.Load())
		}
	})

	t.Run("a removed member's certificates are revoked at every cluster until they expire", func(t *testing.T) {
		const d = "kubelink://lab/d"
		register(t, auth, "member-d", d, "d.example.com")
		must(t, member.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dee"}}))
		dDir := t.TempDir()
		dCfg := Defaults()
		dCfg.Namespace, dCfg.Mode, dCfg.DNSName, dCfg.Identities = "dee", ModeCSR, "d.example.com", d
		// d reads the authority's kubeconfig from a Secret, as the chart
		// sets it up (b and c from a file).
		dCfg.AuthoritySecret = "kubelink-authority"
		authoritySecret := func() {
			kc, err := os.ReadFile(writeKubeconfig(t, saConfig(t, authCP, "kubelink", "member-d")))
			must(t, err)
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "dee", Name: dCfg.AuthoritySecret}}
			_, err = controllerutil.CreateOrUpdate(ctx, member, s, func() error {
				s.Data = map[string][]byte{KeyAuthorityKubeconfig: kc}
				return nil
			})
			must(t, err)
		}
		authoritySecret()
		dCfg.TLSSecret, dCfg.WireGuardSecret, dCfg.Dir, dCfg.MetricsAddr, dCfg.Resync = "kubelink-tls", "", dDir, "", time.Minute
		// d's certwatch runs throughout: through the removal, and the
		// rejoin that gives it a new token in the same Secret (below).
		// Its resync is a minute: it must act on the Secret's change.
		dLog := &lockedBuffer{}
		runControllerLog(t, dCfg, memberCP.Config(), io.MultiWriter(testWriter{t}, dLog))
		// b, another member, whose bridge would have to refuse d.
		bDir := t.TempDir()
		bCfg := Defaults()
		bCfg.Namespace, bCfg.Mode, bCfg.DNSName, bCfg.Identities = "kubelink", ModeCSR, "b.example.com", "kubelink://lab/b"
		bCfg.AuthorityKubeconfig = writeKubeconfig(t, saConfig(t, authCP, "kubelink", "member-b"))
		bCfg.TLSSecret, bCfg.WireGuardSecret, bCfg.Dir, bCfg.MetricsAddr, bCfg.Resync = "kubelink-tls", "", bDir, "", time.Second
		startController(t, bCfg, memberCP.Config())

		listAt := func(dir string) map[string]bool {
			b, err := os.ReadFile(filepath.Join(dir, TLSDir, FileRevoked))
			if err != nil {
				return nil
			}
			return revokedSerials(b)
		}
		cm := func() corev1.ConfigMap {
			var cm corev1.ConfigMap
			must(t, auth.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: CAConfigMap}, &cm))
			return cm
		}
		serialAt := func(dir string) string {
			m, err := ReadSnapshot(filepath.Join(dir, TLSDir), KeyTLSCert)
			if err != nil {
				return ""
			}
			c, err := ParseCertificate(m[KeyTLSCert])
			if err != nil {
				return ""
			}
			return c.SerialNumber.Text(16)
		}
		var dSerial string
		eventually(t, "d's certificate recorded as issued, and empty revocation lists at b and at the authority", func() bool {
			issued, _ := parseEntries(cm().Data[KeyIssued])
			dSerial = serialAt(dDir)
			_, rec := issued[dSerial]
			return dSerial != "" && rec && listAt(bDir) != nil && len(listAt(bDir)) == 0 && listAt(authCfg.Dir) != nil && len(listAt(authCfg.Dir)) == 0
		})
		if got := cm().Data[KeyRevoked]; got != "" {
			t.Fatalf("revoked %q with every member registered", got)
		}

		// Removed: d's certificates on every cluster's list within a few
		// resyncs (1 s here).
		unregister(t, auth, "member-d")
		start := time.Now()
		listed := func(dir, serial string) bool { return listAt(dir)[serial] }
		eventually(t, "d's certificate on the lists of the authority and of b", func() bool {
			return listed(authCfg.Dir, dSerial) && listed(bDir, dSerial)
		})
		took := time.Since(start)
		t.Logf("d's certificate %s revoked at the authority and at b after %s", dSerial, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("revocation reached b after %s; want within 5 resyncs (5 s)", took)
		}
		revoked, _ := parseEntries(cm().Data[KeyRevoked])
		e, ok := revoked[dSerial]
		if !ok || !slices.Equal(e.identities, []string{d}) {
			t.Fatalf("ConfigMap revoked = %q, want d's certificate %s", cm().Data[KeyRevoked], dSerial)
		}
		if issued, _ := parseEntries(cm().Data[KeyIssued]); len(issued) > 0 {
			for s, e := range issued {
				if slices.Contains(e.identities, d) {
					t.Errorf("d's certificate %s still in the record of issued ones", s)
				}
			}
		}

		// Registered again (a rejoin): the old certificate stays revoked
		// (it may be a copy a compromised cluster kept). The new
		// ServiceAccount has a new token, which join writes into the
		// Secret of the running certwatch (the old token is refused since
		// the removal); d's certwatch takes it without a restart, sees its
		// serial on the list and gets a new certificate.
		eventually(t, "d's certwatch refused by the authority with its old token", func() bool {
			return strings.Contains(dLog.String(), "reading the mesh CA from ConfigMap kubelink/kubelink-mesh-ca of the authority: ")
		})
		register(t, auth, "member-d", d, "d.example.com")
		authoritySecret()
		var fresh string
		eventually(t, "a new certificate for d, not revoked", func() bool {
			fresh = serialAt(dDir)
			return fresh != "" && fresh != dSerial && !listed(bDir, fresh)
		})
		t.Logf("d renewed its revoked certificate: %s", fresh)
		// Renewed because its serial was listed, not because it was due.
		if !strings.Contains(dLog.String(), "the authority's kubeconfig changed") {
			t.Errorf("d's certwatch did not report taking the new kubeconfig:\n%s", dLog.String())
		}
		if !strings.Contains(dLog.String(), "the mesh authority revoked this certificate") {
			t.Errorf("d's certwatch stored a new certificate without naming the revocation as the reason:\n%s", dLog.String())
		}
		// The old one listed at every sample until it expires, then off
		// the lists (they stay as short as the certificates that could
		// still be used); the new one never.
		for time.Now().Before(e.notAfter.Add(-time.Second)) {
			if !listed(bDir, dSerial) || !listed(authCfg.Dir, dSerial) {
				t.Fatalf("d's revoked certificate left a list at %s, before it expires (%s)", time.Now().Format(time.StampMilli), e.notAfter.Format(time.StampMilli))
			}
			if listed(bDir, fresh) {
				t.Fatal("d's new certificate is on b's list")
			}
			time.Sleep(100 * time.Millisecond)
		}
		eventually(t, "d's old certificate off the lists after it expired", func() bool { return !listed(bDir, dSerial) && !listed(authCfg.Dir, dSerial) })
	})
}

// unregister removes a member at the authority: its ServiceAccount and
// bindings, as kubelinkctl leave does.
func unregister(t *testing.T, auth client.Client, name string) {
	t.Helper()
	ctx := context.Background()
	for _, o := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: name}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-member-" + name}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: "kubelink-member-" + name}},
	} {
		must(t, auth.Delete(ctx, o))
	}
}

// lockedBuffer is a bytes.Buffer for a log written by another goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// register makes a member ServiceAccount at the authority, annotated with
// what it may hold (none: not registered) and bound to the member roles.
func register(t *testing.T, auth client.Client, name, ids, names string) {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: name}}
	if ids != "" {
		sa.Annotations = map[string]string{AnnotationIdentities: ids, AnnotationNames: names}
	}
	must(t, auth.Create(ctx, sa))
	subj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: "kubelink"}}
	must(t, auth.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-member-" + name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kubelink-member"}, Subjects: subj}))
	must(t, auth.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: "kubelink-member-" + name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "kubelink-member"}, Subjects: subj}))
}

// saConfig is a rest.Config that authenticates as a ServiceAccount of cp.
func saConfig(t *testing.T, cp *testenv.ControlPlane, ns, name string) *rest.Config {
	t.Helper()
	rc, err := cp.ServiceAccountConfig(context.Background(), ns, name)
	must(t, err)
	return rc
}

func asSA(t *testing.T, cp *testenv.ControlPlane, name string) client.Client {
	t.Helper()
	c, err := client.New(saConfig(t, cp, "kubelink", name), client.Options{Scheme: cp.Scheme()})
	must(t, err)
	return c
}

func writeKubeconfig(t *testing.T, rc *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["authority"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	kc.AuthInfos["member"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	kc.Contexts["authority"] = &clientcmdapi.Context{Cluster: "authority", AuthInfo: "member"}
	kc.CurrentContext = "authority"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, clientcmd.WriteToFile(*kc, path))
	return path
}

func startController(t *testing.T, cfg Config, rc *rest.Config) *Controller {
	t.Helper()
	ctrl, _ := runController(t, cfg, rc)
	return ctrl
}

// runController is startController that can also be stopped before the
// test ends (stop waits for Run to return; later calls do nothing).
func runController(t *testing.T, cfg Config, rc *rest.Config) (*Controller, func()) {
	t.Helper()
	return runControllerLog(t, cfg, rc, testWriter{t})
}

// runControllerLog is runController with the log going to w.
func runControllerLog(t *testing.T, cfg Config, rc *rest.Config, w io.Writer) (*Controller, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ctrl, err := New(cfg, rc, slog.New(slog.NewTextHandler(w, nil)))
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s")
			}
		})
	}
	t.Cleanup(stop)
	return ctrl, stop
}

func secretOf(t *testing.T, c client.Client, ns, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return nil
	}
	return &s
}
