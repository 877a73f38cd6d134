package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"

	"strings"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// dnsName is a lower-case DNS name (the host of a bridge endpoint).
var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)

const (
	tokenPrefix = "kubelink-token-v1:"
	// tokenAnnotation on the issuer's KubeLink for the new member: the hash
	// of the token's content, so that an altered token is refused.
	tokenAnnotation = "kubelink.mandelsoft.org/join-token"
	// joinPolicy lets a join token's ServiceAccount change only the key and
	// the endpoint of the one KubeLink it may update.
	joinPolicy  = "kubelink-join-tokens"
	minTokenTTL = 10 * time.Minute // the API server's least TokenRequest lifetime
	maxTokenTTL = 24 * time.Hour
)

// tokenPeer is one side of a token.
type tokenPeer struct {
	Name      string `json:"name"`
	Address   string `json:"address"` // with the mesh's prefix length
	CIDR      string `json:"cidr"`
	Endpoint  string `json:"endpoint,omitempty"`
	PublicKey string `json:"publicKey,omitempty"`
}

// tokenContent is what a join token carries.
type tokenContent struct {
	ID        string    `json:"id"`
	Expires   time.Time `json:"expires"`
	MeshCIDR  string    `json:"meshCIDR"`
	DataPlane string    `json:"dataPlane"`
	Issuer    tokenPeer `json:"issuer"`
	Member    tokenPeer `json:"member"`
	Server    string    `json:"server"` // the issuer's API server
	CAData    []byte    `json:"caData,omitempty"`
	Namespace string    `json:"namespace"`
	// Credential is the one-time ServiceAccount token at the issuer.
	Credential string `json:"credential"`
	// The bridge: the new member's registration at the mesh authority (the
	// issuer), which signs its certificate for Identity and BridgeName (the
	// host of its endpoint); its pods reach the authority's API server at
	// AuthorityServer, whose certificate AuthorityCA signs.
	Identity        string `json:"identity,omitempty"`
	BridgeName      string `json:"bridgeName,omitempty"`
	AuthorityServer string `json:"authorityServer,omitempty"`
	AuthorityCA     []byte `json:"authorityCA,omitempty"`
}

// hash is the token's content without its credential (which the API
// server itself checks).
func (t *tokenContent) hash() string {
	c := *t
	c.Credential = ""
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// client reaches the issuer's API server as the token's credential.
func (t *tokenContent) client() (client.Client, *rest.Config, error) {
	rc := &rest.Config{Host: t.Server, BearerToken: t.Credential, TLSClientConfig: rest.TLSClientConfig{CAData: t.CAData}, Timeout: reachTimeout}
	scheme, err := newScheme()
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	return c, rc, err
}

func (t *tokenContent) encode() string {
	b, _ := json.Marshal(t)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (*tokenContent, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, tokenPrefix) {
		return nil, fmt.Errorf("not a kubelink join token (it starts with %q)", tokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, tokenPrefix))
	if err != nil {
		return nil, fmt.Errorf("the token is damaged: %v", err)
	}
	var t tokenContent
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("the token is damaged: %v", err)
	}
	return &t, nil
}

type tokenOptions struct {
	name, address, cidr, file, meshCIDR string
	endpoint, authorityServer           string
	ttl                                 time.Duration
}

