package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func TestJoinWithToken(t *testing.T) {
	eu, us := twoClusters(t)
	eu.localLink(t, "192.168.0.1/24", "100.64.32.0/20", "172.18.0.3:30777", "wireguard-userspace", keyEU)
	us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-userspace", keyUS)
	ctx := context.Background()
	// kubelink's namespace, as install makes it (no install here).
	if _, err := eu.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubelink"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tok := filepath.Join(dir, "us.token")
	create := []string{"token", "create", "--context", "eu", "--name", "us", "--address", "192.168.0.2", "--cidr", "100.64.48.0/20"}

	// The issuer refuses claims that are not the new member's to make.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--context", "eu", "--name", "us", "--address", "192.168.0.1", "--cidr", "100.64.48.0/20"}, `--address 192.168.0.1 is "eu" (context eu)'s own`},
		{[]string{"token", "create", "--context", "eu", "--name", "us", "--address", "192.168.0.2", "--cidr", "100.64.40.0/21"}, "overlaps \"eu\" (context eu)'s service CIDR 100.64.32.0/20"},
		{[]string{"token", "create", "--context", "eu", "--name", "us", "--address", "192.168.1.2", "--cidr", "100.64.48.0/20"}, "must be a host address inside the mesh 192.168.0.0/24"},
		{append(create, "--ttl", "1m"), "--ttl 1m0s: must be 10m0s to 24h0m0s"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token create %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if l := links(t, eu); len(l) != 0 {
		t.Fatalf("refused token requests made links: %v", l)
	}

	out, stderr, err := run(t, append(create, "-f", tok)...)
	if err != nil || !strings.Contains(out, "token written to "+tok) {
		t.Fatalf("token create: %v\n%s%s", err, stderr, out)
	}
	if fi, err := os.Stat(tok); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v %v, want mode 0600", fi.Mode(), err)
	}
	if l := links(t, eu)["us"]; l.Spec.Endpoint != "Inbound" || l.Spec.ClusterAddress != "192.168.0.2/24" || l.Spec.PublicKey != "" || l.Annotations[tokenAnnotation] == "" {
		t.Errorf("eu's link to the new member: %+v %v", l.Spec, l.Annotations)
	}
	tc := readToken(t, tok)
	// The credential may set the key and endpoint of its one link, nothing else.
	cred, _, err := tc.client()
	if err != nil {
		t.Fatal(err)
	}
	var kl v1alpha1.KubeLink
	if err := cred.Get(ctx, client.ObjectKey{Name: "us"}, &kl); err != nil {
		t.Fatalf("the credential cannot read its link: %v", err)
	}
	claim := kl.DeepCopy()
	claim.Spec.CIDR = "10.0.0.0/8"
	if err := cred.Update(ctx, claim); err == nil || !strings.Contains(err.Error(), "a join token may set only spec.publicKey and spec.endpoint") {
		t.Errorf("the credential changed the link's CIDR: %v", err)
	}
	if err := cred.Get(ctx, client.ObjectKey{Name: "eu"}, &v1alpha1.KubeLink{}); !apierrors.IsForbidden(err) {
		t.Errorf("the credential read another KubeLink: %v", err)
	}

	// Altered, expired, or for another cluster: refused, nothing changes.
	altered := *tc
	altered.Issuer.Endpoint = "10.66.66.66:30777"
	expired := *tc
	expired.Expires = time.Now().Add(-time.Minute)
	for _, c := range []struct {
		name, ctx string
		t         *tokenContent
		want      string
	}{
		{"altered", "us", &altered, "the token was altered"},
		{"expired", "us", &expired, "the token expired at"},
		{"another cluster", "eu", tc, "the token is for member us"},
	} {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, []byte(c.t.encode()), 0o600)
		if _, _, err := run(t, "join", "--token", p, "--context", c.ctx, "--timeout", "20s"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("join with a token %s: %v, want %q", c.name, err, c.want)
		}
	}
	if l := links(t, us); len(l) != 0 {
		t.Errorf("refused tokens made links in us: %v", l)
	}

	brokers(t, eu, us)
	out, stderr, err = run(t, "join", "--token", tok, "--context", "us", "--timeout", "30s")
	if err != nil || !strings.Contains(out, "us joined eu's mesh 192.168.0.0/24 with token "+tc.ID+" (now used up)") {
		t.Fatalf("join --token: %v\n%s%s", err, stderr, out)
	}
	if l := links(t, eu)["us"]; l.Spec.PublicKey != keyUS || l.Spec.Endpoint != "172.19.0.3:30777" || l.Spec.CIDR != "100.64.48.0/20" {
		t.Errorf("eu's link to us after the join: %+v", l.Spec)
	}
	if l := links(t, us)["eu"]; l.Spec.PublicKey != keyEU || l.Spec.Endpoint != "172.18.0.3:30777" || l.Spec.ClusterAddress != "192.168.0.1/24" {
		t.Errorf("us's link to eu: %+v", l.Spec)
	}
	sa := "kubelink-join-" + tc.ID
	if _, err := eu.cs.CoreV1().ServiceAccounts("kubelink").Get(ctx, sa, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the token's ServiceAccount is still there: %v", err)
	}
	// Used up.
	if _, _, err := run(t, "join", "--token", tok, "--context", "us", "--timeout", "20s"); err == nil || !strings.Contains(err.Error(), "the token was already used") {
		t.Errorf("a second use: %v", err)
	}
	// The used token's ClusterRole and binding go with the next token.
	if _, err := eu.cs.RbacV1().ClusterRoles().Get(ctx, sa, metav1.GetOptions{}); err != nil {
		t.Errorf("the used token's ClusterRole: %v", err)
	}
	if _, _, err := run(t, "token", "create", "--context", "eu", "--name", "ap", "--address", "192.168.0.3", "--cidr", "100.64.64.0/20", "-f", filepath.Join(dir, "ap.token")); err != nil {
		t.Fatalf("a second token: %v", err)
	}
	if _, err := eu.cs.RbacV1().ClusterRoles().Get(ctx, sa, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the used token's ClusterRole after the next token create: %v, want it gone", err)
	}
	if _, err := eu.cs.RbacV1().ClusterRoleBindings().Get(ctx, sa, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the used token's ClusterRoleBinding after the next token create: %v, want it gone", err)
	}
}

