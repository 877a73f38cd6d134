package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// The annotations of a member's ServiceAccount at the mesh authority: what
// the authority's certwatch signs for that member (docs/certwatch.md).
const (
	identitiesAnnotation = "kubelink.mandelsoft.org/identities"
	namesAnnotation      = "kubelink.mandelsoft.org/names"
	managedByLabel       = "app.kubernetes.io/managed-by"
	managedBy            = "kubelinkctl"
)

// checkClaims refuses to register m for identities or a name that are not
// its own: each identity must be kubelink://<mesh>/<m.name>, and neither
// they nor the name may be the authority's or another member's. The
// authority signs what the registration says, so a member asking for
// another cluster's identity would otherwise get it.
func checkClaims(ctx context.Context, a, m *member, ids, name string) error {
	mine := map[string]bool{}
	for _, id := range strings.Split(ids, ",") {
		id = strings.TrimSpace(id)
		u, err := url.Parse(id)
		if err != nil || u.Scheme != "kubelink" || u.Host == "" || strings.Trim(u.Path, "/") != m.name {
			return fmt.Errorf("%s: its bridge.identities %q must each be kubelink://<mesh>/%s (its own name): join registers a member only for itself", m, ids, m.name)
		}
		mine[id] = true
	}
	owners := map[string]string{} // identity or name → who holds it
	for _, id := range strings.Split(a.value("bridge.identities"), ",") {
		owners[strings.TrimSpace(id)] = a.name + " (the authority)"
	}
	owners["name "+a.value("bridge.name")] = a.name + " (the authority)"
	sas, err := a.cs.CoreV1().ServiceAccounts(a.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("%s: listing the registered members: %w", a, err)
	}
	for _, sa := range sas.Items {
		if sa.Name == "member-"+m.name || sa.Annotations[identitiesAnnotation] == "" {
			continue
		}
		for _, id := range strings.Split(sa.Annotations[identitiesAnnotation], ",") {
			owners[strings.TrimSpace(id)] = "ServiceAccount " + sa.Name
		}
		for _, n := range strings.Split(sa.Annotations[namesAnnotation], ",") {
			owners["name "+strings.TrimSpace(n)] = "ServiceAccount " + sa.Name
		}
	}
	for id := range mine {
		if who, ok := owners[id]; ok {
			return fmt.Errorf("%s: its identity %s is already registered at the authority for %s: each cluster needs its own name in the mesh", m, id, who)
		}
	}
	if who, ok := owners["name "+name]; ok {
		return fmt.Errorf("%s: its bridge name %s is already registered at the authority for %s: give it its own address (install --announce)", m, name, who)
	}
	return nil
}

// findAuthority is the one member that holds the mesh CA (bridge).
func findAuthority(ms []*member) (*member, error) {
	var auth []*member
	for _, m := range ms {
		if m.authority() {
			auth = append(auth, m)
		}
	}
	switch len(auth) {
	case 1:
		return auth[0], nil
	case 0:
		return nil, fmt.Errorf("the bridge data plane needs a mesh authority, the one cluster that holds the mesh CA, and none of these clusters is one: "+
			"install one of them with --mesh-authority (`%s install --context %s ... --data-plane bridge --mesh-authority`), then join again; nothing was changed",
			commandName(), ms[0].context)
	}
	return nil, fmt.Errorf("%s and %s are both mesh authorities (each holds its own CA): a mesh has one; reinstall the others without --mesh-authority; nothing was changed", auth[0], auth[1])
}

// registration is what registering a member at the authority needs.
type registration struct {
	auth       *member
	ns         string // kubelink's namespace at the authority
	server     string // the authority's API server, as the members' pods reach it
	caData     []byte // the CA that signs its serving certificate
	serverNote string // why server is not the kubeconfig's, for the progress line
}