func newToken(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Join tokens: let another team join its cluster to this one without sharing kubeconfigs",
	}
	o := &tokenOptions{}
	create := &cobra.Command{
		Use:   "create --name NAME --address ADDRESS --cidr CIDR",
		Short: "Print a single-use join token for a new member of this cluster's mesh",
		Long: `token create, in a cluster of the mesh, makes ready the link of this
cluster to a new member NAME, with the mesh address and service CIDR the
new member's team gave, and prints a token that carries what the new
member needs: this cluster's endpoint, key, address and CIDR, and a
credential that expires with the token (--ttl, 15 min by default) and may
do exactly one thing: in WireGuard, set the new member's key and endpoint
on that one link; with the bridge, read the new member's registration at
the mesh authority. The new member's admin runs

  kubelinkctl join --token FILE --context <its cluster>

which completes the pair from that side and uses the token up. A token
that was used, has expired or was altered is refused.

The bridge: run token create in the mesh authority's cluster, and give
the new member's --endpoint as well (its install prints it; kubelinkctl
show gateways --context <its cluster> shows it). token create registers
the new member at the authority for exactly its own identity
(kubelink://<mesh>/NAME) and the host of that endpoint; join --token then
switches the new member to certificates the authority signs. The CA key
never leaves the authority.`,
		Example: fmt.Sprintf(`  # WireGuard
  %[1]s token create --context eu --name ap --address 192.168.0.13 --cidr 100.64.48.0/20 -f ap.token
  # the bridge, in the mesh authority's cluster
  %[1]s token create --context eu --name ap --address 192.168.0.13 --cidr 100.64.48.0/20 --endpoint 203.0.113.7:30088 -f ap.token`, commandName()),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.name == "" || o.address == "" || o.cidr == "" {
				return usagef(cmd, "token create needs --name, --address and --cidr of the new member")
			}
			if o.ttl < minTokenTTL || o.ttl > maxTokenTTL {
				return usagef(cmd, "--ttl %s: must be %s to %s", o.ttl, minTokenTTL, maxTokenTTL)
			}
			return o.create(cmd.Context(), g)
		},
	}
	f := create.Flags()
	f.StringVar(&o.name, "name", "", "the new member's name in the mesh (its LocalLink's name) (required)")
	f.StringVar(&o.address, "address", "", "the new member's mesh address (required)")
	f.StringVar(&o.cidr, "cidr", "", "the new member's service CIDR (required)")
	f.DurationVar(&o.ttl, "ttl", 15*time.Minute, "how long the token is valid (10m to 24h)")
	f.StringVarP(&o.file, "file", "f", "", "write the token to this file (mode 0600) instead of printing it")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh, where this cluster is in several")
	f.StringVar(&o.endpoint, "endpoint", "", "bridge: the new member's endpoint host:port (the host its certificate names)")
	f.StringVar(&o.authorityServer, "authority-server", "", "bridge: the https:// URL the new member's pods reach this cluster's API server at (default: as join finds it)")
	cmd.AddCommand(create)
	return cmd
}

