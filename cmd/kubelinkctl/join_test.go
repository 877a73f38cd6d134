package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// testMember is one cluster of a join test: a real API server.
type testMember struct {
	name       string
	kubeconfig string
	cs         kubernetes.Interface
	c          client.Client
}

// twoClusters starts the clusters eu and us and sets KUBECONFIG to both.
func twoClusters(t *testing.T) (eu, us *testMember) {
	t.Helper()
	eu, us = &testMember{name: "eu"}, &testMember{name: "us"}
	var wg sync.WaitGroup
	for _, m := range []struct {
		tm           *testMember
		svc, pod, nd string
	}{{eu, "100.64.32.0/20", "10.130", "172.18.0"}, {us, "100.64.48.0/20", "10.140", "172.19.0"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.tm.kubeconfig, m.tm.cs, m.tm.c = fakeClusterOf(t, m.tm.name, m.svc, m.pod, m.nd)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Setenv("KUBECONFIG", eu.kubeconfig+":"+us.kubeconfig)
	return eu, us
}

// localLink creates the cluster's LocalLink with the status its broker
// would publish.
func (m *testMember) localLink(t *testing.T, address, cidr, endpoint, dataPlane, key string) {
	t.Helper()
	ctx := context.Background()
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: m.name, Annotations: map[string]string{EndpointAnnotation: endpoint}},
		Spec: v1alpha1.KubeLinkSpec{Endpoint: v1alpha1.EndpointLocalLink, ClusterAddress: address, CIDR: cidr}}
	var cur v1alpha1.KubeLink
	if err := m.c.Get(ctx, client.ObjectKey{Name: m.name}, &cur); err == nil {
		cur.Spec, cur.Annotations = kl.Spec, kl.Annotations
		kl = &cur
		if err := m.c.Update(ctx, kl); err != nil {
			t.Fatal(err)
		}
	} else if err := m.c.Create(ctx, kl); err != nil {
		t.Fatal(err)
	}
	kl.Status = v1alpha1.KubeLinkStatus{State: v1alpha1.StateUp, DataPlane: dataPlane, PublicKey: key, Gateway: "172.18.0.3"}
	if err := m.c.Status().Update(ctx, kl); err != nil {
		t.Fatal(err)
	}
}

