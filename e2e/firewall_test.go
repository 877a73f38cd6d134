//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Each cluster in turn denies its peer's traffic to its echo Service with
// `ingress: ["!<ClusterIP>"]` on its link to the peer: the peer's requests
// are dropped for the whole window while the rest of the service network
// (its DNS) stays reachable; removing the rule lets them through.
func TestIngressDeny(t *testing.T) {
	var fs []features.Feature
	for _, d := range []struct{ owner, peer *Cluster }{{lab.B, lab.A}, {lab.A, lab.B}} {
		setIngress := func(ctx context.Context, ingress []string) error {
			return d.owner.UpdateLink(ctx, d.peer.Name, func(s *v1alpha1.KubeLinkSpec) { s.Ingress = ingress })
		}
		fs = append(fs, features.New("ingress firewall of "+d.owner.Name).Assess(fmt.Sprintf("%s denies %s its echo: dropped all through the window, its DNS reachable, rule removed: reachable again", d.owner.Name, d.peer.Name),
			func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
				echoIP, err := d.owner.ServiceIP(ctx, "echo")
				if err != nil {
					t.Fatal(err)
				}
				pod := anyClient(ctx, t, d.peer)
				url := "http://" + echoIP + "/"
				want := "echo from cluster " + d.owner.Name
				expectEcho(ctx, t, d.peer, pod, url, d.owner.Name, 30*time.Second)
				if err := setIngress(ctx, []string{"!" + echoIP}); err != nil {
					t.Fatal(err)
				}
				restored := false
				defer func() {
					if !restored {
						_ = setIngress(context.Background(), nil)
					}
				}()
				took, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
					if _, err := d.peer.Wget(ctx, pod, url); err == nil {
						return fmt.Errorf("%s still answers", url)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s's deny rule for %s effective %s after the update", d.owner.Name, echoIP, took.Round(10*time.Millisecond))
				// The rest of the owner's service network: its DNS answers.
				if err := resolves(ctx, d.peer, pod, "echo.default.svc."+d.owner.Name+".kubelink"); err != nil {
					t.Errorf("with only the echo denied, %s's DNS must still answer: %v", d.owner.Name, err)
				}
				// Dropped for good, not a transient: every check of a 3 s
				// window fails.
				series, err := probeLoopReady(ctx, d.peer, pod, "", []string{"http", url, want}, 300*time.Millisecond, 50*time.Millisecond, 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range series {
					if p.ok {
						t.Errorf("denied %s answered at %s", url, p.at.Format(time.RFC3339Nano))
					}
				}
				t.Logf("denied %s: %d checks over 3s, none answered", url, len(series))
				if err := setIngress(ctx, nil); err != nil {
					t.Fatal(err)
				}
				restored = true
				expectEcho(ctx, t, d.peer, pod, url, d.owner.Name, 30*time.Second)
				return ctx
			}).Feature())
	}
	testenv.Test(t, fs...)
}

// The cluster address of each cluster sits on its active broker's pod,
// where the broker's metrics listen on every address (:8080). A client of
// the peer cluster reaches them through the mesh on no attempt of a 3 s
// window (KUBELINK-LOCAL drops it), while a client of the cluster itself
// reaches the same socket at the pod's IP: the port is open, only not to
// the mesh. (MeshService ports on the cluster address stay reachable:
// TestKubelinkctlVerify.)
func TestClusterAddressOpensNoBrokerSocket(t *testing.T) {
	var fs []features.Feature
	for _, d := range []struct{ owner, peer *Cluster }{{lab.A, lab.B}, {lab.B, lab.A}} {
		fs = append(fs, features.New("cluster address of "+d.owner.Name).Assess(d.peer.Name+" cannot open the broker pod's metrics port on "+d.owner.Name+"'s cluster address",
			func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
				local, err := d.owner.Link(ctx, d.owner.Name)
				if err != nil {
					t.Fatal(err)
				}
				addr, _, _ := strings.Cut(local.Spec.ClusterAddress, "/")
				podIP := local.Status.GatewayPod
				if addr == "" || podIP == "" {
					t.Fatalf("%s: LocalLink has cluster address %q and gateway pod %q", d.owner.Name, addr, podIP)
				}
				// Control: the socket exists, seen from inside the cluster.
				if _, err := d.owner.Wget(ctx, anyClient(ctx, t, d.owner), "http://"+podIP+":8080/metrics"); err != nil {
					t.Fatalf("control: %s's broker metrics at its pod IP %s:8080: %v", d.owner.Name, podIP, err)
				}
				pod := anyClient(ctx, t, d.peer)
				url := "http://" + addr + ":8080/metrics"
				for i := range 3 {
					out, err := d.peer.Wget(ctx, pod, url)
					switch {
					case err == nil:
						t.Fatalf("attempt %d: %s reached %s through the mesh: %.80q", i+1, d.peer.Name, url, out)
					case strings.Contains(err.Error(), "refused"):
						t.Fatalf("attempt %d: %s's connection to %s was refused, i.e. it reached the pod: %v", i+1, d.peer.Name, url, err)
					}
				}
				t.Logf("%s → %s: dropped on 3 of 3 attempts; the same port answers at the pod IP %s inside %s", d.peer.Name, url, podIP, d.owner.Name)
				return ctx
			}).Feature())
	}
	testenv.TestInParallel(t, fs...)
}