func (o *tokenOptions) create(ctx context.Context, g *globals) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	m, err := g.loadMember(ctx, *g.kube.Context, o.meshCIDR)
	if err != nil {
		return err
	}
	if errs := memberProblems([]*member{m}); len(errs) > 0 {
		return fmt.Errorf("this cluster cannot issue a token: %s", strings.Join(errs, "; "))
	}
	bridge := m.dataPlane == "bridge"
	switch {
	case bridge && !m.authority():
		return fmt.Errorf("%s is not the mesh authority: with the bridge, run token create in the authority's cluster (it registers the new member there)", m)
	case bridge && o.endpoint == "":
		return fmt.Errorf("--endpoint: the bridge needs the new member's endpoint host:port (its certificate names that host): its install printed it, and `%s show gateways --context <its cluster>` shows it", commandName())
	case !bridge && o.endpoint != "":
		return fmt.Errorf("--endpoint: only for the bridge (in WireGuard the new member sets its endpoint itself when it uses the token)")
	}
	// The new member's claims, checked here: the issuer decides them.
	if !dnsLabel.MatchString(o.name) {
		return fmt.Errorf("--name %q: must be a DNS label (lower case letters, digits, '-')", o.name)
	}
	addr, err := netip.ParseAddr(o.address)
	mesh := m.address.Masked()
	if err != nil || !mesh.Contains(addr) || addr == mesh.Addr() || addr == lastAddr(mesh) {
		return fmt.Errorf("--address %q: must be a host address inside the mesh %s", o.address, mesh)
	}
	cidr, err := netip.ParsePrefix(o.cidr)
	if err != nil || cidr != cidr.Masked() {
		return fmt.Errorf("--cidr %q: must be a network such as 100.64.48.0/20", o.cidr)
	}
	if addr == m.address.Addr() {
		return fmt.Errorf("--address %s is %s's own", addr, m)
	}
	if cidr.Overlaps(m.svc) {
		return fmt.Errorf("--cidr %s overlaps %s's service CIDR %s", cidr, m, m.svc)
	}
	for _, l := range m.links {
		if l.Name == o.name {
			return fmt.Errorf("%s already has a KubeLink %s: choose another --name, or delete it (kubectl delete kubelink %s)", m, o.name, o.name)
		}
		if p, err := netip.ParsePrefix(l.Spec.ClusterAddress); err == nil && p.Addr() == addr {
			return fmt.Errorf("--address %s is taken by the peer of KubeLink %s", addr, l.Name)
		}
		if p, err := netip.ParsePrefix(l.Spec.CIDR); err == nil && p.Overlaps(cidr) {
			return fmt.Errorf("--cidr %s overlaps the CIDR %s of KubeLink %s", cidr, p, l.Name)
		}
	}
	var identity, bridgeName string
	if bridge {
		if err := checkEndpoint(o.endpoint); err != nil {
			return fmt.Errorf("--endpoint %q: %v", o.endpoint, err)
		}
		bridgeName, _, _ = net.SplitHostPort(o.endpoint)
		// One name: the authority signs each comma-separated entry.
		if _, err := netip.ParseAddr(bridgeName); err != nil && !dnsName.MatchString(bridgeName) {
			return fmt.Errorf("--endpoint %q: the host must be one IP address or DNS name", o.endpoint)
		}
		// A name that is registered already stays its member's: a token
		// must not hand out an existing member's credential.
		if _, err := m.cs.CoreV1().ServiceAccounts(m.ns).Get(ctx, "member-"+o.name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("%s: %s is registered at the mesh authority already (ServiceAccount %s/member-%s): a token registers a new member only; to register it anew, take it out first (`%s leave %s --context %s`, or delete that ServiceAccount)",
				m, o.name, m.ns, o.name, commandName(), o.name, m.context)
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: ServiceAccount %s/member-%s: %w", m, m.ns, o.name, err)
		}
		u, err := url.Parse(strings.TrimSpace(strings.Split(m.value("bridge.identities"), ",")[0]))
		if err != nil || u.Scheme != "kubelink" || u.Host == "" {
			return fmt.Errorf("%s: its release's bridge.identities %q is not kubelink://<mesh>/<name>: run `%s install --context %s` again", m, m.value("bridge.identities"), commandName(), m.context)
		}
		identity = "kubelink://" + u.Host + "/" + o.name
		if err := checkClaims(ctx, m, &member{name: o.name}, identity, bridgeName); err != nil {
			return err
		}
	}
	id := make([]byte, 5)
	rand.Read(id)
	t := &tokenContent{
		ID: hex.EncodeToString(id), Expires: time.Now().Add(o.ttl).UTC().Truncate(time.Second),
		MeshCIDR: mesh.String(), DataPlane: m.dataPlane, Namespace: m.ns, Server: m.rest.Host, CAData: m.rest.CAData,
		Issuer:   tokenPeer{Name: m.name, Address: m.address.String(), CIDR: m.svc.String(), Endpoint: m.endpoint, PublicKey: m.local.Status.PublicKey},
		Member:   tokenPeer{Name: o.name, Address: netip.PrefixFrom(addr, mesh.Bits()).String(), CIDR: cidr.String(), Endpoint: o.endpoint},
		Identity: identity, BridgeName: bridgeName,
	}
	if bridge {
		r, err := authorityServer(ctx, m, o.authorityServer)
		if err != nil {
			return err
		}
		if r.serverNote != "" {
			g.progress("%s", r.serverNote)
		}
		t.AuthorityServer, t.AuthorityCA = r.server, r.caData
	}
	if len(t.CAData) == 0 && m.rest.CAFile != "" {
		if t.CAData, err = os.ReadFile(m.rest.CAFile); err != nil {
			return err
		}
	}
	if err := ensureJoinPolicy(ctx, m); err != nil {
		return err
	}
	if err := collectTokens(ctx, g, m); err != nil {
		return err
	}
	// The issuer's side of the pair: the new member dials in; its key
	// (WireGuard) and endpoint come with the token's use, which they also
	// mark as used.
	ep := v1alpha1.EndpointInbound
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: o.name,
		Labels:      map[string]string{managedByLabel: managedBy},
		Annotations: map[string]string{tokenAnnotation: t.hash()}},
		Spec: v1alpha1.KubeLinkSpec{ClusterAddress: t.Member.Address, CIDR: t.Member.CIDR, Endpoint: ep}}
	if err := m.c.Create(ctx, kl); err != nil {
		return fmt.Errorf("%s: creating KubeLink %s: %w", m, o.name, err)
	}
	if bridge {
		// An earlier token for this name that was never used may read the
		// token Secret of the new registration (its Role names it): it is
		// withdrawn.
		roles, err := m.cs.RbacV1().Roles(m.ns).List(ctx, metav1.ListOptions{LabelSelector: managedByLabel + "=" + managedBy})
		if err != nil {
			_ = m.c.Delete(context.Background(), kl)
			return fmt.Errorf("%s: listing the join tokens' Roles: %w", m, err)
		}
		for _, r := range roles.Items {
			for _, rule := range r.Rules {
				if strings.HasPrefix(r.Name, "kubelink-join-") && slices.Contains(rule.ResourceNames, "member-"+o.name+"-token") {
					if err := m.cs.CoreV1().ServiceAccounts(m.ns).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
						_ = m.c.Delete(context.Background(), kl)
						return fmt.Errorf("%s: withdrawing the earlier token %s for %s: %w", m, strings.TrimPrefix(r.Name, "kubelink-join-"), o.name, err)
					}
					g.progress("%s: withdrew the earlier, unused token %s for %s", m, strings.TrimPrefix(r.Name, "kubelink-join-"), o.name)
				}
			}
		}
		// The new member's account at the authority, for its own identity
		// and name only; join --token reads its token with the credential.
		if _, err := memberAccount(ctx, m, o.name, identity, bridgeName); err != nil {
			undo, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = m.c.Delete(undo, kl)
			unregister(undo, m, o.name)
			return err
		}
		g.progress("%s: %s registered at the mesh authority for identity %s and name %s", m, o.name, identity, bridgeName)
	}
	sa := "kubelink-join-" + t.ID
	labels := map[string]string{managedByLabel: managedBy, "app.kubernetes.io/part-of": "kubelink"}
	meta := metav1.ObjectMeta{Name: sa, Namespace: m.ns, Labels: labels, Annotations: map[string]string{"kubelink.mandelsoft.org/expires": t.Expires.Format(time.RFC3339)}}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: m.ns}}
	// The ServiceAccount owns its Role and RoleBinding (they go with it);
	// the ClusterRole and its binding (KubeLinks are cluster-scoped) are
	// collected by the next token create, or uninstall, once it is gone.
	var owner []metav1.OwnerReference
	steps := []func() error{
		func() error {
			s, err := m.cs.CoreV1().ServiceAccounts(m.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, metav1.CreateOptions{})
			if err == nil {
				owner = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ServiceAccount", Name: sa, UID: s.UID}}
			}
			return err
		},
		func() error { // the one link
			_, err := m.cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa, Labels: labels}, Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"kubelinks"}, ResourceNames: []string{o.name}, Verbs: []string{"get", "update"}},
			}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := m.cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa, Labels: labels},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa}, Subjects: subjects}, metav1.CreateOptions{})
			return err
		},
		func() error { // using it up: deleting its own ServiceAccount; the bridge: the member's token
			om := meta
			om.OwnerReferences = owner
			rules := []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, ResourceNames: []string{sa}, Verbs: []string{"delete"}},
			}
			if bridge {
				rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"member-" + o.name + "-token"}, Verbs: []string{"get"}})
			}
			_, err := m.cs.RbacV1().Roles(m.ns).Create(ctx, &rbacv1.Role{ObjectMeta: om, Rules: rules}, metav1.CreateOptions{})
			return err
		},
		func() error {
			om := meta
			om.OwnerReferences = owner
			_, err := m.cs.RbacV1().RoleBindings(m.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: om,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa}, Subjects: subjects}, metav1.CreateOptions{})
			return err
		},
		func() error {
			tr, err := m.cs.CoreV1().ServiceAccounts(m.ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(o.ttl / time.Second))}}, metav1.CreateOptions{})
			if err == nil {
				t.Credential = tr.Status.Token
			}
			return err
		},
	}
	// Nothing of a token that could not be made stays.
	undoAll := func() {
		undo, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.c.Delete(undo, kl)
		_ = m.cs.RbacV1().ClusterRoleBindings().Delete(undo, sa, metav1.DeleteOptions{})
		_ = m.cs.RbacV1().ClusterRoles().Delete(undo, sa, metav1.DeleteOptions{})
		_ = m.cs.RbacV1().RoleBindings(m.ns).Delete(undo, sa, metav1.DeleteOptions{})
		_ = m.cs.RbacV1().Roles(m.ns).Delete(undo, sa, metav1.DeleteOptions{})
		_ = m.cs.CoreV1().ServiceAccounts(m.ns).Delete(undo, sa, metav1.DeleteOptions{})
		if bridge {
			unregister(undo, m, o.name)
		}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			undoAll()
			return fmt.Errorf("%s: making the token's credential: %w (nothing of the token was kept)", m, err)
		}
	}
	if err := checkJoinPolicy(ctx, t, kl); err != nil {
		undoAll()
		return fmt.Errorf("%w (nothing of the token was kept)", err)
	}
	if bridge {
		g.progress("%s: KubeLink %s made (Inbound; it gets %s's endpoint when the token is used), token %s valid until %s", m, o.name, o.name, t.ID, t.Expires.Format(time.RFC3339))
	} else {
		g.progress("%s: KubeLink %s made (Inbound; it gets %s's key and endpoint when the token is used), token %s valid until %s", m, o.name, o.name, t.ID, t.Expires.Format(time.RFC3339))
	}
	out := t.encode() + "\n"
	if o.file != "" {
		if err := os.WriteFile(o.file, []byte(out), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "token written to %s: give it to the admin of %s, who runs\n  %s join --token %s --context <%s's context>\n", o.file, o.name, commandName(), o.file, o.name)
		return nil
	}
	_, err = fmt.Fprint(g.out, out)
	return err
}