// brokers plays the brokers of the clusters: every KubeLink that is not a
// LocalLink is set Up with a round-trip time, until the test ends.
func brokers(t *testing.T, ms ...*testMember) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, m := range ms {
				var list v1alpha1.KubeLinkList
				if m.c.List(ctx, &list) != nil {
					continue
				}
				for i := range list.Items {
					l := &list.Items[i]
					if l.Spec.Endpoint == v1alpha1.EndpointLocalLink || (l.Status.State == v1alpha1.StateUp && l.Status.ObservedGeneration == l.Generation) {
						continue
					}
					l.Status.State, l.Status.DataPlane, l.Status.ObservedGeneration = v1alpha1.StateUp, "wireguard-userspace", l.Generation
					l.Status.Health = &v1alpha1.LinkHealth{RTT: &v1alpha1.RTTStats{Avg: &metav1.Duration{Duration: 1234 * time.Microsecond}}, RxBytes: 4096}
					_ = m.c.Status().Update(ctx, l)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

func links(t *testing.T, m *testMember) map[string]v1alpha1.KubeLink {
	t.Helper()
	var list v1alpha1.KubeLinkList
	if err := m.c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]v1alpha1.KubeLink{}
	for _, l := range list.Items {
		if l.Spec.Endpoint != v1alpha1.EndpointLocalLink {
			out[l.Name] = l
		}
	}
	return out
}

const (
	keyEU = "mh0Fq2VvPc5mT+3bE0AVbIq3XxVVFc6nR0V3bDPhqFk="
	keyUS = "3K5Yd9C4n0pTq1mB6y7Ww8x9ZaBcDeFgHiJkLmNoPqI="
)

func TestJoinRefusesClustersThatCannotFormAMesh(t *testing.T) {
	eu, us := twoClusters(t)
	eu.localLink(t, "192.168.0.1/24", "100.64.32.0/20", "172.18.0.3:30777", "wireguard-userspace", keyEU)
	join := []string{"join", "--context", "eu", "--context", "us", "--timeout", "20s"}

	for _, tc := range []struct {
		name  string
		setup func()
		want  []string
	}{
		{"one context", func() {}, []string{"at least two clusters"}},
		{"no LocalLink", func() {}, []string{`context "us": no LocalLink`, "install --context us"}},
		{"same address", func() {
			us.localLink(t, "192.168.0.1/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-userspace", keyUS)
		},
			[]string{`"eu" (context eu) and "us" (context us) have the same mesh address 192.168.0.1`, "--address"}},
		{"another mesh", func() {
			us.localLink(t, "192.168.1.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-userspace", keyUS)
		},
			[]string{"is in mesh 192.168.0.0/24", "in mesh 192.168.1.0/24"}},
		{"overlapping service CIDRs", func() {
			us.localLink(t, "192.168.0.2/24", "100.64.40.0/21", "172.19.0.3:30777", "wireguard-userspace", keyUS)
		},
			[]string{`the service CIDR 100.64.32.0/20 of "eu" (context eu) overlaps the service CIDR 100.64.40.0/21 of "us" (context us)`}},
		{"another data plane", func() { us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30088", "bridge", "") },
			[]string{"runs the wireguard data plane", "the bridge data plane"}},
		{"no key yet", func() {
			us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-userspace", "")
		},
			[]string{`"us" (context us): its LocalLink has no status.publicKey yet`}},
		{"no endpoint", func() { us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "", "wireguard-userspace", keyUS) },
			[]string{"its LocalLink has no annotation " + EndpointAnnotation}},
		{"a hostile endpoint", func() { us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "LocalLink", "wireguard-userspace", keyUS) },
			[]string{`its LocalLink's annotation ` + EndpointAnnotation + ` "LocalLink": must be the host:port peers reach the broker at`}},
		{"a key that is none", func() {
			us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-userspace", "bm90IGEga2V5")
		},
			[]string{`its LocalLink's status.publicKey "bm90IGEga2V5" is not a WireGuard key`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			args := join
			if tc.name == "one context" {
				args = []string{"join", "--context", "eu", "--context", "eu"}
			}
			_, _, err := run(t, args...)
			if err == nil {
				t.Fatalf("join was not refused")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if l := links(t, eu); len(l) != 0 {
				t.Errorf("a refused join created KubeLinks in eu: %v", l)
			}
		})
	}
}

func TestJoinWireGuardIsIdempotentAndFollowsKeys(t *testing.T) {
	eu, us := twoClusters(t)
	eu.localLink(t, "192.168.0.1/24", "100.64.32.0/20", "172.18.0.3:30777", "wireguard-userspace", keyEU)
	us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-kernel", keyUS)
	join := []string{"join", "--context", "eu", "--context", "us", "--timeout", "30s"}

	// No broker sets the links Up: join says which it waits for, and why.
	out, stderr, err := run(t, append(join, "--timeout", "3s")...)
	if err == nil || !strings.Contains(err.Error(), "waiting for 2 of 2 links to be Up: eu→us -; us→eu -") {
		t.Fatalf("join without brokers: %v, want a timeout naming both links\n%s%s", err, out, stderr)
	}
	l := links(t, eu)["us"]
	if l.Spec.ClusterAddress != "192.168.0.2/24" || l.Spec.CIDR != "100.64.48.0/20" || l.Spec.Endpoint != "172.19.0.3:30777" || l.Spec.PublicKey != keyUS ||
		l.Labels[managedByLabel] != managedBy {
		t.Errorf("eu's KubeLink us: %+v %v", l.Spec, l.Labels)
	}
	l = links(t, us)["eu"]
	if l.Spec.ClusterAddress != "192.168.0.1/24" || l.Spec.CIDR != "100.64.32.0/20" || l.Spec.Endpoint != "172.18.0.3:30777" || l.Spec.PublicKey != keyEU {
		t.Errorf("us's KubeLink eu: %+v", l.Spec)
	}

	brokers(t, eu, us)
	out, stderr, err = run(t, join...)
	if err != nil {
		t.Fatalf("join: %v\n%s", err, stderr)
	}
	for _, w := range []string{"eu       us    Up     1.23ms", "us       eu    Up", "2 clusters in mesh 192.168.0.0/24, 2 links (0 changed)"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(stderr, "all 2 links Up after") {
		t.Errorf("progress lacks the wait's end:\n%s", stderr)
	}

	// Again: nothing changes, not even a resourceVersion.
	before := links(t, eu)["us"].ResourceVersion + links(t, us)["eu"].ResourceVersion
	out, _, err = run(t, append(join, "-o", "json")...)
	var rows []linkRow
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 {
		t.Fatalf("join -o json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.Action != "unchanged" || r.State != "Up" || r.RTT != "1.23ms" {
			t.Errorf("second join: %+v", r)
		}
	}
	if after := links(t, eu)["us"].ResourceVersion + links(t, us)["eu"].ResourceVersion; after != before {
		t.Errorf("a second join wrote the links (resourceVersions %s → %s)", before, after)
	}

	// us gets a new key: join brings eu's link up to date, and keeps what
	// the admin set on it.
	kl := links(t, eu)["us"]
	kl.Spec.Egress = []string{"100.64.48.10/32"}
	if err := eu.c.Update(context.Background(), &kl); err != nil {
		t.Fatal(err)
	}
	const newKey = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg="
	us.localLink(t, "192.168.0.2/24", "100.64.48.0/20", "172.19.0.3:30777", "wireguard-kernel", newKey)
	_, stderr, err = run(t, join...)
	if err != nil || !strings.Contains(stderr, `"eu" (context eu): KubeLink us updated (publicKey `+keyUS+" → "+newKey+")") {
		t.Errorf("join after a key change: %v\n%s", err, stderr)
	}
	if kl := links(t, eu)["us"]; kl.Spec.PublicKey != newKey || len(kl.Spec.Egress) != 1 {
		t.Errorf("eu's link after the key change: %+v", kl.Spec)
	}

	// show, of both clusters.
	out, _, err = run(t, "show", "all", "--context", "eu", "--context", "us", "-o", "json")
	var res showResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if len(res.Links) != 2 || res.Links[0].Cluster != "eu" || res.Links[0].Peer != "us" || res.Links[0].RxBytes != 4096 ||
		len(res.Gateways) != 2 || res.Gateways[0].Phase != "no broker pod" {
		t.Errorf("show: %+v", res)
	}
	out, _, err = run(t, "show", "--context", "us")
	if err != nil || !strings.Contains(out, "4.0 KiB") || strings.Contains(out, "BROKER POD") {
		t.Errorf("show links of us: %v\n%s", err, out)
	}

	// us leaves: the links on both sides go; a second leave finds nothing.
	out, _, err = run(t, "leave", "us", "--context", "eu", "--context", "us")
	if err != nil || !strings.Contains(out, "us left the mesh: 2 objects removed in 2 clusters") {
		t.Errorf("leave: %v\n%s", err, out)
	}
	if l := links(t, eu); len(l) != 0 {
		t.Errorf("eu still has links after us left: %v", l)
	}
	if l := links(t, us); len(l) != 0 {
		t.Errorf("us still has links after it left: %v", l)
	}
	out, _, err = run(t, "leave", "us", "--context", "eu", "--context", "us")
	if err != nil || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second leave: %v\n%s", err, out)
	}
}

// The bridge: join registers the member at the authority (its
// ServiceAccount, bindings and token; the member's kubeconfig Secret) and
// switches the member to certificates the authority signs.
// bridgePair installs eu (the mesh authority) and us with the bridge, as a
// user would (no kubelet runs: each install ends waiting for its broker),
// gives us its own CA as its certwatch would, and does the work of the
// controllers that do not run here: the deployment controller rolls out
// us's broker Deployment (join waits for that before it removes us's own
// CA), the token controller fills us's token Secret at eu.
// activeBroker plays m's active broker for diagnose: a broker pod with an
// address, the Lease it holds, and the Service's EndpointSlice naming it.
func activeBroker(t *testing.T, m *testMember, ip string) {
	t.Helper()
	ctx := context.Background()
	pod, err := m.cs.CoreV1().Pods("kubelink").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-broker-0",
		Labels: map[string]string{"app.kubernetes.io/name": "kubelink-broker"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "broker", Image: "kubelink/broker:test"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if _, err := m.cs.CoreV1().Pods("kubelink").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	holder := pod.Name
	if _, err := m.cs.CoordinationV1().Leases("kubelink").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-broker"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := true
	if _, err := m.cs.DiscoveryV1().EndpointSlices("kubelink").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: brokerEndpointSlice, Labels: map[string]string{discoveryv1.LabelServiceName: "kubelink-broker",
			discoveryv1.LabelManagedBy: "kubelink-broker"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "kubelink", Name: holder}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func bridgePair(t *testing.T) (eu, us *testMember) {
	eu, us = twoClusters(t)
	ctx := context.Background()
	for _, tc := range []struct {
		m    *testMember
		args []string
	}{
		{eu, []string{"--name", "eu", "--address", "192.168.0.1", "--mesh-authority"}},
		{us, []string{"--name", "us", "--address", "192.168.0.2"}},
	} {
		args := append([]string{"install", "--context", tc.m.name, "--chart", chartDir, "--mesh-cidr", "192.168.0.0/24", "--data-plane", "bridge",
			"--skip-image-check", "--timeout", "6s"}, tc.args...)
		if _, stderr, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("install %s: %v\n%s", tc.m.name, err, stderr)
		}
	}
	if _, err := us.cs.CoreV1().Secrets("kubelink").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-tls"},
		Data: map[string][]byte{"ca.key": []byte("k"), "ca.crt": []byte("c")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	activeBroker(t, eu, "10.130.0.5")
	activeBroker(t, us, "10.140.0.5")
	for _, m := range []*testMember{eu, us} {
		var kl v1alpha1.KubeLink
		if err := m.c.Get(ctx, client.ObjectKey{Name: m.name}, &kl); err != nil {
			t.Fatal(err)
		}
		kl.Status = v1alpha1.KubeLinkStatus{DataPlane: "bridge", Gateway: "172.18.0.3"}
		if err := m.c.Status().Update(ctx, &kl); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			d, err := us.cs.AppsV1().Deployments("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
			if err == nil && d.Status.ObservedGeneration < d.Generation {
				d.Status.ObservedGeneration = d.Generation
				d.Status.Replicas, d.Status.UpdatedReplicas = *d.Spec.Replicas, *d.Spec.Replicas
				us.cs.AppsV1().Deployments("kubelink").UpdateStatus(ctx, d, metav1.UpdateOptions{})
			}
			s, err := eu.cs.CoreV1().Secrets("kubelink").Get(ctx, "member-us-token", metav1.GetOptions{})
			if err == nil && len(s.Data) == 0 {
				s.Data = map[string][]byte{corev1.ServiceAccountTokenKey: []byte("member-us-token-value")}
				eu.cs.CoreV1().Secrets("kubelink").Update(ctx, s, metav1.UpdateOptions{})
			}
		}
	}()
	return eu, us
}

// authorityKubeconfig is m's kubeconfig for the mesh authority (its Secret
// kubelink-authority) and its current context.
func authorityKubeconfig(t *testing.T, m *testMember) (*clientcmdapi.Config, *clientcmdapi.Context) {
	t.Helper()
	s, err := m.cs.CoreV1().Secrets("kubelink").Get(context.Background(), "kubelink-authority", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the member's Secret kubelink-authority: %v", err)
	}
	kc, err := clientcmd.Load(s.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	return kc, kc.Contexts[kc.CurrentContext]
}

func TestJoinBridgeRegistersTheMember(t *testing.T) {
	eu, us := bridgePair(t)
	ctx := context.Background()
	brokers(t, eu, us)
	_, stderr, err := run(t, "join", "--context", "eu", "--context", "us", "--timeout", "60s")
	if err != nil {
		t.Fatalf("join: %v\n%s", err, stderr)
	}
	for _, w := range []string{
		"a loopback address its members' pods cannot reach; they use the address it advertises",
		`"us" (context us): removing its own CA`,
		`upgrading release kubelink to a member of the authority "eu"`,
		`"us" (context us): registered at the mesh authority "eu" (context eu) (identity kubelink://default/us)`,
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("progress lacks %q:\n%s", w, stderr)
		}
	}
	sa, err := eu.cs.CoreV1().ServiceAccounts("kubelink").Get(ctx, "member-us", metav1.GetOptions{})
	if err != nil || sa.Annotations[identitiesAnnotation] != "kubelink://default/us" || sa.Annotations[namesAnnotation] != "172.19.0.3" {
		t.Errorf("the member's ServiceAccount at the authority: %v %v", sa, err)
	}
	if b, err := eu.cs.RbacV1().ClusterRoleBindings().Get(ctx, "kubelink-member-us", metav1.GetOptions{}); err != nil || b.RoleRef.Name != "kubelink-member" || b.Subjects[0].Name != "member-us" {
		t.Errorf("ClusterRoleBinding: %v %v", b, err)
	}
	if b, err := eu.cs.RbacV1().RoleBindings("kubelink").Get(ctx, "kubelink-member-us", metav1.GetOptions{}); err != nil || b.RoleRef.Name != "kubelink-member" {
		t.Errorf("RoleBinding: %v %v", b, err)
	}
	// The member's kubeconfig: the authority's advertised address, its CA,
	// the token.
	kc, ctxt := authorityKubeconfig(t, us)
	slices, _ := eu.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	want := fmt.Sprintf("https://%s:%d", slices.Items[0].Endpoints[0].Addresses[0], *slices.Items[0].Ports[0].Port)
	// No controller-manager publishes kube-root-ca.crt here: the CA is the
	// kubeconfig's (in a real cluster the same one).
	euKC, _ := clientcmd.LoadFromFile(eu.kubeconfig)
	if kc.Clusters[ctxt.Cluster].Server != want || string(kc.Clusters[ctxt.Cluster].CertificateAuthorityData) != string(euKC.Clusters["eu"].CertificateAuthorityData) ||
		kc.AuthInfos[ctxt.AuthInfo].Token != "member-us-token-value" {
		t.Errorf("the member's kubeconfig: server %s (want %s), token %q", kc.Clusters[ctxt.Cluster].Server, want, kc.AuthInfos[ctxt.AuthInfo].Token)
	}
	if _, err := us.cs.CoreV1().Secrets("kubelink").Get(ctx, "kubelink-tls", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the member's own CA is still there: %v", err)
	}
	cfg, _ := us.cs.CoreV1().ConfigMaps("kubelink").Get(ctx, "kubelink-cluster", metav1.GetOptions{})
	if cfg.Data["KUBELINK_CERT_MODE"] != "csr" {
		t.Errorf("the member's KUBELINK_CERT_MODE = %q, want csr", cfg.Data["KUBELINK_CERT_MODE"])
	}
	if l := links(t, us)["eu"]; l.Spec.Endpoint != "172.18.0.3:30088" || l.Spec.PublicKey != "" {
		t.Errorf("us's bridge link to eu: %+v", l.Spec)
	}

	// Again: nothing changes, and the release is not upgraded again.
	out, stderr, err := run(t, "join", "--context", "eu", "--context", "us", "--timeout", "30s")
	if err != nil || !strings.Contains(out, "(0 changed)") || strings.Contains(stderr, "upgrading") || strings.Contains(stderr, "registered") {
		t.Errorf("second join: %v\n%s%s", err, out, stderr)
	}

	// A member may be registered only for its own identity and name.
	g := &globals{kube: genericclioptions.NewConfigFlags(true), out: io.Discard, errOut: io.Discard}
	*g.kube.Namespace = "kubelink"
	authM, err := g.loadMember(ctx, "eu", "")
	if err != nil {
		t.Fatal(err)
	}
	usM, err := g.loadMember(ctx, "us", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ids, name, want string }{
		{"kubelink://default/eu", "172.19.0.3", "must each be kubelink://<mesh>/us (its own name)"},
		{"kubelink://default/us,kubelink://other/a", "172.19.0.3", "must each be kubelink://<mesh>/us"},
		{"kubelink://default/us", "172.18.0.3", "its bridge name 172.18.0.3 is already registered at the authority for eu (the authority)"},
		{"kubelink://default/us", "172.19.0.3", ""},
	} {
		err := checkClaims(ctx, authM, usM, tc.ids, tc.name)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("claims %s / %s: %v, want %q", tc.ids, tc.name, err, tc.want)
		}
	}

	// The authority cannot leave.
	if _, _, err := run(t, "leave", "eu", "--context", "eu", "--context", "us"); err == nil || !strings.Contains(err.Error(), "is the mesh authority") {
		t.Errorf("leave of the authority: %v", err)
	}

	// diagnose of the joined clusters: no error (no kube-proxy runs here,
	// so its mode is unknown: a warning).
	out, _, err = run(t, "diagnose", "--context", "eu", "--context", "us", "-o", "json")
	var fs []finding
	if err != nil || json.Unmarshal([]byte(out), &fs) != nil {
		t.Fatalf("diagnose of the joined clusters: %v\n%s", err, out)
	}
	for _, f := range fs {
		if f.Severity != "warning" || !strings.Contains(f.Cause, "kube-proxy mode is unknown") {
			t.Errorf("diagnose of the joined clusters: %+v", f)
		}
	}
	// Broken: us's link to eu routes another CIDR, and the authority no
	// longer knows us.
	var kl v1alpha1.KubeLink
	if err := us.c.Get(ctx, client.ObjectKey{Name: "eu"}, &kl); err != nil {
		t.Fatal(err)
	}
	kl.Spec.CIDR = "100.64.200.0/24"
	if err := us.c.Update(ctx, &kl); err != nil {
		t.Fatal(err)
	}
	if err := eu.cs.CoreV1().ServiceAccounts("kubelink").Delete(ctx, "member-us", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// and us's broker Service has a second EndpointSlice, naming a
	// standby that is not the Lease's holder.
	ready := true
	if _, err := us.cs.DiscoveryV1().EndpointSlices("kubelink").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kubelink-broker-x7k2p", Labels: map[string]string{discoveryv1.LabelServiceName: "kubelink-broker", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.140.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "diagnose", "--context", "eu", "--context", "us")
	defer func() {
		// us leaves: its registration at the authority goes too.
		out, _, err := run(t, "leave", "us", "--context", "eu", "--context", "us", "-o", "json")
		var rs []removal
		if err != nil || json.Unmarshal([]byte(out), &rs) != nil {
			t.Fatalf("leave: %v\n%s", err, out)
		}
		var objs []string
		for _, r := range rs {
			objs = append(objs, r.Cluster+" "+r.Object)
		}
		// member-us was deleted above, its token Secret and bindings were not.
		want := "eu KubeLink us, eu ClusterRoleBinding kubelink-member-us, eu RoleBinding kubelink/kubelink-member-us, eu Secret kubelink/member-us-token, us KubeLink eu"
		if strings.Join(objs, ", ") != want {
			t.Errorf("leave removed %s\nwant %s", strings.Join(objs, ", "), want)
		}
	}()
	if err == nil || err.Error() != "diagnose found 3 errors" {
		t.Errorf("diagnose of the broken clusters: %v, want 3 errors\n%s", err, out)
	}
	for _, w := range []string{
		"KubeLink eu has cidr 100.64.200.0/24, but eu's service CIDR is 100.64.32.0/20: its Services are not routed",
		"fix: `kubelinkctl join --context us --context eu` sets it from eu's LocalLink",
		"the mesh authority eu has not registered it (no ServiceAccount kubelink/member-us): it signs no certificate for kubelink://default/us",
		"its broker Service has the EndpointSlice kubelink-broker-x7k2p (managed by endpointslice-controller.k8s.io) besides the active broker's: peers may reach the pods it names",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), w) {
			t.Errorf("diagnose lacks %q:\n%s", w, out)
		}
	}
}

func TestFindAuthority(t *testing.T) {
	m := func(name string, auth bool) *member {
		return &member{cluster: &cluster{context: name}, name: name, values: map[string]any{"meshAuthority": map[string]any{"enabled": auth}}}
	}
	if a, err := findAuthority([]*member{m("a", false), m("b", true)}); err != nil || a.name != "b" {
		t.Errorf("one authority: %v %v", a, err)
	}
	if _, err := findAuthority([]*member{m("a", false), m("b", false)}); err == nil || !strings.Contains(err.Error(), "install one of them with --mesh-authority") {
		t.Errorf("none: %v", err)
	}
	if _, err := findAuthority([]*member{m("a", true), m("b", true)}); err == nil || !strings.Contains(err.Error(), "are both mesh authorities") {
		t.Errorf("two: %v", err)
	}
}
