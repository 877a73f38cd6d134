package chart

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kubelink/kubelink/lib/testenv"
)

// What each ServiceAccount may do, as the manifests before the chart
// granted it (deploy/base/rbac.yaml and deploy/optional/*/rbac.yaml). A rule
// is "<scope>: <apiGroups> <resources>[<resourceNames>] <verbs>" with the
// core group written as "core" and each list sorted; scope is "cluster"
// (ClusterRoleBinding) or the namespace of a RoleBinding. This table is the
// guard: a chart change that widens a permission fails TestLeastPrivilege
// until the table says so too.
var (
	baseRBAC = map[string][]string{
		"kubelink-broker": {
			"cluster: kubelink.mandelsoft.org kubelinks,meshservices get,list,watch",
			"cluster: kubelink.mandelsoft.org kubelinks/status,meshservices/status get,patch,update",
			"cluster: core services get,list,watch",
			"cluster: core events create,patch",
			"kubelink: coordination.k8s.io leases[kubelink-broker] get,update",
			"kubelink: coordination.k8s.io leases create", // only that Lease, through the admission policy
			"kubelink: core secrets[wireguard] get,list,watch",
			"kubelink: discovery.k8s.io endpointslices[kubelink-broker-active] delete,get,update",
			"kubelink: discovery.k8s.io endpointslices create", // only that slice, through the admission policy
		},
		"kubelink-certwatch": {
			"kubelink: core secrets[kubelink-tls,wireguard] get,list,update,watch",
			"kubelink: core secrets create", // by name only through the admission policy
		},
		"kubelink-router": {
			"cluster: kubelink.mandelsoft.org kubelinks get,list,watch",
		},
		"kubelink-meshdns": {
			"cluster: kubelink.mandelsoft.org kubelinks get,list,watch",
			"kubelink: core secrets[kubelink-coredns] get,list,update,watch",
			"kubelink: core secrets create", // by name only through the admission policy
			"kubelink: apps deployments[kubelink-coredns] get,patch,update",
		},
		"kubelink-coredns": {
			"cluster: kubelink.mandelsoft.org kubelinks get,list,watch",
		},
	}
	// meshAuthority.enabled: certwatch answers the members' requests.
	authorityRBAC = map[string][]string{
		"kubelink-certwatch": {
			"cluster: certificates.k8s.io certificatesigningrequests get,list,watch",
			"cluster: certificates.k8s.io certificatesigningrequests/approval,certificatesigningrequests/status update",
			"cluster: certificates.k8s.io signers[kubelink.mandelsoft.org/member] approve,sign",
			"kubelink: core serviceaccounts get,list,watch",
			"kubelink: core configmaps create",
			"kubelink: core configmaps[kubelink-mesh-ca] get,update",
		},
	}
	// meshAuthority.enabled: roles for the members' accounts, bound when a
	// member is registered, never by the chart.
	authorityUnbound = map[string][]string{
		"ClusterRole kubelink-member":   {"cluster: certificates.k8s.io certificatesigningrequests create,get"},
		"Role kubelink/kubelink-member": {"kubelink: core configmaps[kubelink-mesh-ca] get"},
	}
	// mcs.enabled (the default): the ServiceExports' conditions and the
	// export record.
	mcsRBAC = map[string][]string{
		"kubelink-mcs": {
			"cluster: multicluster.x-k8s.io serviceexports get,list,watch",
			"cluster: multicluster.x-k8s.io serviceexports/status,serviceimports/status update",
			// its own only: the admission policy kubelink-mcs-writes
			"cluster: multicluster.x-k8s.io serviceimports create,delete,get,list,update,watch",
			"cluster: core services create,delete,get,list,update,watch",
			"cluster: discovery.k8s.io endpointslices create,delete,get,list,update,watch",
			"cluster: core events create,patch", // Conflict on a ServiceExport
			"kubelink: core configmaps[kubelink-mcs-exports] get,update",
			"kubelink: core configmaps[kubelink-mcs-imports] get,list,watch",
		},
		// clusterset.local: the kubernetes plugin's multicluster option
		// (kubelink-meshdns --clusterset-zone)
		"kubelink-coredns": {
			"cluster: multicluster.x-k8s.io serviceimports list,watch",
			"cluster: core namespaces,services list,watch",
			"cluster: discovery.k8s.io endpointslices list,watch",
		},
		// the exchange: the record served, the imports written
		"kubelink-broker": {
			"kubelink: core configmaps[kubelink-mcs-exports] get",
			"kubelink: core configmaps[kubelink-mcs-imports] get,update",
		},
	}
	// meshMember.enabled: certwatch reads the authority's kubeconfig with
	// this member's token (kubelinkctl join writes it).
	memberRBAC = map[string][]string{
		"kubelink-certwatch": {"kubelink: core secrets[kubelink-authority] get,list,watch"},
	}
	// autoConnect.enabled: the broker may propose KubeLinks.
	autoConnectRBAC = map[string][]string{
		"kubelink-broker": {"cluster: kubelink.mandelsoft.org kubelinks create"},
	}
)