// authorityServer finds the address the members' broker pods reach the
// authority's API server at: --authority-server, else the kubeconfig's
// server unless that is a loopback address (a kind or tunnelled
// kubeconfig), else the address the API server advertises (the Endpoints
// of default/kubernetes).
func authorityServer(ctx context.Context, auth *member, given string) (*registration, error) {
	r := &registration{auth: auth, ns: auth.ns}
	// The CA of the kubeconfig, and the cluster's own CA (what signs the
	// API server's certificate for its advertised address), which the
	// controller-manager publishes in every namespace.
	kubeconfigCA := auth.rest.CAData
	if len(kubeconfigCA) == 0 && auth.rest.CAFile != "" {
		var err error
		if kubeconfigCA, err = os.ReadFile(auth.rest.CAFile); err != nil {
			return nil, fmt.Errorf("%s: the kubeconfig's CA file: %w", auth, err)
		}
	}
	clusterCA := kubeconfigCA
	if root, err := auth.cs.CoreV1().ConfigMaps(auth.ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err == nil && root.Data["ca.crt"] != "" {
		clusterCA = []byte(root.Data["ca.crt"])
	}
	if len(clusterCA) == 0 {
		return nil, fmt.Errorf("%s: no CA for its API server: neither the kubeconfig nor the ConfigMap %s/kube-root-ca.crt has one", auth, auth.ns)
	}
	if given != "" {
		u, err := url.Parse(given)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("--authority-server %q: must be an https:// URL", given)
		}
		r.server, r.caData = given, clusterCA
		return r, nil
	}
	u, err := url.Parse(auth.rest.Host)
	if err != nil {
		return nil, fmt.Errorf("%s: the kubeconfig's server %q: %w", auth, auth.rest.Host, err)
	}
	if !isLoopback(u.Hostname()) {
		r.server, r.caData = auth.rest.Host, kubeconfigCA
		if len(r.caData) == 0 {
			r.caData = clusterCA
		}
		return r, nil
	}
	slices, err := auth.cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		return nil, fmt.Errorf("%s: reading the API server's advertised address (EndpointSlices of default/kubernetes): %w", auth, err)
	}
	for _, s := range slices.Items {
		if len(s.Ports) == 0 || s.Ports[0].Port == nil {
			continue
		}
		// The lowest address, so that every run picks the same one.
		var addrs []string
		for _, e := range s.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
		sort.Strings(addrs)
		if len(addrs) > 0 {
			r.server = "https://" + net.JoinHostPort(addrs[0], strconv.Itoa(int(*s.Ports[0].Port)))
			r.caData = clusterCA
			r.serverNote = fmt.Sprintf("the kubeconfig reaches the authority's API server at %s, a loopback address its members' pods cannot reach; they use the address it advertises, %s (--authority-server sets another)",
				auth.rest.Host, r.server)
			return r, nil
		}
	}
	return nil, fmt.Errorf("%s: the kubeconfig's server %s is a loopback address the members cannot reach, and default/kubernetes has no endpoint: give the authority's API server address with --authority-server", auth, auth.rest.Host)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// register makes m a member at the authority: its ServiceAccount there,
// annotated with what the authority may sign for it, bound to the
// kubelink-member roles, and its token as a kubeconfig in m's Secret; then
// m's release is switched to have its certificate signed by the authority.
// It reports whether anything changed. The CA key stays at the authority.
func (r *registration) register(ctx context.Context, g *globals, m *member) (bool, error) {
	a := r.auth
	if m.release == nil {
		return false, fmt.Errorf("%s: kubelink is not installed there with its chart, so join cannot switch it to certificates signed by the authority: register it by hand (docs/certwatch.md, \"Registering a member\")", m)
	}
	ids, name := m.value("bridge.identities"), m.value("bridge.name")
	if ids == "" || name == "" {
		return false, fmt.Errorf("%s: its release has no bridge.identities or bridge.name: run `%s install --context %s` again", m, commandName(), m.context)
	}
	if err := checkClaims(ctx, a, m, ids, name); err != nil {
		return false, err
	}
	changed, err := memberAccount(ctx, a, m.name, ids, name)
	if err != nil {
		return false, err
	}
	token, err := memberToken(ctx, a, m.name)
	if err != nil {
		return false, err
	}
	data, err := r.kubeconfig(m.name, token)
	if err != nil {
		return false, err
	}
	switched, err := becomeMember(ctx, g, m, a.ns, a.String(), data)
	return changed || switched, err
}

