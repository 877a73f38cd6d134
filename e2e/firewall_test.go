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

// B denies A's traffic to its echo Service with `ingress: ["!<ClusterIP>"]`
// on its link to A: A's requests are dropped while the rest of B's service
// network (its DNS) stays reachable; removing the rule lets them through.
func TestIngressDenyInB(t *testing.T) {
	setIngress := func(ctx context.Context, ingress []string) error {
		return lab.B.UpdateLink(ctx, "a", func(s *v1alpha1.KubeLinkSpec) { s.Ingress = ingress })
	}
	f := features.New("ingress firewall").
		Assess("denied destination dropped, others reachable, rule removed: reachable again", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			echoIP, err := lab.B.ServiceIP(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			clients, _ := clientsAndGateway(ctx, t, lab.A)
			var pod string
			for _, p := range clients {
				pod = p
				break
			}
			url := "http://" + echoIP + "/"
			expectEcho(ctx, t, lab.A, pod, url, "b", 30*time.Second)
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
				if _, err := lab.A.Wget(ctx, pod, url); err == nil {
					return fmt.Errorf("%s still answers", url)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("B's deny rule for %s effective %s after the update", echoIP, took.Round(10*time.Millisecond))
			// The rest of B's service network: B's DNS answers A's lookups.
			if err := resolves(ctx, lab.A, pod, "echo.default.svc.b.kubelink"); err != nil {
				t.Errorf("with only the echo denied, B's DNS must still answer: %v", err)
			}
			// Still dropped a while later (not a transient).
			time.Sleep(2 * time.Second)
			if out, err := lab.A.Wget(ctx, pod, url); err == nil {
				t.Errorf("denied %s answered: %q", url, out)
			}
			if err := setIngress(ctx, nil); err != nil {
				t.Fatal(err)
			}
			restored = true
			expectEcho(ctx, t, lab.A, pod, url, "b", 30*time.Second)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