func TestLeastPrivilege(t *testing.T) {
	member := map[string]string{"meshMember.enabled": "true", "certificates.mode": "csr", "bridge.identities": "kubelink://default/b"}
	cases := []struct {
		name    string
		set     map[string]string
		grants  []map[string][]string
		unbound map[string][]string
	}{
		{"default", nil, []map[string][]string{baseRBAC, mcsRBAC}, nil},
		{"lab values", nil, []map[string][]string{baseRBAC, mcsRBAC}, nil}, // set below from lab a
		{"mcs off", map[string]string{"mcs.enabled": "false"}, []map[string][]string{baseRBAC}, nil},
		{"meshMember", member, []map[string][]string{baseRBAC, mcsRBAC, memberRBAC}, nil},
		{"meshAuthority", map[string]string{"meshAuthority.enabled": "true"}, []map[string][]string{baseRBAC, mcsRBAC, authorityRBAC}, authorityUnbound},
		{"autoConnect", map[string]string{"dataPlane": "bridge", "autoConnect.enabled": "true"}, []map[string][]string{baseRBAC, mcsRBAC, autoConnectRBAC}, nil},
		{"everything on", map[string]string{"dataPlane": "bridge", "autoConnect.enabled": "true", "meshAuthority.enabled": "true",
			"metrics.serviceMonitor.enabled": "true", "ipForwarding": "sysctl"},
			[]map[string][]string{baseRBAC, mcsRBAC, authorityRBAC, autoConnectRBAC}, authorityUnbound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var extra []string
			if c.name == "lab values" {
				// The authority a: its RBAC is the authority's.
				extra = append([]string{"-f", labValues(t, "a"), "--set-string", labRunTime("wireguard")}, labRoles["a"]...)
				c.grants = append(c.grants, authorityRBAC)
				c.unbound = authorityUnbound
			}
			objs := testenv.RenderChart(t, c.set, extra...)
			grants, unbound := renderedRBAC(t, objs)
			want := map[string][]string{}
			for _, g := range c.grants {
				for sa, rules := range g {
					want[sa] = append(want[sa], rules...)
				}
			}
			compareRules(t, "ServiceAccount", grants, want)
			if c.unbound == nil {
				c.unbound = map[string][]string{}
			}
			compareRules(t, "unbound", unbound, c.unbound)

			var accounts []string
			for _, sa := range testenv.ChartObjects(objs, "ServiceAccount") {
				accounts = append(accounts, sa.GetName())
			}
			sort.Strings(accounts)
			if want := slices.Sorted(maps.Keys(want)); !reflect.DeepEqual(accounts, want) {
				t.Errorf("ServiceAccounts %v, want %v", accounts, want)
			}
			checkSecretPolicy(t, objs)
		})
	}
}

func compareRules(t *testing.T, what string, got, want map[string][]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(merge(got, want))) {
		g, w := slices.Sorted(slices.Values(got[k])), slices.Sorted(slices.Values(want[k]))
		for _, r := range g {
			if !slices.Contains(w, r) {
				t.Errorf("%s %s: rendered rule not in the table: %s", what, k, r)
			}
		}
		for _, r := range w {
			if !slices.Contains(g, r) {
				t.Errorf("%s %s: rule of the table not rendered: %s", what, k, r)
			}
		}
	}
}

func merge(a, b map[string][]string) map[string][]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

