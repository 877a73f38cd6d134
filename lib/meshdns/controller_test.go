package meshdns

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func dnsConfig() Config {
	cfg := Defaults()
	cfg.Mode = ModeDNS
	cfg.ServiceCIDR = netip.MustParsePrefix("100.64.0.0/20")
	cfg.Resync = time.Second
	return cfg
}

// The Secret gets the golden Corefile; a link going Down removes its block
// within 5 s and restarts CoreDNS; events that change nothing restart
// nothing; without --coredns-configure the cluster DNS is not touched.
func TestControllerWritesCorefileAndRestartsOnlyOnChange(t *testing.T) {
	e := startEnv(t)
	for _, kl := range []v1alpha1.KubeLink{localA(nil), peerB("Up"), peerC("Up", false), peerD("Down")} {
		e.createLink(kl)
	}
	c := e.run(dnsConfig())

	eventually(t, 10*time.Second, "Secret kubelink/kubelink-coredns written", func() (bool, string) {
		s, err := e.secret()
		return err == nil && strings.Contains(string(s.Data[SecretKeyCorefile]), "c.kubelink:8053"), ""
	})
	s, _ := e.secret()
	golden(t, "controller-dns-secret", "### Corefile\n"+string(s.Data[SecretKeyCorefile])+"### kubeconfig\n"+string(s.Data[SecretKeyKubeconfig]))
	var first string
	eventually(t, 5*time.Second, "kubelink CoreDNS restarted", func() (bool, string) {
		first = e.restartedAt("kubelink", "kubelink-coredns")
		return first != "", "no restart annotation"
	})

	e.touch("b")
	e.waitSynced(c)
	if got := e.restartedAt("kubelink", "kubelink-coredns"); got != first {
		t.Errorf("restarted again without a content change: %s -> %s", first, got)
	}
	if s2, _ := e.secret(); s2.ResourceVersion != s.ResourceVersion {
		t.Errorf("Secret rewritten without a content change")
	}

	e.setState("c", v1alpha1.StateDown)
	took := eventually(t, 5*time.Second, "block of c removed after link Down", func() (bool, string) {
		s, err := e.secret()
		return err == nil && !strings.Contains(string(s.Data[SecretKeyCorefile]), "c.kubelink"), "c.kubelink still in the Corefile"
	})
	t.Logf("block removed %s after the link went Down", took.Round(time.Millisecond))
	eventually(t, 5*time.Second, "restart after the change", func() (bool, string) {
		return e.restartedAt("kubelink", "kubelink-coredns") != first, "annotation unchanged"
	})

	e.setState("d", v1alpha1.StateUp)
	eventually(t, 5*time.Second, "block of d added after link Up", func() (bool, string) {
		s, err := e.secret()
		return err == nil && strings.Contains(string(s.Data[SecretKeyCorefile]), "d.kubelink:8053"), ""
	})

	if _, err := e.hook(); !notFound(err) {
		t.Errorf("coredns-custom touched without --coredns-configure (err %v)", err)
	}
	if got := e.restartedAt(HookNamespace, ClusterDNSDeployment); got != "" {
		t.Errorf("cluster DNS restarted without --coredns-configure: %s", got)
	}
}

// With --coredns-configure the hook key is written next to other keys, and
// the cluster DNS restarts when (and only when) it changed.
func TestControllerConfiguresClusterDNSHook(t *testing.T) {
	e := startEnv(t)
	e.create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: HookNamespace, Name: HookConfigMap},
		Data: map[string]string{"other.server": "example.org:53 {\n    whoami\n}\n"}})
	e.createLink(localA(nil))
	e.createLink(peerB("Up"))
	cfg := dnsConfig()
	cfg.Configure = true
	c := e.run(cfg)

	want := "kubelink:53 {\n    errors\n    cache 5 {\n        success 10000 5 0\n        denial 10000 5 0\n        servfail 0\n    }\n    forward . 100.64.0.11\n}\n"
	eventually(t, 10*time.Second, "hook written", func() (bool, string) {
		cm, err := e.hook()
		return err == nil && strings.HasSuffix(cm.Data[HookKey], want), cm.Data[HookKey]
	})
	cm, _ := e.hook()
	if cm.Data["other.server"] == "" {
		t.Errorf("other keys of coredns-custom lost: %v", cm.Data)
	}
	var first string
	eventually(t, 5*time.Second, "cluster DNS restarted", func() (bool, string) {
		first = e.restartedAt(HookNamespace, ClusterDNSDeployment)
		return first != "", ""
	})

	e.touch("b")
	e.setState("b", v1alpha1.StateDown) // changes the Corefile, not the hook
	e.waitSynced(c)
	if got := e.restartedAt(HookNamespace, ClusterDNSDeployment); got != first {
		t.Errorf("cluster DNS restarted although the hook did not change: %s -> %s", first, got)
	}

	// A mesh-global DNS adds a zone to the hook.
	var local v1alpha1.KubeLink
	if err := e.kube.Get(e.ctx, clientKey("a"), &local); err != nil {
		t.Fatal(err)
	}
	local.Spec.DNS = &v1alpha1.KubeLinkDNS{DNSIP: "100.64.0.12"}
	if err := e.kube.Update(e.ctx, &local); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "global zone in the hook", func() (bool, string) {
		cm, err := e.hook()
		return err == nil && strings.Contains(cm.Data[HookKey], "svc.global.kubelink:53 {"), cm.Data[HookKey]
	})
	eventually(t, 5*time.Second, "cluster DNS restarted after the hook changed", func() (bool, string) {
		return e.restartedAt(HookNamespace, ClusterDNSDeployment) != first, ""
	})
}