// memberAccount makes name a member at the authority a: its
// ServiceAccount member-<name>, annotated with the identities and names
// the authority may sign for it, bound to the kubelink-member roles, and a
// Secret for its token. It reports whether anything changed.
func memberAccount(ctx context.Context, a *member, name, ids, names string) (bool, error) {
	if _, err := a.cs.RbacV1().ClusterRoles().Get(ctx, "kubelink-member", metav1.GetOptions{}); err != nil {
		return false, fmt.Errorf("%s: no ClusterRole kubelink-member (%v): is it installed with --mesh-authority?", a, err)
	}
	changed := false
	sa := "member-" + name
	labels := map[string]string{managedByLabel: managedBy}

	// The ServiceAccount and what it may do.
	cur, err := a.cs.CoreV1().ServiceAccounts(a.ns).Get(ctx, sa, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = a.cs.CoreV1().ServiceAccounts(a.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: a.ns, Labels: labels,
			Annotations: map[string]string{identitiesAnnotation: ids, namesAnnotation: names}}}, metav1.CreateOptions{})
		changed = true
	case err == nil && (cur.Annotations[identitiesAnnotation] != ids || cur.Annotations[namesAnnotation] != names):
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[identitiesAnnotation], cur.Annotations[namesAnnotation] = ids, names
		_, err = a.cs.CoreV1().ServiceAccounts(a.ns).Update(ctx, cur, metav1.UpdateOptions{})
		changed = true
	}
	if err != nil {
		return false, fmt.Errorf("%s: ServiceAccount %s/%s: %w", a, a.ns, sa, err)
	}
	getErr := func(what string, err error) error {
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: %s: %w", a, what, err)
		}
		return nil
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: a.ns}}
	binding := "kubelink-member-" + name
	_, err = a.cs.RbacV1().ClusterRoleBindings().Get(ctx, binding, metav1.GetOptions{})
	if err := getErr("ClusterRoleBinding "+binding, err); err != nil {
		return false, err
	}
	if apierrors.IsNotFound(err) {
		_, err = a.cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: binding, Labels: labels},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kubelink-member"}, Subjects: subjects}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("%s: ClusterRoleBinding %s: %w", a, binding, err)
		}
		changed = true
	}
	_, err = a.cs.RbacV1().RoleBindings(a.ns).Get(ctx, binding, metav1.GetOptions{})
	if err := getErr("RoleBinding "+binding, err); err != nil {
		return false, err
	}
	if apierrors.IsNotFound(err) {
		_, err = a.cs.RbacV1().RoleBindings(a.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: binding, Namespace: a.ns, Labels: labels},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "kubelink-member"}, Subjects: subjects}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("%s: RoleBinding %s/%s: %w", a, a.ns, binding, err)
		}
		changed = true
	}
	// Its token: a Secret the token controller fills.
	tokenSecret := sa + "-token"
	_, err = a.cs.CoreV1().Secrets(a.ns).Get(ctx, tokenSecret, metav1.GetOptions{})
	if err := getErr("Secret "+tokenSecret, err); err != nil {
		return false, err
	}
	if apierrors.IsNotFound(err) {
		_, err = a.cs.CoreV1().Secrets(a.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tokenSecret, Namespace: a.ns, Labels: labels,
			Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}}, Type: corev1.SecretTypeServiceAccountToken}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("%s: Secret %s/%s: %w", a, a.ns, tokenSecret, err)
		}
		changed = true
	}
	return changed, nil
}

