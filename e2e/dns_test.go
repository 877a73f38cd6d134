//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// scaleBrokers sets the replicas of cluster c's broker Deployment.
func scaleBrokers(ctx context.Context, c *Cluster, n int32) error {
	var d appsv1.Deployment
	if err := c.Res.Get(ctx, "kubelink-broker", "kubelink", &d); err != nil {
		return err
	}
	d.Spec.Replicas = &n
	return c.Res.Update(ctx, &d)
}

// resolves reports whether name resolves from pod (busybox nslookup through
// the cluster DNS); an error means it does not.
func resolves(ctx context.Context, c *Cluster, pod, name string) error {
	out, err := c.Exec(ctx, pod, "timeout", "3", "busybox", "nslookup", name)
	if err != nil {
		return fmt.Errorf("%s does not resolve: %v", name, err)
	}
	if !strings.Contains(out, "Address") || strings.Contains(out, "NXDOMAIN") {
		return fmt.Errorf("%s: %s", name, strings.TrimSpace(out))
	}
	return nil
}

func TestMeshDNSFollowsLinkHealth(t *testing.T) {
	const name = "echo.default.svc.b.kubelink"
	f := features.New("mesh DNS follows link health").
		Assess("B's brokers stopped: link Down, the name goes away; back: Up, the name returns", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			clients, err := lab.A.Clients(ctx)
			if err != nil || len(clients) == 0 {
				t.Fatalf("no client in A: %v", err)
			}
			var pod string
			for _, p := range clients {
				pod = p
				break
			}
			if err := resolves(ctx, lab.A, pod, name); err != nil {
				t.Fatalf("before: %v", err)
			}
			if err := scaleBrokers(ctx, lab.B, 0); err != nil {
				t.Fatal(err)
			}
			restored := false
			defer func() {
				if !restored {
					_ = scaleBrokers(context.Background(), lab.B, 2)
				}
			}()
			downAfter, err := Eventually(ctx, 60*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
				l, err := lab.A.Link(ctx, "b")
				if err != nil {
					return err
				}
				if l.Status.State == v1alpha1.StateUp {
					return fmt.Errorf("link b still Up")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Gone means NXDOMAIN from the kubelink CoreDNS (the block for b
			// was removed), not a timeout towards B's unreachable DNS.
			goneAfter, err := Eventually(ctx, 120*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
				out, _ := lab.A.Exec(ctx, pod, "timeout", "3", "busybox", "nslookup", name)
				if !strings.Contains(out, "NXDOMAIN") {
					return fmt.Errorf("%s: no NXDOMAIN yet: %s", name, strings.TrimSpace(out))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			l, _ := lab.A.Link(ctx, "b")
			t.Logf("link b %s %s after B's brokers stopped; %s gone %s later", l.Status.State, downAfter.Round(10*time.Millisecond), name, goneAfter.Round(10*time.Millisecond))
			fmt.Printf("BENCH e2e_dns_gone_after_down_seconds %.2f\n", goneAfter.Seconds())
			// make test proves 5 s against CoreDNS processes; here the kubelink
			// CoreDNS pod is rolled (a Secret volume is not re-read at once)
			// and an answer may sit in both caches (5 s each): measured 3.6–5.5 s.
			if goneAfter > 10*time.Second {
				t.Errorf("%s still resolved %s after the link left Up, want within 10s", name, goneAfter.Round(10*time.Millisecond))
			}

			if err := scaleBrokers(ctx, lab.B, 2); err != nil {
				t.Fatal(err)
			}
			restored = true
			upAfter, err := Eventually(ctx, 120*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
				l, err := lab.A.Link(ctx, "b")
				if err != nil {
					return err
				}
				if l.Status.State != v1alpha1.StateUp {
					return fmt.Errorf("link b %s", l.Status.State)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			backAfter, err := Eventually(ctx, 120*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
				return resolves(ctx, lab.A, pod, name)
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("link b Up %s after B's brokers were started again; %s resolves %s later", upAfter.Round(10*time.Millisecond), name, backAfter.Round(10*time.Millisecond))
			fmt.Printf("BENCH e2e_dns_back_after_up_seconds %.2f\n", backAfter.Seconds())
			expectEcho(ctx, t, lab.A, pod, echoURL(ctx, t, lab.B), "b", 30*time.Second)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
