package clusterlab

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// apiOutage is how long the API servers stay unreachable.
const apiOutage = 60 * time.Second

// An API outage of 60 s in both clusters (every broker and router cut off
// from its API server: connections refused and reset) loses no traffic in
// either direction, in either data plane, and flips no gateway: A's active
// broker stays active (its standby stays standby) during the outage and
// after the API is back.
func TestAPIOutageLosesNoTraffic(t *testing.T) {
	for _, plane := range []string{"wireguard", "bridge"} {
		t.Run(plane, func(t *testing.T) {
			// The two planes' labs share nothing (own namespaces, control
			// planes and processes) and spend the outage mostly waiting:
			// side by side they take one outage's time, not two.
			t.Parallel()
			lab := New(t, 2)
			a, b := lab.Clusters[0], lab.Clusters[1]
			a.StartRouter(lab)
			b.StartRouter(lab)
			var aFlags, bFlags []string
			if plane == "bridge" {
				ca := NewBridgeCA(t)
				aFlags, bFlags = BridgeFlags(ca.CertDir(t, a)), BridgeFlags(ca.CertDir(t, b))
			}
			active := a.StartBroker(lab, a.GW, aFlags...)
			waitFor(t, "the first broker of A to become active", 10*time.Second, func() bool {
				body, err := Get(a.GW, metricsAddr, "/readyz", time.Second)
				return err == nil && strings.Contains(body, "ok")
			})
			standby := a.StartBroker(lab, a.GW2, aFlags...)
			b.StartBroker(lab, b.GW, bFlags...)
			if plane == "bridge" {
				a.Apply(a.LocalLink(), BridgeLinkTo(b))
				b.Apply(b.LocalLink(), BridgeLinkTo(a))
			} else {
				Connect(a, b)
			}
			WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second)
			WaitGet(t, b.Pod, a.ServiceIP, 10*time.Second)

			a.SetAPIDown(true)
			b.SetAPIDown(true)
			down := time.Now()
			var requests, failures int
			var firstFailure string
			checkRoles := func(when string) {
				if _, err := Get(a.GW, metricsAddr, "/readyz", time.Second); err != nil {
					t.Errorf("%s: A's active broker is no longer ready: %v", when, err)
				}
				if _, err := Get(a.GW2, metricsAddr, "/readyz", time.Second); err == nil || !strings.Contains(err.Error(), "503") {
					t.Errorf("%s: A's standby broker /readyz: %v, want 503", when, err)
				}
			}
			get := func(from *nstest.Namespace, to *Cluster) {
				requests++
				if _, err := Get(from, to.ServiceIP, "/", 2*time.Second); err != nil {
					failures++
					if firstFailure == "" {
						firstFailure = fmt.Sprintf("%s after %s: %v", from.Name, time.Since(down).Round(time.Millisecond), err)
					}
				}
			}
			unrenewed := false
			for time.Since(down) < apiOutage {
				get(a.Pod, b)
				get(b.Pod, a)
				if !unrenewed && time.Since(down) > 10*time.Second {
					if v, ok := Metric(a.GW, "kubelink_broker_lease_unrenewed"); ok && v == 1 {
						unrenewed = true
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			checkRoles("at the end of the outage")
			if !unrenewed {
				t.Error("A's active broker never reported kubelink_broker_lease_unrenewed 1 during the outage")
			}
			a.SetAPIDown(false)
			b.SetAPIDown(false)
			back := time.Now()
			for time.Since(back) < 15*time.Second {
				get(a.Pod, b)
				get(b.Pod, a)
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: %d requests during the %s outage and 15 s after, %d failed", plane, requests, apiOutage, failures)
			if failures > 0 {
				t.Errorf("%d of %d requests failed; the first: %s", failures, requests, firstFailure)
			}
			checkRoles("15 s after the outage")
			kl, err := a.Link("a")
			if err != nil {
				t.Fatal(err)
			}
			if kl.Status.Gateway != a.GWIP.String() {
				t.Errorf("A's gateway is %q after the outage, want %s (no flip)", kl.Status.Gateway, a.GWIP)
			}
			WaitMetric(t, a.GW, "kubelink_broker_lease_unrenewed", 5*time.Second, func(v float64) bool { return v == 0 })
			for _, p := range []*Process{active, standby} {
				if p.Exited() {
					t.Errorf("%s exited:\n%s", p.Name, p.Output())
				}
			}
		})
	}
}