// ensureJoinPolicy installs the admission policy that keeps a join token's
// ServiceAccount to the key and the endpoint of its link.
func ensureJoinPolicy(ctx context.Context, m *member) error {
	labels := map[string]string{managedByLabel: managedBy, "app.kubernetes.io/part-of": "kubelink"}
	same := func(field string) string {
		return fmt.Sprintf("object.spec.?%[1]s == oldObject.spec.?%[1]s", field)
	}
	var keep []string
	for _, f := range []string{"clusterAddress", "cidr", "gatewayLink", "ingress", "egress", "presharedKey", "presharedKeySecret", "apiAccess", "dns"} {
		keep = append(keep, same(f))
	}
	policy := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: joinPolicy, Labels: labels},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{RuleWithOperations: admissionv1.RuleWithOperations{
				Operations: []admissionv1.OperationType{admissionv1.Update},
				Rule:       admissionv1.Rule{APIGroups: []string{v1alpha1.GroupName}, APIVersions: []string{"*"}, Resources: []string{"kubelinks"}}}}}},
			MatchConditions: []admissionv1.MatchCondition{{Name: "join-token",
				Expression: fmt.Sprintf("request.userInfo.username.startsWith('system:serviceaccount:%s:kubelink-join-')", m.ns)}},
			Validations: []admissionv1.Validation{
				{Expression: strings.Join(keep, " && "), Message: "a join token may set only spec.publicKey and spec.endpoint of its link"},
				{Expression: "object.metadata.?labels == oldObject.metadata.?labels && object.metadata.?annotations == oldObject.metadata.?annotations",
					Message: "a join token may not change the link's labels or annotations"},
				// Single use, also while the API server still accepts the
				// credential of a deleted ServiceAccount from its cache.
				{Expression: "oldObject.spec.?publicKey.orValue('') == '' && oldObject.spec.?endpoint.orValue('') == 'Inbound'", Message: "the join token was already used"},
			},
		}}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: joinPolicy, Labels: labels},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: joinPolicy, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}}
	vaps := m.cs.AdmissionregistrationV1()
	if cur, err := vaps.ValidatingAdmissionPolicies().Get(ctx, joinPolicy, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := vaps.ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("%s: the admission policy %s: %w", m, joinPolicy, err)
		}
	} else if err != nil {
		return fmt.Errorf("%s: the admission policy %s: %w", m, joinPolicy, err)
	} else {
		cur.Spec = policy.Spec
		if _, err := vaps.ValidatingAdmissionPolicies().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("%s: the admission policy %s: %w", m, joinPolicy, err)
		}
	}
	if _, err := vaps.ValidatingAdmissionPolicyBindings().Get(ctx, joinPolicy, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := vaps.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("%s: the admission policy binding %s: %w", m, joinPolicy, err)
		}
	} else if err != nil {
		return fmt.Errorf("%s: the admission policy binding %s: %w", m, joinPolicy, err)
	}
	return nil
}