// renderedRBAC returns what each ServiceAccount is granted (through every
// binding of the chart) and the roles no binding refers to, keyed
// "<Kind> <[namespace/]name>". A binding to anything but a ServiceAccount
// of the release, or to a role the chart does not render, fails the test.
func renderedRBAC(t *testing.T, objs objects) (grants, unbound map[string][]string) {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{}
	for _, u := range testenv.ChartObjects(objs, "ClusterRole") {
		var r rbacv1.ClusterRole
		convert(t, u, &r)
		if r.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles", r.Name)
		}
		roles["ClusterRole "+r.Name] = r.Rules
	}
	for _, u := range testenv.ChartObjects(objs, "Role") {
		var r rbacv1.Role
		convert(t, u, &r)
		roles["Role "+r.Namespace+"/"+r.Name] = r.Rules
	}
	used := map[string]bool{}
	grants = map[string][]string{}
	bind := func(binding, scope string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) {
		key := ref.Kind + " " + ref.Name
		if ref.Kind == "Role" {
			key = "Role " + scope + "/" + ref.Name
		}
		rules, ok := roles[key]
		if !ok {
			t.Errorf("%s refers to %s, which the chart does not render", binding, key)
			return
		}
		used[key] = true
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind || s.Namespace != testenv.ChartNamespace {
				t.Errorf("%s binds %s %s/%s: only ServiceAccounts of the release namespace may be bound", binding, s.Kind, s.Namespace, s.Name)
				continue
			}
			for _, r := range rules {
				grants[s.Name] = append(grants[s.Name], ruleString(scope, r))
			}
		}
	}
	for _, u := range testenv.ChartObjects(objs, "ClusterRoleBinding") {
		var b rbacv1.ClusterRoleBinding
		convert(t, u, &b)
		bind("ClusterRoleBinding "+b.Name, "cluster", b.RoleRef, b.Subjects)
	}
	for _, u := range testenv.ChartObjects(objs, "RoleBinding") {
		var b rbacv1.RoleBinding
		convert(t, u, &b)
		bind("RoleBinding "+b.Namespace+"/"+b.Name, b.Namespace, b.RoleRef, b.Subjects)
	}
	unbound = map[string][]string{}
	for key, rules := range roles {
		if used[key] {
			continue
		}
		scope := "cluster"
		if ns, _, ok := strings.Cut(strings.TrimPrefix(key, "Role "), "/"); ok && strings.HasPrefix(key, "Role ") {
			scope = ns
		}
		for _, r := range rules {
			unbound[key] = append(unbound[key], ruleString(scope, r))
		}
	}
	return grants, unbound
}

func ruleString(scope string, r rbacv1.PolicyRule) string {
	list := func(s []string) string {
		s = slices.Clone(s)
		for i, v := range s {
			if v == "" {
				s[i] = "core"
			}
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	}
	res := list(r.Resources)
	if len(r.ResourceNames) > 0 {
		res += "[" + list(r.ResourceNames) + "]"
	}
	if len(r.NonResourceURLs) > 0 {
		return fmt.Sprintf("%s: nonResourceURLs %s %s", scope, list(r.NonResourceURLs), list(r.Verbs))
	}
	return fmt.Sprintf("%s: %s %s %s", scope, list(r.APIGroups), res, list(r.Verbs))
}

// checkSecretPolicy compares the admission policy that limits the Secrets
// certwatch and meshdns may create (RBAC cannot limit create by name) with
// what deploy/base/secret-policy.yaml had.
func checkSecretPolicy(t *testing.T, objs objects) {
	t.Helper()
	const (
		certwatch = "system:serviceaccount:kubelink:kubelink-certwatch"
		meshdns   = "system:serviceaccount:kubelink:kubelink-meshdns"
	)
	vap := get[admissionregistrationv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy", "kubelink-secrets")
	s := vap.Spec
	oneLine := func(e string) string { return strings.Join(strings.Fields(e), " ") }
	type expr struct{ name, expression string }
	var got []expr
	for _, m := range s.MatchConditions {
		got = append(got, expr{"match " + m.Name, oneLine(m.Expression)})
	}
	for _, v := range s.Variables {
		got = append(got, expr{"variable " + v.Name, oneLine(v.Expression)})
	}
	for i, v := range s.Validations {
		got = append(got, expr{fmt.Sprintf("validation %d", i), oneLine(v.Expression)})
	}
	want := []expr{
		{"match kubelink-component", "request.userInfo.username in ['" + certwatch + "', '" + meshdns + "']"},
		{"variable allowed", "request.userInfo.username == '" + certwatch + "' ? ['kubelink-tls', 'wireguard'] : ['kubelink-coredns']"},
		{"validation 0", "object.type in ['Opaque', 'kubernetes.io/tls']"},
		{"validation 1", "object.metadata.name in variables.allowed"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("admission policy kubelink-secrets:\n got %q\nwant %q", got, want)
	}
	rules := s.MatchConstraints.ResourceRules
	if s.FailurePolicy == nil || *s.FailurePolicy != admissionregistrationv1.Fail || len(rules) != 1 ||
		!reflect.DeepEqual(rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!reflect.DeepEqual(rules[0].Resources, []string{"secrets"}) || !reflect.DeepEqual(rules[0].APIGroups, []string{""}) {
		t.Errorf("admission policy kubelink-secrets: failurePolicy %v, rules %+v; want Fail on CREATE of core secrets", s.FailurePolicy, rules)
	}
	b := get[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, objs, "ValidatingAdmissionPolicyBinding", "kubelink-secrets")
	if b.Spec.PolicyName != "kubelink-secrets" || !reflect.DeepEqual(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) ||
		b.Spec.MatchResources != nil || b.Spec.ParamRef != nil {
		t.Errorf("ValidatingAdmissionPolicyBinding kubelink-secrets: %+v, want the policy with Deny everywhere", b.Spec)
	}
}