// unregister removes what memberAccount made for name at the authority a
// (what is gone already is fine); for the clean-up of a token that could
// not be made.
func unregister(ctx context.Context, a *member, name string) {
	sa, binding := "member-"+name, "kubelink-member-"+name
	_ = a.cs.RbacV1().ClusterRoleBindings().Delete(ctx, binding, metav1.DeleteOptions{})
	_ = a.cs.RbacV1().RoleBindings(a.ns).Delete(ctx, binding, metav1.DeleteOptions{})
	_ = a.cs.CoreV1().Secrets(a.ns).Delete(ctx, sa+"-token", metav1.DeleteOptions{})
	_ = a.cs.CoreV1().ServiceAccounts(a.ns).Delete(ctx, sa, metav1.DeleteOptions{})
}

// memberToken waits until the token controller filled the Secret of
// member name's token at the authority, and returns the token.
func memberToken(ctx context.Context, a *member, name string) ([]byte, error) {
	return readMemberToken(ctx, a.String(), a.cs.CoreV1().Secrets(a.ns), name, false)
}

// readMemberToken is memberToken through any client of the authority's
// Secrets. join --token reads it with the token's credential (viaToken):
// a Secret that is gone, or a credential refused, means the token was
// withdrawn or used.
func readMemberToken(ctx context.Context, authority string, secrets corev1client.SecretInterface, name string, viaToken bool) ([]byte, error) {
	tokenSecret := "member-" + name + "-token"
	var token []byte
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, tokenWait, true, func(ctx context.Context) (bool, error) {
		s, err := secrets.Get(ctx, tokenSecret, metav1.GetOptions{})
		if viaToken && (apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err)) {
			return false, fmt.Errorf("the token was already used or withdrawn (%s: %v): ask the admin of %s for a new one", authority, err, authority)
		}
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("%s: Secret %s: %w", authority, tokenSecret, err)
		}
		token = s.Data[corev1.ServiceAccountTokenKey]
		return len(token) > 0, nil
	})
	if err != nil {
		if !wait.Interrupted(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: the token controller did not fill Secret %s within %s: is kube-controller-manager running there?", authority, tokenSecret, tokenWait)
	}
	return token, nil
}

// kubeconfig is member name's kubeconfig for the authority: its advertised
// address, its CA, and the member's token.
func (r *registration) kubeconfig(name string, token []byte) ([]byte, error) {
	sa := "member-" + name
	kc := clientcmdapi.NewConfig()
	kc.Clusters["authority"] = &clientcmdapi.Cluster{Server: r.server, CertificateAuthorityData: r.caData}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: string(token)}
	kc.Contexts["authority"] = &clientcmdapi.Context{Cluster: "authority", AuthInfo: sa, Namespace: r.ns}
	kc.CurrentContext = "authority"
	return clientcmd.Write(*kc)
}

// becomeMember writes m's kubeconfig for the authority (in namespace
// authNS there) into m's Secret, and switches m's release to have its
// certificate signed by the authority; then m's own CA goes. It reports
// whether anything changed.
func becomeMember(ctx context.Context, g *globals, m *member, authNS, authority string, kubeconfig []byte) (bool, error) {
	wrote, err := writeAuthorityKubeconfig(ctx, m, kubeconfig)
	if err != nil {
		return false, err
	}
	switched, err := switchToAuthority(ctx, g, m, authNS, authority)
	return wrote || switched, err
}

// authoritySecret is the name of m's Secret with its kubeconfig for the
// authority.
func authoritySecret(m *member) string {
	if s := m.value("meshMember.authoritySecret"); s != "" {
		return s
	}
	return "kubelink-authority"
}