// joinWithToken completes the pair of the token from the new member's
// side: its key and endpoint onto the issuer's link (with the token's
// credential, which it then removes), and its own link to the issuer.
func joinWithToken(ctx context.Context, g *globals, path, contextName string, wait bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--token: %w", err)
	}
	t, err := decodeToken(string(b))
	if err != nil {
		return fmt.Errorf("--token %s: %w", path, err)
	}
	if time.Now().After(t.Expires) {
		return fmt.Errorf("--token %s: the token expired at %s: ask the admin of %s for a new one (kubelinkctl token create)", path, t.Expires.Format(time.RFC3339), t.Issuer.Name)
	}
	m, err := g.loadMember(ctx, contextName, t.MeshCIDR)
	if err != nil {
		return err
	}
	if m.name != t.Member.Name || m.address.String() != t.Member.Address || m.svc.String() != t.Member.CIDR {
		return fmt.Errorf("the token is for member %s (address %s, service CIDR %s), but %s is %s (address %s, service CIDR %s): ask for a token with this cluster's values, or reinstall it with them",
			t.Member.Name, t.Member.Address, t.Member.CIDR, m.context, m.name, m.address, m.svc)
	}
	if errs := memberProblems([]*member{m}); len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	if m.dataPlane != t.DataPlane {
		return fmt.Errorf("%s runs the %s data plane, the mesh of the token %s", m, m.dataPlane, t.DataPlane)
	}
	bridge := t.DataPlane == "bridge"
	if bridge {
		if m.release == nil {
			return fmt.Errorf("%s: kubelink is not installed there with its chart, so join cannot switch it to certificates signed by the authority: install it with `%s install`", m, commandName())
		}
		if ids, name := m.value("bridge.identities"), m.value("bridge.name"); ids != t.Identity || name != t.BridgeName || m.endpoint != t.Member.Endpoint {
			return fmt.Errorf("the token registers %s at %s's authority for identity %s, name %s and endpoint %s, but %s has identity %q, name %q and endpoint %s: ask for a token with --endpoint %s, or reinstall it (`%s install --name %s --mesh <mesh>`)",
				t.Member.Name, t.Issuer.Name, t.Identity, t.BridgeName, t.Member.Endpoint, m, ids, name, m.endpoint, m.endpoint, commandName(), t.Member.Name)
		}
	}
	// The issuer's data, checked before anything changes.
	issuerM := &member{cluster: &cluster{context: t.Issuer.Name}, name: t.Issuer.Name, endpoint: t.Issuer.Endpoint, dataPlane: t.DataPlane}
	issuerM.address, _ = netip.ParsePrefix(t.Issuer.Address)
	issuerM.svc, _ = netip.ParsePrefix(t.Issuer.CIDR)
	issuerM.local.Status.PublicKey = t.Issuer.PublicKey
	if err := checkEndpoint(t.Issuer.Endpoint); err != nil || (!bridge && !isWireGuardKey(t.Issuer.PublicKey)) || !issuerM.address.IsValid() || !issuerM.svc.IsValid() ||
		(bridge && (t.AuthorityServer == "" || len(t.AuthorityCA) == 0)) {
		return fmt.Errorf("the token's issuer data is not usable (endpoint %q, key %q, authority %q): ask for a new token", t.Issuer.Endpoint, t.Issuer.PublicKey, t.AuthorityServer)
	}
	if issuerM.svc.Overlaps(m.svc) {
		return fmt.Errorf("%s's service CIDR %s overlaps %s's %s", t.Issuer.Name, issuerM.svc, m.name, m.svc)
	}
	// The issuer, through the token's credential.
	issuer, rc, err := t.client()
	if err != nil {
		return err
	}
	var kl v1alpha1.KubeLink
	resume := false
	if err := issuer.Get(ctx, client.ObjectKey{Name: t.Member.Name}, &kl); err != nil {
		if !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reaching %s's API server at %s with the token: %w", t.Issuer.Name, t.Server, err)
		}
		// A bridge join from here that used the token up and stopped
		// before its end (the upgrade failed) goes on without it.
		if !bridge || !usedHere(ctx, m, t) || switchedTo(m, t.Namespace) {
			return fmt.Errorf("the token was already used or withdrawn (%s does not accept its credential any more: %v): ask the admin of %s for a new one", t.Issuer.Name, err, t.Issuer.Name)
		}
		resume = true
		g.progress("%s: the token was used from here already (its kubeconfig for the authority %s is in place): completing that join", m, t.Issuer.Name)
	} else if kl.Annotations[tokenAnnotation] != t.hash() {
		return fmt.Errorf("the token was altered: its content does not match what %s issued; ask for a new one", t.Issuer.Name)
	}
	usedUp := fmt.Errorf("the token was already used: ask the admin of %s for a new one", t.Issuer.Name)
	// useUp deletes the credential's ServiceAccount, which ends it.
	useUp := func() error {
		cs, err := kubernetesFor(rc)
		if err != nil {
			return err
		}
		sa := "kubelink-join-" + t.ID
		if err := cs.CoreV1().ServiceAccounts(t.Namespace).Delete(ctx, sa, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("using up the token at %s (deleting its ServiceAccount %s/%s): %w", t.Issuer.Name, t.Namespace, sa, err)
		}
		return nil
	}
	switch {
	case bridge && !resume:
		// The use is marked first, on the link: the new member's endpoint.
		if kl.Spec.Endpoint != v1alpha1.EndpointInbound {
			return fmt.Errorf("the token was already used (by the member at %s): ask the admin of %s for a new one", kl.Spec.Endpoint, t.Issuer.Name)
		}
		if err := updateLink(ctx, issuer, &kl, func(s *v1alpha1.KubeLinkSpec) { s.Endpoint = m.endpoint }); err != nil {
			if strings.Contains(err.Error(), "the join token was already used") {
				return usedUp
			}
			return fmt.Errorf("setting %s's endpoint on %s's KubeLink %s: %w", m.name, t.Issuer.Name, kl.Name, err)
		}
		// The member's registration at the authority: its token there, as
		// its kubeconfig, in its Secret; then the token is used up, before
		// the upgrade, which may take minutes.
		cs, err := kubernetesFor(rc)
		if err != nil {
			return err
		}
		token, err := readMemberToken(ctx, t.Issuer.Name, cs.CoreV1().Secrets(t.Namespace), m.name, true)
		if err != nil {
			return err
		}
		r := &registration{server: t.AuthorityServer, caData: t.AuthorityCA, ns: t.Namespace}
		data, err := r.kubeconfig(m.name, token)
		if err != nil {
			return err
		}
		if _, err := writeAuthorityKubeconfig(ctx, m, data); err != nil {
			return err
		}
		if err := useUp(); err != nil {
			return err
		}
		g.progress("%s: registered at the mesh authority %s (identity %s)", m, t.Issuer.Name, t.Identity)
	case !bridge:
		if err := updateLink(ctx, issuer, &kl, func(s *v1alpha1.KubeLinkSpec) { s.PublicKey, s.Endpoint = m.local.Status.PublicKey, m.endpoint }); err != nil {
			if strings.Contains(err.Error(), "the join token was already used") {
				return usedUp
			}
			return fmt.Errorf("setting %s's key and endpoint on %s's KubeLink %s: %w", m.name, t.Issuer.Name, kl.Name, err)
		}
		g.progress("%s: KubeLink %s now has %s's key and endpoint", t.Issuer.Name, kl.Name, m.name)
		if err := useUp(); err != nil {
			return err
		}
	}
	if bridge {
		if _, err := switchToAuthority(ctx, g, m, t.Namespace, t.Issuer.Name); err != nil {
			return fmt.Errorf("%w (the token is used up; run the same join --token again from %s to finish)", err, m.context)
		}
	}
	// This side of the pair.
	a, err := applyLink(ctx, m, issuerM)
	if err != nil {
		return err
	}
	g.progress("%s: KubeLink %s %s", m, t.Issuer.Name, a.action)
	if wait {
		if err := waitLinksUp(ctx, g, []linkAction{a}, time.Now()); err != nil {
			return err
		}
	}
	rows, err := linkRows(ctx, []*member{m}, func(_ *member, l *v1alpha1.KubeLink) bool { return l.Name == t.Issuer.Name })
	if err != nil {
		return err
	}
	return printObject(g, rows, func() {
		printLinkRows(g.out, rows, false)
		fmt.Fprintf(g.out, "\n%s joined %s's mesh %s with token %s (now used up).\n", m.name, t.Issuer.Name, t.MeshCIDR, t.ID)
	})
}

