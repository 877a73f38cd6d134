package globaldns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind" // listen on loopback only
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/crds"
	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

func directives() []string { return dnsserver.Directives }

// stopCoreDNS stops the servers and runs the shutdown callbacks (which stop
// the informer; Instance.Stop alone does not).
func stopCoreDNS(inst *caddy.Instance) {
	_ = inst.Stop()
	inst.ShutdownCallbacks()
}

// InstallCRD installs the embedded CoreDNSEntry CRD into the API server of
// cp and waits until it is served.
func installCRD(t *testing.T, cp *testenv.ControlPlane) client.Client {
	t.Helper()
	testenv.InstallCRDs(t, cp.Config(), "CoreDNSEntry", crds.CRDs)
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, corev1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cp.Config(), client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func query(t *testing.T, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not within %s (last: %s)", what, limit, last)
}

// TestPluginInCoreDNS runs CoreDNS in process with the kubelinkglobal plugin
// against a real API server: entries appear, change and disappear in DNS,
// their status is written, fallthrough hands unknown names on.
func TestPluginInCoreDNS(t *testing.T) {
	AddDirective()
	cp := testenv.StartForTest(t)
	kube := installCRD(t, cp)
	kc, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	foo := &v1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "foo"},
		Spec: v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"foo.svc.global.kubelink"}, A: []string{"100.64.16.20"}}}
	if err := kube.Create(ctx, foo); err != nil {
		t.Fatal(err)
	}

	corefile := fmt.Sprintf(`svc.global.kubelink:0 {
    bind 127.0.0.1
    kubelinkglobal {
        kubeconfig %s
        ttl 2
    }
}
`, kubeconfig)
	caddy.Quiet, dnsserver.Quiet = true, true
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("starting CoreDNS: %v", err)
	}
	t.Cleanup(func() { stopCoreDNS(inst) })
	srvs := inst.Servers()
	if len(srvs) != 1 || srvs[0].LocalAddr() == nil {
		t.Fatalf("CoreDNS servers: %v", srvs)
	}
	server := srvs[0].LocalAddr().(*net.UDPAddr).String()

	aRecords := func(name string) (bool, string) {
		r := query(t, server, name, dns.TypeA)
		var ips []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ips = append(ips, a.A.String())
			}
		}
		return r.Rcode == dns.RcodeSuccess && r.Authoritative, dns.RcodeToString[r.Rcode] + " " + strings.Join(ips, ",")
	}
	// The entry created before the start is served once the informer has
	// listed it: startup waits up to 5 s for that and then serves anyway
	// (a slow API server must not keep DNS down), so under load the first
	// answers may still be NXDOMAIN.
	waitFor(t, "foo served after the first list", 15*time.Second, func() (bool, string) {
		ok, got := aRecords("foo.svc.global.kubelink")
		return ok && got == "NOERROR 100.64.16.20", got
	})
	if r := query(t, server, "bar.svc.global.kubelink", dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("bar: %s %v; want NXDOMAIN with SOA", dns.RcodeToString[r.Rcode], r.Ns)
	}
	if r := query(t, server, "example.com", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("example.com: %s; want REFUSED (not our zone)", dns.RcodeToString[r.Rcode])
	}
	waitStatus := func(key client.ObjectKey, state, msg string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("status %s of %s", state, key), 10*time.Second, func() (bool, string) {
			var e v1alpha1.CoreDNSEntry
			if err := kube.Get(ctx, key, &e); err != nil {
				return false, err.Error()
			}
			return e.Status.State == state && strings.Contains(e.Status.Message, msg), fmt.Sprintf("%+v", e.Status)
		})
	}
	waitStatus(client.ObjectKeyFromObject(foo), v1alpha1.StateOk, "")

	// An update is served within the TTL.
	if err := kube.Get(ctx, client.ObjectKeyFromObject(foo), foo); err != nil {
		t.Fatal(err)
	}
	foo.Spec.A = []string{"100.64.16.21"}
	foo.Spec.SRV = &v1alpha1.SRVRecords{Service: "_http._tcp", Records: []v1alpha1.SRVRecord{{Host: "foo.svc.global.kubelink", Port: 80, Protocol: "tcp"}}}
	if err := kube.Update(ctx, foo); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "foo updated", 5*time.Second, func() (bool, string) {
		ok, got := aRecords("foo.svc.global.kubelink")
		return ok && got == "NOERROR 100.64.16.21", got
	})
	if r := query(t, server, "foo.svc.global.kubelink", dns.TypeSRV); len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 80 {
		t.Errorf("foo SRV: %v", r.Answer)
	}

	// A name outside the zone makes an entry Invalid, with a message.
	bad := &v1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"},
		Spec: v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"bad.example.com"}, A: []string{"10.0.0.1"}}}
	if err := kube.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	waitStatus(client.ObjectKeyFromObject(bad), v1alpha1.StateInvalid, "outside the served zones")

	// Deleting the entry removes the name.
	if err := kube.Delete(ctx, foo); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "foo gone", 5*time.Second, func() (bool, string) {
		r := query(t, server, "foo.svc.global.kubelink", dns.TypeA)
		return r.Rcode == dns.RcodeNameError, dns.RcodeToString[r.Rcode]
	})
	if err := kube.Get(ctx, client.ObjectKeyFromObject(foo), foo); !apierrors.IsNotFound(err) {
		t.Errorf("foo after delete: %v", err)
	}
}

// TestFallthroughInCoreDNS: with fallthrough, unknown names go to the next
// plugin (here: whatever follows; the chain ends, so SERVFAIL), known ones
// are still answered.
func TestFallthroughInCoreDNS(t *testing.T) {
	AddDirective()
	cp := testenv.StartForTest(t)
	kube := installCRD(t, cp)
	kc, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kube.Create(ctx, &v1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "foo"},
		Spec: v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"foo.svc.global.kubelink"}, TXT: []string{"hi"}}}); err != nil {
		t.Fatal(err)
	}
	corefile := fmt.Sprintf(`svc.global.kubelink:0 {
    bind 127.0.0.1
    kubelinkglobal svc.global.kubelink {
        kubeconfig %s
        status off
        fallthrough
    }
}
`, kubeconfig)
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("starting CoreDNS: %v", err)
	}
	t.Cleanup(func() { stopCoreDNS(inst) })
	server := inst.Servers()[0].LocalAddr().(*net.UDPAddr).String()
	if r := query(t, server, "foo.svc.global.kubelink", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("foo TXT: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if r := query(t, server, "bar.svc.global.kubelink", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("bar with fallthrough: %s; want SERVFAIL (handed to the end of the chain)", dns.RcodeToString[r.Rcode])
	}
	// status off: nothing written.
	var e v1alpha1.CoreDNSEntry
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "default", Name: "foo"}, &e); err != nil || e.Status.State != "" {
		t.Errorf("status with status off: %+v %v", e.Status, err)
	}
}