// writeAuthorityKubeconfig writes m's kubeconfig for the authority into
// its Secret; it reports whether that changed anything.
func writeAuthorityKubeconfig(ctx context.Context, m *member, kubeconfig []byte) (bool, error) {
	changed := false
	labels := map[string]string{managedByLabel: managedBy}
	secret := authoritySecret(m)
	s, err := m.cs.CoreV1().Secrets(m.ns).Get(ctx, secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = m.cs.CoreV1().Secrets(m.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: m.ns, Labels: labels},
			Data: map[string][]byte{"kubeconfig": kubeconfig}}, metav1.CreateOptions{})
		changed = true
	case err == nil && !bytes.Equal(s.Data["kubeconfig"], kubeconfig):
		s.Data = map[string][]byte{"kubeconfig": kubeconfig}
		_, err = m.cs.CoreV1().Secrets(m.ns).Update(ctx, s, metav1.UpdateOptions{})
		changed = true
	}
	if err != nil {
		return false, fmt.Errorf("%s: Secret %s/%s: %w", m, m.ns, secret, err)
	}
	return changed, nil
}

// switchToAuthority switches m's release to have its certificate signed by
// the authority (in namespace authNS there); then m's own CA goes. It
// reports whether anything changed.
func switchToAuthority(ctx context.Context, g *globals, m *member, authNS, authority string) (bool, error) {
	// The member's certificate from now on comes from the authority: its
	// own CA (certificates.mode=self, as installed) goes.
	if switchedTo(m, authNS) {
		return false, nil
	}
	values := deepCopyValues(m.release.Config)
	mergeValues(values, map[string]any{
		"certificates":  map[string]any{"mode": "csr"},
		"meshMember":    map[string]any{"enabled": true, "authorityNamespace": authNS},
		"meshAuthority": map[string]any{"enabled": false},
	})
	cfg := action.NewConfiguration()
	if err := cfg.Init(m.flags, m.ns, "secret"); err != nil {
		return false, fmt.Errorf("helm: %w", err)
	}
	g.progress("%s: upgrading release %s to a member of the authority %s (certificates.mode=csr, meshMember.enabled=true)", m, releaseName, authority)
	if err := upgrade(ctx, g, cfg, m.release.Chart, m.ns, values); err != nil {
		return false, fmt.Errorf("%s: %w", m, err)
	}
	// After the upgrade (a failed one leaves the member as it was), and
	// only once no broker pod of the old release runs: its certwatch, in
	// self mode, would make a new CA of its own at once.
	if err := waitRolledOut(ctx, g, m, "kubelink-broker"); err != nil {
		return false, err
	}
	if tls, err := m.cs.CoreV1().Secrets(m.ns).Get(ctx, "kubelink-tls", metav1.GetOptions{}); err == nil && len(tls.Data["ca.key"]) > 0 {
		g.progress("%s: removing its own CA (Secret %s/kubelink-tls): the authority %s signs its certificate from now on", m, m.ns, authority)
		if err := m.cs.CoreV1().Secrets(m.ns).Delete(ctx, "kubelink-tls", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: ptr.To(tls.UID)}}); err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("%s: deleting its own CA (Secret %s/kubelink-tls): %w", m, m.ns, err)
		}
	}
	return true, nil
}

// waitRolledOut waits until the Deployment runs only pods of its current
// template (the old ones are gone).
func waitRolledOut(ctx context.Context, g *globals, m *member, name string) error {
	err := waitFor(ctx, g, m.cluster, "the broker to roll out", func() (bool, string) {
		d, err := m.cs.AppsV1().Deployments(m.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		want, st := ptrInt(d.Spec.Replicas), d.Status
		return st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.Replicas == want,
			fmt.Sprintf("%d of %d pods of the new template, %d in all", st.UpdatedReplicas, want, st.Replicas)
	})
	if err != nil {
		return fmt.Errorf("%s: %w: `kubectl --context %s -n %s get pods`", m, err, m.context, m.ns)
	}
	return nil
}
