package clusterlab

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/meshdns"
)

const meshName = "echo.default.svc.b.kubelink"

// dns mode: A's kubelink DNS rewrites b.kubelink to cluster.local and asks
// B's cluster DNS (100.64.16.10) through the mesh.
func TestMeshDNSAcrossClusters(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartClusterDNS()
	bDNS := b.StartClusterDNS()
	// B's cluster DNS answers its own names from B's pod.
	if ip, err := LookupA(b.Pod, bDNS.Service(), "echo.default.svc.cluster.local", time.Second); err != nil || ip != b.ServiceIP.Addr() {
		t.Fatalf("B cluster DNS: echo.default.svc.cluster.local = %v, %v; want %s", ip, err, b.ServiceIP.Addr())
	}
	kdns := a.StartKubelinkDNS(meshdns.ModeDNS)
	meshDNSScenario(t, lab, kdns, func() { Connect(a, b) })

	// The local cluster under the mesh domain: the same name works here.
	if ip, err := LookupA(a.Pod, kdns.Service(), "echo.default.svc.a.kubelink", time.Second); err != nil || ip != a.ServiceIP.Addr() {
		t.Errorf("echo.default.svc.a.kubelink = %v, %v; want %s", ip, err, a.ServiceIP.Addr())
	}
}

// kubernetes mode: A's kubelink DNS serves b.kubelink with the kubernetes
// plugin against B's API server, reached through the mesh at B's service
// CIDR + 1 with the token and CA of A's apiAccess Secret.
func TestMeshDNSKubernetesMode(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	b.CreateEchoService()
	caB := b.ExposeAPIService()
	a.Apply(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "b-api"}, Data: map[string][]byte{
		v1alpha1.SecretKeyToken: []byte(b.DNSToken()), v1alpha1.SecretKeyCAData: caB}})
	a.CreateEchoService()
	kdns := a.StartKubelinkDNS(meshdns.ModeKubernetes)
	meshDNSScenario(t, lab, kdns, func() {
		toB := b.LinkTo()
		toB.Spec.APIAccess = &v1alpha1.SecretReference{Name: "b-api"}
		a.Apply(a.LocalLink(), toB)
		// B exports its API server to A explicitly: the default ingress
		// policy leaves out the kubernetes Service (the service CIDR's first
		// address), an allow list that covers it lets it in.
		bl, toA := b.LocalLink(), a.LinkTo()
		toA.Spec.Ingress = []string{netip.MustParsePrefix(bl.Spec.ClusterAddress).Masked().String(), bl.Spec.CIDR}
		b.Apply(bl, toA)
	})

	// The local block uses the in-cluster service account.
	if ip, err := LookupA(a.Pod, kdns.Service(), "echo.default.svc.a.kubelink", time.Second); err != nil || ip != a.ServiceIP.Addr() {
		t.Errorf("echo.default.svc.a.kubelink = %v, %v; want %s", ip, err, a.ServiceIP.Addr())
	}
}