// updateLink changes kl's spec with set, again on a conflict with the
// broker's status writes (each try from the link as it is now).
func updateLink(ctx context.Context, c client.Client, kl *v1alpha1.KubeLink, set func(*v1alpha1.KubeLinkSpec)) error {
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := c.Get(ctx, client.ObjectKeyFromObject(kl), kl); err != nil {
				return err
			}
		}
		first = false
		set(&kl.Spec)
		return c.Update(ctx, kl)
	})
}

func kubernetesFor(rc *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(rc) }

// collectTokens removes what tokens left at the issuer: the ClusterRole
// and binding of a used token (its ServiceAccount is gone), and everything
// of an expired one that was never used.
func collectTokens(ctx context.Context, g *globals, m *member) error {
	sel := metav1.ListOptions{LabelSelector: managedByLabel + "=" + managedBy}
	sas, err := m.cs.CoreV1().ServiceAccounts(m.ns).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("%s: listing the join tokens: %w", m, err)
	}
	live := map[string]bool{}
	for _, sa := range sas.Items {
		if !strings.HasPrefix(sa.Name, "kubelink-join-") {
			continue
		}
		if exp, err := time.Parse(time.RFC3339, sa.Annotations["kubelink.mandelsoft.org/expires"]); err == nil && time.Now().After(exp) {
			if err := m.cs.CoreV1().ServiceAccounts(m.ns).Delete(ctx, sa.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: removing the expired token %s: %w", m, sa.Name, err)
			}
			g.progress("%s: removed the expired, unused join token %s", m, strings.TrimPrefix(sa.Name, "kubelink-join-"))
			continue
		}
		live[sa.Name] = true
	}
	crs, err := m.cs.RbacV1().ClusterRoles().List(ctx, sel)
	if err != nil {
		return fmt.Errorf("%s: listing the join tokens' ClusterRoles: %w", m, err)
	}
	for _, cr := range crs.Items {
		if !strings.HasPrefix(cr.Name, "kubelink-join-") || live[cr.Name] {
			continue
		}
		for _, del := range []func() error{
			func() error { return m.cs.RbacV1().ClusterRoleBindings().Delete(ctx, cr.Name, metav1.DeleteOptions{}) },
			func() error { return m.cs.RbacV1().ClusterRoles().Delete(ctx, cr.Name, metav1.DeleteOptions{}) },
		} {
			if err := del(); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: removing the RBAC of token %s: %w", m, cr.Name, err)
			}
		}
	}
	return nil
}

