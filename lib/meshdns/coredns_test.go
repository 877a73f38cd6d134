package meshdns

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// TestCoreDNSServesMeshNames runs the real CoreDNS on a rendered Corefile
// (dns mode). Two fake cluster DNS servers stand in for the local cluster a
// and the remote cluster b; everything stays on loopback.
func TestCoreDNSServesMeshNames(t *testing.T) {
	remote := startFakeDNS(t, map[string]string{"echo.default.svc.cluster.local.": "100.64.16.20"})
	local := startFakeDNS(t, map[string]string{"echo.default.svc.cluster.local.": "100.64.0.20"})
	port, health, ready := freePort(t), freePort(t), freePort(t)
	render := func(bState string) string {
		links := []v1alpha1.KubeLink{localA(nil), peerB(bState)}
		in, warnings := BuildInput(mesh.Build(links, mesh.ParseOptions{}), links, InputOptions{Mode: ModeDNS})
		if len(warnings) > 0 {
			t.Fatalf("warnings: %q", warnings)
		}
		// The fakes listen on loopback ports instead of the service IPs.
		in.DNS = local.addr
		for i := range in.Meshes[0].Clusters {
			in.Meshes[0].Clusters[i].DNS = remote.addr
		}
		in.Port, in.Bind = port, "127.0.0.1"
		in.HealthAddr, in.ReadyAddr = fmt.Sprintf("127.0.0.1:%d", health), fmt.Sprintf("127.0.0.1:%d", ready)
		out, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		return out.Corefile
	}

	cd := startCoreDNS(t, render(v1alpha1.StateUp), port, fmt.Sprintf("127.0.0.1:%d", ready))
	const remoteName, localName = "echo.default.svc.b.kubelink.", "echo.default.svc.a.kubelink."
	cd.waitFor(t, remoteName, 5*time.Second, "resolved to 100.64.16.20", resolvesTo(remoteName, "100.64.16.20"))
	if !remote.asked("echo.default.svc.cluster.local.") {
		t.Errorf("remote DNS was not asked for the rewritten name; it saw %q", remote.queries)
	}
	cd.waitFor(t, localName, 5*time.Second, "resolved to 100.64.0.20 (local cluster)", resolvesTo(localName, "100.64.0.20"))
	r, err := cd.query("missing.default.svc.b.kubelink.")
	if err != nil || r.Rcode != dns.RcodeNameError || r.Question[0].Name != "missing.default.svc.b.kubelink." {
		t.Errorf("unknown remote name: err %v, answer %v; want NXDOMAIN for the name asked", err, r)
	}
	if r, err := cd.query("echo.default.svc.z.kubelink."); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown cluster z: err %v, answer %v; want NXDOMAIN", err, r)
	}
	if r, err := cd.query("example.com."); err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("name outside the meshes: err %v, answer %v; want REFUSED (nothing leaves loopback)", err, r)
	}

	// Link Down: b leaves the Corefile; CoreDNS reloads it by itself.
	cd.write(t, render(v1alpha1.StateDown))
	took := cd.waitFor(t, remoteName, 5*time.Second, "gone (NXDOMAIN/REFUSED) after link Down", gone)
	t.Logf("name gone %s after the Corefile changed", took.Round(time.Millisecond))
	cd.waitFor(t, localName, 5*time.Second, "still resolving (local cluster)", resolvesTo(localName, "100.64.0.20"))

	// Link Up again: the name comes back.
	cd.write(t, render(v1alpha1.StateUp))
	took = cd.waitFor(t, remoteName, 5*time.Second, "back after link Up", resolvesTo(remoteName, "100.64.16.20"))
	t.Logf("name back %s after the Corefile changed", took.Round(time.Millisecond))
}