// meshDNSScenario: connect, resolve B's echo by its mesh name from A's pod
// and fetch by name; kill B's broker (link Down) → the name is gone within
// 5 s; restart it → the name is back.
func meshDNSScenario(t *testing.T, lab *Lab, kdns *KubelinkDNS, connect func()) {
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	bBroker := b.StartBroker(lab, b.GW)
	server := kdns.Service()
	want := b.ServiceIP.Addr()

	// Before the links exist the name does not (REFUSED: not even the mesh
	// domain is served yet).
	if r, err := Resolve(a.Pod, server, meshName, time.Second); err != nil || (r.Rcode != dns.RcodeNameError && r.Rcode != dns.RcodeRefused) {
		t.Fatalf("%s before any link: %v %v; want NXDOMAIN or REFUSED", meshName, r, err)
	}

	applied := time.Now()
	connect()
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	took := waitResolves(t, a, server, want, 10*time.Second)
	t.Logf("%s -> %s %s after apply (%s after Up)", meshName, want, time.Since(applied).Round(time.Millisecond), took.Round(time.Millisecond))
	getByName(t, a, server)

	// Link Down: the name is gone within 5 s of the link going Down.
	bBroker.Kill()
	killed := time.Now()
	down, _ := a.WaitState("b", v1alpha1.StateDown, 3*time.Second)
	downAt := killed.Add(down)
	var lastErr error
	waitFor(t, meshName+" to be NXDOMAIN after the link went Down", 5*time.Second-time.Since(downAt), func() bool {
		if IsNXDomain(a.Pod, server, meshName, 300*time.Millisecond) {
			return true
		}
		_, lastErr = LookupA(a.Pod, server, meshName, 300*time.Millisecond)
		return false
	})
	gone := time.Now()
	t.Logf("B broker killed: link Down after %s; name gone after %s (%s after Down; last answer before: %v)",
		down.Round(time.Millisecond), gone.Sub(killed).Round(time.Millisecond), gone.Sub(downAt).Round(time.Millisecond), lastErr)
	// It stays gone.
	time.Sleep(500 * time.Millisecond)
	if !IsNXDomain(a.Pod, server, meshName, time.Second) {
		t.Errorf("%s resolves again while the link is Down", meshName)
	}

	// Up again: the name is back.
	b.StartBroker(lab, b.GW)
	restarted := time.Now()
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	back := waitResolves(t, a, server, want, 10*time.Second)
	t.Logf("B broker restarted: name back after %s (%s after Up)", time.Since(restarted).Round(time.Millisecond), back.Round(time.Millisecond))
	getByName(t, a, server)
	if strings.Contains(kdns.Proc.Output(), "[ERROR] plugin/errors") {
		t.Logf("kubelink CoreDNS logged errors (expected while the link was Down):\n%s", lastLines(kdns.Proc.Output(), 5))
	}
}