// checkJoinPolicy proves, with the token's own credential and a dry run,
// that the admission policy is in force (a new policy takes a moment)
// before the token is handed out.
func checkJoinPolicy(ctx context.Context, t *tokenContent, kl *v1alpha1.KubeLink) error {
	c, _, err := t.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var cur v1alpha1.KubeLink
		err := c.Get(ctx, client.ObjectKey{Name: kl.Name}, &cur)
		if err == nil {
			cur.Spec.CIDR = "0.0.0.0/0"
			err = c.Update(ctx, &cur, client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), "a join token may set only") {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("a dry-run change of the link's CIDR was accepted")
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the admission policy %s does not hold the token's credential to its link (%v): the token is not handed out; is the API server 1.30 or newer?", joinPolicy, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// usedHere reports whether a bridge token was used from m already: m's
// kubeconfig for the authority is the token's authority, for m.
func usedHere(ctx context.Context, m *member, t *tokenContent) bool {
	s, err := m.cs.CoreV1().Secrets(m.ns).Get(ctx, authoritySecret(m), metav1.GetOptions{})
	if err != nil {
		return false
	}
	kc, err := clientcmd.Load(s.Data["kubeconfig"])
	if err != nil {
		return false
	}
	c := kc.Contexts[kc.CurrentContext]
	return c != nil && kc.Clusters[c.Cluster] != nil && kc.Clusters[c.Cluster].Server == t.AuthorityServer &&
		c.AuthInfo == "member-"+m.name && c.Namespace == t.Namespace
}

// switchedTo reports whether m's release has its certificates from the
// authority in namespace authNS already.
func switchedTo(m *member, authNS string) bool {
	return m.value("certificates.mode") == "csr" && m.value("meshMember.enabled") == "true" && m.value("meshMember.authorityNamespace") == authNS
}
