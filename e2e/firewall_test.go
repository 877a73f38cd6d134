//go:build e2e

package e2e

import (
	"context"
	"fmt"
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