// The bridge: token create at the mesh authority registers the new member
// there for its own identity and name only; join --token reads the
// member's token with the one-time credential, switches the member to
// certificates the authority signs, and completes the pair.
func TestJoinWithTokenBridge(t *testing.T) {
	eu, us := bridgePair(t)
	ctx := context.Background()
	brokers(t, eu, us)
	dir := t.TempDir()
	tok := filepath.Join(dir, "us.token")
	create := []string{"token", "create", "--context", "eu", "--name", "us", "--address", "192.168.0.2", "--cidr", "100.64.48.0/20"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{create, "--endpoint: the bridge needs the new member's endpoint"},
		{[]string{"token", "create", "--context", "us", "--name", "ap", "--address", "192.168.0.3", "--cidr", "100.64.64.0/20", "--endpoint", "172.20.0.3:30088"},
			`"us" (context us) is not the mesh authority`},
		// the authority's own name for the member's certificate
		{append(create, "--endpoint", "172.18.0.3:30088"), "its bridge name 172.18.0.3 is already registered at the authority for eu (the authority)"},
		{append(create, "--endpoint", "172.19.0.3,172.18.0.3:30088"), "the host must be one IP address or DNS name"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token create %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if l := links(t, eu); len(l) != 0 {
		t.Fatalf("refused token requests made links: %v", l)
	}
	// A token for another endpoint than us's: join refuses it.
	other := filepath.Join(dir, "other.token")
	if _, stderr, err := run(t, append(create, "--endpoint", "172.19.0.9:30088", "-f", other)...); err != nil {
		t.Fatalf("token create: %v\n%s", err, stderr)
	}
	if _, _, err := run(t, "join", "--token", other, "--context", "us", "--timeout", "20s"); err == nil || !strings.Contains(err.Error(), "ask for a token with --endpoint 172.19.0.3:30088") {
		t.Errorf("join with a token for another endpoint: %v", err)
	}
	if err := eu.c.Delete(ctx, &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "us"}}); err != nil {
		t.Fatal(err)
	}
	// A registered name stays its member's: no token hands it out again ...
	if _, _, err := run(t, append(create, "--endpoint", "172.19.0.3:30088")...); err == nil || !strings.Contains(err.Error(), "us is registered at the mesh authority already") {
		t.Errorf("a token for a registered member: %v", err)
	}
	if l := links(t, eu); len(l) != 0 {
		t.Errorf("the refused token left links: %v", l)
	}
	// ... until it is taken out; then the unused earlier token, whose Role
	// names the new registration's token Secret, is withdrawn.
	if err := eu.cs.CoreV1().ServiceAccounts("kubelink").Delete(ctx, "member-us", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	otherTC := readToken(t, other)

	_, stderr, err := run(t, append(create, "--endpoint", "172.19.0.3:30088", "-f", tok)...)
	if err != nil || !strings.Contains(stderr, `us registered at the mesh authority for identity kubelink://default/us and name 172.19.0.3`) ||
		!strings.Contains(stderr, "withdrew the earlier, unused token "+otherTC.ID+" for us") {
		t.Fatalf("token create: %v\n%s", err, stderr)
	}
	if _, err := eu.cs.CoreV1().ServiceAccounts("kubelink").Get(ctx, "kubelink-join-"+otherTC.ID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the earlier token's ServiceAccount: %v, want it gone", err)
	}
	sa, err := eu.cs.CoreV1().ServiceAccounts("kubelink").Get(ctx, "member-us", metav1.GetOptions{})
	if err != nil || sa.Annotations[identitiesAnnotation] != "kubelink://default/us" || sa.Annotations[namesAnnotation] != "172.19.0.3" {
		t.Errorf("the member's ServiceAccount at the authority: %v %v", sa, err)
	}
	if l := links(t, eu)["us"]; l.Spec.Endpoint != "Inbound" || l.Spec.PublicKey != "" {
		t.Errorf("eu's link to us before the join: %+v", l.Spec)
	}
	tc := readToken(t, tok)
	// The credential reads the new member's token and no other Secret.
	cred, rc, err := tc.client()
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := kubernetesFor(rc)
	if _, err := cs.CoreV1().Secrets("kubelink").Get(ctx, "member-us-token", metav1.GetOptions{}); err != nil {
		t.Errorf("the credential cannot read the member's token: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("kubelink").Get(ctx, "kubelink-ca", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the credential read another Secret: %v", err)
	}
	var kl v1alpha1.KubeLink
	if err := cred.Get(ctx, client.ObjectKey{Name: "us"}, &kl); err != nil {
		t.Fatal(err)
	}
	kl.Spec.CIDR = "10.0.0.0/8"
	if err := cred.Update(ctx, &kl); err == nil {
		t.Errorf("the credential changed the link's CIDR")
	}

	out, stderr, err := run(t, "join", "--token", tok, "--context", "us", "--timeout", "60s")
	if err != nil || !strings.Contains(out, "us joined eu's mesh 192.168.0.0/24 with token "+tc.ID+" (now used up)") {
		t.Fatalf("join --token: %v\n%s%s", err, stderr, out)
	}
	for _, w := range []string{`upgrading release kubelink to a member of the authority eu`, `"us" (context us): removing its own CA`,
		`"us" (context us): registered at the mesh authority eu (identity kubelink://default/us)`} {
		if !strings.Contains(stderr, w) {
			t.Errorf("progress lacks %q:\n%s", w, stderr)
		}
	}
	kc, kctx := authorityKubeconfig(t, us)
	if kc.Clusters[kctx.Cluster].Server != tc.AuthorityServer || kc.AuthInfos[kctx.AuthInfo].Token != "member-us-token-value" || kctx.Namespace != "kubelink" {
		t.Errorf("the member's kubeconfig: server %s (want %s), token %q", kc.Clusters[kctx.Cluster].Server, tc.AuthorityServer, kc.AuthInfos[kctx.AuthInfo].Token)
	}
	if _, err := us.cs.CoreV1().Secrets("kubelink").Get(ctx, "kubelink-tls", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the member's own CA is still there: %v", err)
	}
	if cfg, _ := us.cs.CoreV1().ConfigMaps("kubelink").Get(ctx, "kubelink-cluster", metav1.GetOptions{}); cfg.Data["KUBELINK_CERT_MODE"] != "csr" {
		t.Errorf("the member's KUBELINK_CERT_MODE = %q, want csr", cfg.Data["KUBELINK_CERT_MODE"])
	}
	if l := links(t, us)["eu"]; l.Spec.Endpoint != "172.18.0.3:30088" || l.Spec.PublicKey != "" || l.Spec.ClusterAddress != "192.168.0.1/24" {
		t.Errorf("us's bridge link to eu: %+v", l.Spec)
	}
	if _, err := eu.cs.CoreV1().ServiceAccounts("kubelink").Get(ctx, "kubelink-join-"+tc.ID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the token's ServiceAccount is still there: %v", err)
	}
	if l := links(t, eu)["us"]; l.Spec.Endpoint != "172.19.0.3:30088" || l.Spec.PublicKey != "" {
		t.Errorf("eu's link to us after the join: %+v", l.Spec)
	}
	// Used up: by another member at once (the link says who used it) ...
	tc2 := *tc
	tc2.Member.Endpoint = "172.19.0.9:30088"
	if _, _, err := joinWithTokenContent(t, &tc2, "us"); err == nil {
		t.Errorf("a token altered for another endpoint was accepted")
	}
	kl = v1alpha1.KubeLink{}
	if err := cred.Get(ctx, client.ObjectKey{Name: "us"}, &kl); err == nil {
		kl.Spec.Endpoint = "172.19.0.9:30088"
		if err := cred.Update(ctx, &kl); err == nil || !strings.Contains(err.Error(), "the join token was already used") {
			t.Errorf("the credential moved the used link's endpoint: %v", err)
		}
	}
	// ... and by anyone once the API server dropped the credential with
	// its ServiceAccount.
	deadline := time.Now().Add(15 * time.Second)
	for cred.Get(ctx, client.ObjectKey{Name: "us"}, &v1alpha1.KubeLink{}) == nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if _, _, err := run(t, "join", "--token", tok, "--context", "us", "--timeout", "20s"); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a second use: %v", err)
	}
}

// readToken is the token in the file path.
func readToken(t *testing.T, path string) *tokenContent {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := decodeToken(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

func joinWithTokenContent(t *testing.T, tc *tokenContent, context string) (string, string, error) {
	p := filepath.Join(t.TempDir(), "token")
	os.WriteFile(p, []byte(tc.encode()), 0o600)
	return run(t, "join", "--token", p, "--context", context, "--timeout", "20s")
}