// waitResolves polls the mesh name from A's pod until it resolves to want.
func waitResolves(t *testing.T, a *Cluster, server netip.AddrPort, want netip.Addr, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var ip netip.Addr
	var err error
	for time.Since(start) < limit {
		if ip, err = LookupA(a.Pod, server, meshName, 500*time.Millisecond); err == nil && ip == want {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not resolve to %s within %s: got %v, %v", meshName, want, limit, ip, err)
	return 0
}

// getByName is `wget http://echo.default.svc.b.kubelink/` in A's pod:
// resolve with the kubelink DNS, then GET.
func getByName(t *testing.T, a *Cluster, server netip.AddrPort) {
	t.Helper()
	ip, err := LookupA(a.Pod, server, meshName, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := WaitGet(t, a.Pod, netip.AddrPortFrom(ip, 80), 5*time.Second)
	if !strings.HasPrefix(body, "echo b from ") {
		t.Errorf("GET http://%s/ answered %q; want B's echo", meshName, body)
	}
	t.Logf("GET http://%s/ (%s): %q", meshName, ip, body)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// With --link-gate the Corefile keeps B's block whatever the link's state and
// the kubelinkgate plugin answers NXDOMAIN while the link is not Up: the name
// is gone within a second of Down, stays gone at every check, comes back
// within a second of Up, answers carry TTL ≤ 1 s, and no health change
// rewrites the Corefile (so no CoreDNS restart).
func TestMeshDNSLinkGate(t *testing.T) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A's cluster DNS has the hook that install adds: pods resolve mesh
	// names through it, and it caches what the gate lets through.
	a.StartClusterDNSHooked()
	b.StartClusterDNS()
	kdns := a.StartKubelinkDNSGated()
	hook := netip.AddrPortFrom(a.ClusterDNSIP(), 53)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	bBroker := b.StartBroker(lab, b.GW)
	server, want := kdns.Service(), b.ServiceIP.Addr()
	Connect(a, b)
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	waitResolves(t, a, server, want, 10*time.Second)
	r, err := Resolve(a.Pod, server, meshName, time.Second)
	if err != nil || len(r.Answer) == 0 || r.Answer[0].Header().Ttl > 1 {
		t.Errorf("answer %v, %v: want an address with TTL ≤ 1 s (the gate's cap)", r, err)
	}
	secret := func() string {
		var s corev1.Secret
		if err := a.Kube.Get(waitCtx(t, 5*time.Second), client.ObjectKey{Namespace: Namespace, Name: "kubelink-coredns"}, &s); err != nil {
			t.Fatal(err)
		}
		return string(s.Data[meshdns.SecretKeyCorefile])
	}
	corefile := secret()
	if !strings.Contains(corefile, "kubelinkgate b") {
		t.Fatalf("Corefile without the gate for b:\n%s", corefile)
	}
	// The hook has just cached the answer: with CoreDNS's default minimum
	// TTL it would keep it 5 s, past the bound below.
	if ip, err := LookupA(a.Pod, hook, meshName, time.Second); err != nil || ip != want {
		t.Fatalf("%s through the cluster DNS hook: %v, %v; want %v", meshName, ip, err, want)
	}

	bBroker.Kill()
	killed := time.Now()
	down, _ := a.WaitState("b", v1alpha1.StateDown, 3*time.Second)
	downAt := killed.Add(down)
	gone := checkEvery(t, 50*time.Millisecond, 3*time.Second, func() bool { return IsNXDomain(a.Pod, server, meshName, 300*time.Millisecond) })
	if gone.IsZero() || gone.Sub(downAt) > time.Second {
		t.Fatalf("%s not NXDOMAIN within 1s of Down (gone at %v after Down)", meshName, gone.Sub(downAt))
	}
	// Through the hook: the kubelink CoreDNS's bound plus the 1-s TTL the
	// gate gave the last answer, which the hook keeps at most that long.
	hookGone := checkEvery(t, 50*time.Millisecond, 3*time.Second, func() bool { return IsNXDomain(a.Pod, hook, meshName, 300*time.Millisecond) })
	if hookGone.IsZero() || hookGone.Sub(downAt) > 2*time.Second {
		t.Fatalf("%s not NXDOMAIN through the cluster DNS hook within 2s of Down (%s)", meshName, sinceOrNever(hookGone, downAt))
	}
	t.Logf("link Down %s after the kill; %s NXDOMAIN %s after Down, through the hook %s after Down", down.Round(time.Millisecond), meshName,
		gone.Sub(downAt).Round(time.Millisecond), hookGone.Sub(downAt).Round(time.Millisecond))
	// every check for 2 s, both servers: still gone
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !IsNXDomain(a.Pod, server, meshName, 300*time.Millisecond) {
			t.Fatalf("%s answered again while the link is Down", meshName)
		}
		if !IsNXDomain(a.Pod, hook, meshName, 300*time.Millisecond) {
			t.Fatalf("%s answered again through the hook while the link is Down", meshName)
		}
	}

	b.StartBroker(lab, b.GW)
	up, _ := a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	upAt := time.Now()
	back := checkEvery(t, 50*time.Millisecond, 3*time.Second, func() bool {
		ip, err := LookupA(a.Pod, server, meshName, 300*time.Millisecond)
		return err == nil && ip == want
	})
	if back.IsZero() || back.Sub(upAt) > time.Second {
		when := "not within 3s"
		if !back.IsZero() {
			when = back.Sub(upAt).Round(time.Millisecond).String() + " after Up"
		}
		t.Fatalf("%s did not resolve within 1s of Up (it resolved %s; the link was Up %s after the restart)", meshName, when, up.Round(time.Millisecond))
	}
	// Through the hook: the NXDOMAIN it cached last lives the gate's 1 s.
	hookBack := checkEvery(t, 50*time.Millisecond, 3*time.Second, func() bool {
		ip, err := LookupA(a.Pod, hook, meshName, 300*time.Millisecond)
		return err == nil && ip == want
	})
	if hookBack.IsZero() || hookBack.Sub(upAt) > 2*time.Second {
		t.Fatalf("%s did not resolve through the cluster DNS hook within 2s of Up (%s)", meshName, sinceOrNever(hookBack, upAt))
	}
	t.Logf("link Up %s after the restart; %s resolves %s after Up, through the hook %s after Up", up.Round(time.Millisecond), meshName,
		back.Sub(upAt).Round(time.Millisecond), hookBack.Sub(upAt).Round(time.Millisecond))
	if got := secret(); got != corefile {
		t.Errorf("the Corefile changed with the link's health (a CoreDNS restart):\n%s", got)
	}
}

// checkEvery runs cond every interval until it holds or limit passes and
// returns when it first held, or the zero time.
// sinceOrNever says when at was, after from, for a failure message.
func sinceOrNever(at, from time.Time) string {
	if at.IsZero() {
		return "not within the 3 s checked"
	}
	return at.Sub(from).Round(time.Millisecond).String() + " after"
}

func checkEvery(t *testing.T, interval, limit time.Duration, cond func() bool) time.Time {
	t.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(interval) {
		if cond() {
			return time.Now()
		}
	}
	return time.Time{}
}