// --dns-propagation=none writes nothing, even with --coredns-configure.
func TestControllerModeNoneWritesNothing(t *testing.T) {
	e := startEnv(t)
	e.createLink(localA(nil))
	e.createLink(peerB("Up"))
	cfg := dnsConfig()
	cfg.Mode, cfg.Configure = ModeNone, true
	c := e.run(cfg)
	eventually(t, 5*time.Second, "controller running", func() (bool, string) { return c.syncs.Load() > 0, "" })
	// A writing controller writes in its first sync, well within this.
	time.Sleep(2 * time.Second)
	if _, err := e.secret(); !notFound(err) {
		t.Errorf("Secret written with --dns-propagation=none (err %v)", err)
	}
	if _, err := e.hook(); !notFound(err) {
		t.Errorf("coredns-custom written with --dns-propagation=none (err %v)", err)
	}
	for _, d := range [][2]string{{"kubelink", "kubelink-coredns"}, {HookNamespace, ClusterDNSDeployment}} {
		if got := e.restartedAt(d[0], d[1]); got != "" {
			t.Errorf("%s/%s restarted with --dns-propagation=none", d[0], d[1])
		}
	}
}

// Kubernetes mode: the kubeconfig carries the apiAccess token, and a rotated
// token is picked up by the poll of apiAccess Secrets (the resync is too
// slow to pass this test). meshdns runs as kubelink-meshdns with the RBAC of
// the chart plus get on the one apiAccess Secret, as docs/dns.md says.
func TestControllerKubernetesModeFollowsAPIAccessSecret(t *testing.T) {
	e := startEnv(t)
	access := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: "b-access"},
		Data: map[string][]byte{v1alpha1.SecretKeyToken: []byte("token-one"), v1alpha1.SecretKeyCAData: []byte(testCA)}}
	e.create(access)
	e.create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: "kubelink-meshdns-api-access"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"b-access"}, Verbs: []string{"get"}}}})
	e.create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: "kubelink-meshdns-api-access"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "kubelink-meshdns-api-access"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kubelink-meshdns", Namespace: "kubelink"}}})
	e.createLink(localA(nil))
	e.createLink(peerB("Up"))
	cfg := dnsConfig()
	cfg.Mode, cfg.Resync = ModeKubernetes, time.Hour
	e.runAsMeshDNS(cfg)

	hasToken := func(tok string) func() (bool, string) {
		return func() (bool, string) {
			s, err := e.secret()
			if err != nil {
				return false, err.Error()
			}
			kc := string(s.Data[SecretKeyKubeconfig])
			return strings.Contains(kc, "token: "+tok) && strings.Contains(string(s.Data[SecretKeyCorefile]), "kubeconfig /etc/coredns/kubeconfig b"), kc
		}
	}
	eventually(t, 10*time.Second, "kubeconfig with the first token", hasToken("token-one"))
	var first string
	eventually(t, 5*time.Second, "kubelink CoreDNS restarted", func() (bool, string) {
		first = e.restartedAt("kubelink", "kubelink-coredns")
		return first != "", ""
	})
	access.Data[v1alpha1.SecretKeyToken] = []byte("token-two")
	if err := e.kube.Update(e.ctx, access); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "kubeconfig with the rotated token", hasToken("token-two"))
	eventually(t, 5*time.Second, "restart after the rotation", func() (bool, string) {
		return e.restartedAt("kubelink", "kubelink-coredns") != first, ""
	})
}
