//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/k8s/resources"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// expectEcho fetches url from pod until it answers with the echo of cluster want.
func expectEcho(ctx context.Context, t *testing.T, c *Cluster, pod, url, want string, timeout time.Duration) time.Duration {
	t.Helper()
	took, err := Eventually(ctx, timeout, 500*time.Millisecond, func(ctx context.Context) error {
		out, err := c.Wget(ctx, pod, url)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "echo from cluster "+want) {
			return fmt.Errorf("answer %q, want the echo of cluster %s", strings.TrimSpace(out), want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s/%s → %s: %v", c.Name, pod, url, err)
	}
	t.Logf("%s/%s → %s: echo of cluster %s (after %s)", c.Name, pod, url, want, took.Round(time.Millisecond))
	return took
}

// gatewayNode is the node name of cluster c's current gateway (LocalLink status).
func gatewayNode(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	ll, err := c.Link(ctx, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if ll.Status.Gateway == "" {
		t.Fatalf("LocalLink %s has no gateway in its status: %+v", c.Name, ll.Status)
	}
	n, err := c.NodeName(ctx, ll.Status.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// echoURL is the URL of cluster c's echo Service by ClusterIP.
func echoURL(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	ip, err := c.ServiceIP(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + ip + "/"
}

// anyClient is one of cluster c's client pods (which node it runs on does
// not matter to the caller).
func anyClient(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	clients, err := c.Clients(ctx)
	if err != nil || len(clients) == 0 {
		t.Fatalf("no client pod in %s: %v", c.Name, err)
	}
	for _, p := range clients {
		return p
	}
	return ""
}

// clientsAndGateway are cluster c's client pods by node and its gateway node.
func clientsAndGateway(ctx context.Context, t *testing.T, c *Cluster) (map[string]string, string) {
	t.Helper()
	clients, err := c.Clients(ctx)
	if err != nil || len(clients) == 0 {
		t.Fatalf("no client pods in %s: %v", c.Name, err)
	}
	return clients, gatewayNode(ctx, t, c)
}

func TestCrossClusterByClusterIP(t *testing.T) {
	f := features.New("cross-cluster traffic by ClusterIP").
		Assess("A → B from a pod on the gateway node and from a pod on the other node", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			url := echoURL(ctx, t, lab.B)
			clients, gw := clientsAndGateway(ctx, t, lab.A)
			if len(clients) < 2 || clients[gw] == "" {
				t.Fatalf("want client pods on both nodes of A incl. the gateway node %s, have %v", gw, clients)
			}
			for node, pod := range clients {
				t.Logf("client %s on node %s (gateway: %v)", pod, node, node == gw)
				expectEcho(ctx, t, lab.A, pod, url, "b", 30*time.Second)
			}
			return ctx
		}).
		Assess("B → A", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			url := echoURL(ctx, t, lab.A)
			clients, _ := clientsAndGateway(ctx, t, lab.B)
			for _, pod := range clients {
				expectEcho(ctx, t, lab.B, pod, url, "a", 30*time.Second)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestCrossClusterByDNSName(t *testing.T) {
	f := features.New("cross-cluster traffic by mesh DNS name").
		Assess("A resolves and reaches echo.default.svc.b.kubelink, B echo.default.svc.a.kubelink", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, tc := range []struct {
				from *Cluster
				to   string
			}{{lab.A, "b"}, {lab.B, "a"}, {lab.A, "a"}} {
				clients, err := tc.from.Clients(ctx)
				if err != nil || len(clients) == 0 {
					t.Fatalf("no client pod in %s: %v", tc.from.Name, err)
				}
				for _, pod := range clients {
					expectEcho(ctx, t, tc.from, pod, "http://echo.default.svc."+tc.to+".kubelink/", tc.to, 60*time.Second)
					break
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestDataPlaneAndPodMode(t *testing.T) {
	f := features.New("data plane and pod mode").
		Assess("status names the data plane of LAB_MODE and the broker pod as gateway", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range []*Cluster{lab.A, lab.B} {
				ll, err := c.Link(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: dataPlane %q gateway %s gatewayPod %s", c.Name, ll.Status.DataPlane, ll.Status.Gateway, ll.Status.GatewayPod)
				if !strings.HasPrefix(ll.Status.DataPlane, lab.Mode) {
					t.Errorf("%s: status.dataPlane %q, want the %s data plane", c.Name, ll.Status.DataPlane, lab.Mode)
				}
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var ips []string
				for _, p := range pods {
					ips = append(ips, p.Status.PodIP)
				}
				if ll.Status.GatewayPod == "" || !slices.Contains(ips, ll.Status.GatewayPod) {
					t.Errorf("%s: status.gatewayPod %q is not a broker pod IP %v (pod mode)", c.Name, ll.Status.GatewayPod, ips)
				}
			}
			return ctx
		}).
		Assess("the broker runs unprivileged: NET_ADMIN and NET_RAW only, no privileged container in its pod", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range []*Cluster{lab.A, lab.B} {
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pods {
					// The chart's default (ipForwarding: broker): the broker
					// turns forwarding on itself, so the pod has no init
					// container, asks for no sysctl, and no container of it
					// is privileged (the lab's kubelets allow no unsafe
					// sysctl).
					if len(p.Spec.InitContainers) != 0 || p.Spec.SecurityContext != nil && len(p.Spec.SecurityContext.Sysctls) != 0 {
						t.Errorf("%s: pod %s has init containers %v or sysctls, want neither by default", c.Name, p.Name, p.Spec.InitContainers)
					}
					for _, ct := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
						if sc := ct.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
							t.Errorf("%s: pod %s container %s is privileged", c.Name, p.Name, ct.Name)
						}
					}
					if p.Status.Phase != corev1.PodRunning {
						continue
					}
					// The effective capabilities of the broker process (PID 1 of
					// its container): bits 12 (NET_ADMIN) and 13 (NET_RAW).
					var out, errb bytes.Buffer
					if err := c.Res.ExecInPod(ctx, "kubelink", p.Name, "broker", []string{"cat", "/proc/1/status"}, &out, &errb); err != nil {
						t.Errorf("%s: reading the capabilities of %s: %v (%s)", c.Name, p.Name, err, errb.String())
						continue
					}
					var capEff string
					for _, line := range strings.Split(out.String(), "\n") {
						if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
							capEff = strings.TrimSpace(v)
						}
					}
					t.Logf("%s: broker %s CapEff %s", c.Name, p.Name, capEff)
					if capEff != "0000000000003000" {
						t.Errorf("%s: broker %s has effective capabilities %q, want 0000000000003000 (NET_ADMIN, NET_RAW)", c.Name, p.Name, capEff)
					}
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// activeBroker is the pod holding the broker Lease.
func activeBroker(ctx context.Context, c *Cluster) (string, error) {
	var lease coordinationv1.Lease
	if err := c.Res.Get(ctx, "kubelink-broker", "kubelink", &lease); err != nil {
		return "", err
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return "", fmt.Errorf("lease kubelink-broker has no holder")
	}
	return *lease.Spec.HolderIdentity, nil
}

// failoverBudget is the regression bound on how long traffic may stop when
// the active broker pod of a cluster is deleted (each direction once in
// `make e2e`). It is not the goal (2 s, issue #11; the figures are
// `make lab-bench`'s, docs/benchmarks.md): on this 2-core machine the lab
// measured 0–7.6 s over many runs, so 15 s fails only on a real
// regression (no hand-over, a stuck Lease, a lost route), never on noise.
const failoverBudget = 15 * time.Second

func TestBrokerFailover(t *testing.T) {
	var fs []features.Feature
	for _, d := range []struct{ from, to *Cluster }{{lab.A, lab.B}, {lab.B, lab.A}} {
		fs = append(fs, features.New("broker failover in "+d.from.Name).Assess(fmt.Sprintf("deleting the active broker pod of %s: traffic %s → %s back within the budget", d.from.Name, d.from.Name, d.to.Name),
			func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
				url := echoURL(ctx, t, d.to)
				var took, blips []float64
				for run := 1; run <= runs(t); run++ {
					outage, disrupted := failoverOnce(ctx, t, run, d.from, d.to, url)
					took, blips = append(took, outage.Seconds()), append(blips, disrupted.Seconds())
				}
				distribution(t, "failover_disrupted_"+d.from.Name+"_seconds", blips)
				worst := distribution(t, "failover_"+d.from.Name+"_seconds", took)
				if worst > failoverBudget.Seconds() {
					t.Errorf("worst failover %.2fs, regression bound %s", worst, failoverBudget)
				}
				// The other way also works after the last one (it reaches the
				// failed-over cluster through its NodePort).
				back, _ := clientsAndGateway(ctx, t, d.to)
				for _, p := range back {
					expectEcho(ctx, t, d.to, p, echoURL(ctx, t, d.from), d.from.Name, 30*time.Second)
				}
				return ctx
			}).Feature())
	}
	testenv.Test(t, fs...)
}

// failoverOnce deletes the active broker pod of cluster from while a client
// there fetches to's echo every 50 ms, and returns how long fetches failed
// (from the delete to the first success after the last outage) and how
// long any check failed (from the delete to the first success after the
// last failed check, however short the run of failures). The
// client runs on a node other than the gateway's where the cluster has one
// (its traffic crosses a node to the gateway). The series must pass before
// the delete and keep passing for the rest of the window.
func failoverOnce(ctx context.Context, t *testing.T, run int, from, to *Cluster, url string) (outage, disruption time.Duration) {
	t.Helper()
	waitStandby(ctx, t, from)
	clients, gw := clientsAndGateway(ctx, t, from)
	var pod string
	for node, p := range clients {
		if pod == "" || node != gw {
			pod = p
		}
	}
	if pod == "" {
		t.Fatalf("no client in %s: %v", from.Name, clients)
	}
	if len(clients) > 1 && clients[gw] == pod {
		t.Fatalf("no client outside the gateway node %s of %s: %v", gw, from.Name, clients)
	}
	expectEcho(ctx, t, from, pod, url, to.Name, 30*time.Second)
	active, err := activeBroker(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	var victim corev1.Pod
	if err := from.Res.Get(ctx, active, "kubelink", &victim); err != nil {
		t.Fatalf("active broker %s of %s: %v", active, from.Name, err)
	}
	if _, err := installProber(ctx, from, pod); err != nil {
		t.Fatal(err)
	}
	// long enough to see traffic back within the budget and then unbroken
	// for 5 s; the probe ends earlier once every check of failoverSettle
	// passed after the Service followed the Lease to the new holder.
	const window = failoverBudget + 7*time.Second
	over := fmt.Sprintf("/tmp/kubelink-failover-%d", time.Now().UnixNano())
	done, err := startProbe(ctx, from, pod, []string{"http", url, "echo from cluster " + to.Name},
		300*time.Millisecond, 50*time.Millisecond, window, settleFlags(over, failoverSettle)...)
	if err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	t0 := time.Now()
	if err := from.Res.Delete(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	moved, err := Eventually(ctx, 10*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		if holder, err := activeBroker(ctx, from); err != nil || holder == active {
			return fmt.Errorf("the Lease of %s is still with %s (%v)", from.Name, active, err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("run %d: %v", run, err)
	}
	// The Service follows the Lease: its one EndpointSlice names the new
	// holder's pod (written once its data plane is up).
	if _, err := Eventually(ctx, 10*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		return sliceFollowsLease(ctx, from)
	}); err != nil {
		t.Errorf("run %d: %v", run, err)
	}
	if err := endEvent(ctx, from, pod, over); err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("run %d: probe: %v", run, r.err)
	}
	took, tail, fails, flaps, err := recovered(r.series, t0)
	if err != nil {
		t.Fatalf("run %d: traffic %s → %s did not come back after deleting %s: %v", run, from.Name, to.Name, active, err)
	}
	if tail < 5*time.Second {
		t.Errorf("run %d: traffic back after %s but the window ended %s later; want ≥ 5s of unbroken traffic", run, took.Round(10*time.Millisecond), tail.Round(10*time.Millisecond))
	}
	now, _ := activeBroker(ctx, from)
	blip := disrupted(r.series, t0)
	t.Logf("FAILOVER %s run %d: deleted %s; Lease moved after %s to %s; %d of %d checks failed, the last until %s; traffic %s → %s back after %s, then for %s with %d flap(s) (fewer than %d failed checks in a row)",
		from.Name, run, active, moved.Round(10*time.Millisecond), now, fails, len(r.series), blip.Round(10*time.Millisecond), from.Name, to.Name, took.Round(10*time.Millisecond), tail.Round(10*time.Millisecond), flaps, outageRun)
	return took, blip
}

// failoverSettle is how long traffic must pass in every check, after the
// broker Service followed the Lease to the new holder, before a failover's
// probe ends (it ends at its window otherwise).
const failoverSettle = 10 * time.Second

// sliceFollowsLease checks that the Service kubelink-broker of c reaches
// exactly the Lease holder: its EndpointSlice kubelink-broker-active names
// that pod's address, ready, and no other slice of the Service exists.
func sliceFollowsLease(ctx context.Context, c *Cluster) error {
	holder, err := activeBroker(ctx, c)
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := c.Res.Get(ctx, holder, "kubelink", &pod); err != nil {
		return fmt.Errorf("the Lease holder %s: %w", holder, err)
	}
	var list discoveryv1.EndpointSliceList
	if err := c.In("kubelink").List(ctx, &list, resources.WithLabelSelector(discoveryv1.LabelServiceName+"=kubelink-broker")); err != nil {
		return err
	}
	if len(list.Items) != 1 || list.Items[0].Name != "kubelink-broker-active" {
		var names []string
		for _, s := range list.Items {
			names = append(names, s.Name)
		}
		return fmt.Errorf("the Service kubelink-broker of %s has the EndpointSlices %v, want only kubelink-broker-active", c.Name, names)
	}
	eps := list.Items[0].Endpoints
	if len(eps) != 1 || len(eps[0].Addresses) != 1 || eps[0].Addresses[0] != pod.Status.PodIP || eps[0].TargetRef == nil ||
		eps[0].TargetRef.Name != holder || eps[0].Conditions.Ready == nil || !*eps[0].Conditions.Ready {
		return fmt.Errorf("the EndpointSlice of %s names %+v, want the Lease holder %s at %s", c.Name, eps, holder, pod.Status.PodIP)
	}
	return nil
}

// TestDrainTakesOneBrokerAtATime: both brokers are Ready (the EndpointSlice,
// not readiness, tells the active one), so the chart's PodDisruptionBudget
// lets a drain evict the active broker while its standby is Ready, refuses
// to evict the second one until the replacement is Ready, and the Service
// follows the Lease to the standby; traffic a → b comes back.
func TestDrainTakesOneBrokerAtATime(t *testing.T) {
	f := features.New("a drain of a's brokers").Assess("the PodDisruptionBudget evicts the active broker, refuses the second, and the Service follows the Lease",
		func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := lab.A
			waitStandby(ctx, t, c)
			cs, err := kubernetes.NewForConfig(c.rest)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Eventually(ctx, 60*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				pdb, err := cs.PolicyV1().PodDisruptionBudgets("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
				if err != nil {
					return err
				}
				if pdb.Status.CurrentHealthy != 2 || pdb.Status.DisruptionsAllowed != 1 {
					return fmt.Errorf("PodDisruptionBudget kubelink-broker: %d healthy, %d disruptions allowed; want both brokers Ready and one allowed",
						pdb.Status.CurrentHealthy, pdb.Status.DisruptionsAllowed)
				}
				return sliceFollowsLease(ctx, c)
			}); err != nil {
				t.Fatal(err)
			}
			active, err := activeBroker(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			pods, err := c.BrokerPods(ctx)
			if err != nil {
				t.Fatal(err)
			}
			evict := func(name string) error {
				return cs.PolicyV1().Evictions("kubelink").Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kubelink"}})
			}
			if err := evict(active); err != nil {
				t.Fatalf("evicting the active broker %s while its standby is Ready: %v", active, err)
			}
			for _, p := range pods {
				if p.Name == active {
					continue
				}
				if err := evict(p.Name); !apierrors.IsTooManyRequests(err) {
					t.Errorf("evicting the second broker %s right after the first: %v, want a refusal by the PodDisruptionBudget (429)", p.Name, err)
				}
			}
			if _, err := Eventually(ctx, 20*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
				if holder, err := activeBroker(ctx, c); err != nil || holder == active {
					return fmt.Errorf("the Lease is still with the evicted %s (%v)", active, err)
				}
				return sliceFollowsLease(ctx, c)
			}); err != nil {
				t.Error(err)
			}
			clients, _ := clientsAndGateway(ctx, t, c)
			for _, p := range clients {
				expectEcho(ctx, t, c, p, echoURL(ctx, t, lab.B), lab.B.Name, 30*time.Second)
			}
			// The lab as it was for the next test: two Ready brokers, the
			// budget whole again, the Service on the Lease holder.
			waitStandby(ctx, t, c)
			if _, err := Eventually(ctx, 60*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				pdb, err := cs.PolicyV1().PodDisruptionBudgets("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
				if err != nil {
					return err
				}
				if pdb.Status.CurrentHealthy != 2 {
					return fmt.Errorf("PodDisruptionBudget kubelink-broker: %d healthy, want 2", pdb.Status.CurrentHealthy)
				}
				return sliceFollowsLease(ctx, c)
			}); err != nil {
				t.Error(err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// activeBrokerIP is the pod IP of the broker holding c's Lease.
func activeBrokerIP(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	name, err := activeBroker(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := c.Res.Get(ctx, name, "kubelink", &p); err != nil {
		t.Fatalf("the active broker pod %s: %v", name, err)
	}
	if p.Status.PodIP == "" {
		t.Fatalf("the active broker pod %s has no IP", name)
	}
	return p.Status.PodIP
}

// brokerMetrics reads the broker's metrics (brokerMetricsText) and returns
// each series' value summed over its labels, by name; for
// kubelink_link_up, the number of series of the scale test's links
// (lab-scale counts them down to zero after deleting those links).
func brokerMetrics(ctx context.Context, c *Cluster, ip string) (map[string]float64, error) {
	out, err := brokerMetricsText(ctx, c, ip, 5*time.Second)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || strings.HasPrefix(l, "#") {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if name == "kubelink_link_up" && !strings.Contains(f[0], `link="scale`) {
			continue // only the scale links' series count (see the deletion)
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		if name == "kubelink_link_up" {
			v = 1 // a series, whatever its value
		}
		m[name] += v
	}
	if _, ok := m["process_resident_memory_bytes"]; !ok {
		return nil, fmt.Errorf("the broker's metrics at %s:8080 have no process_resident_memory_bytes", ip)
	}
	return m, nil
}

// brokerMetricsText reads the /metrics of the broker pod at podIP, from c's
// control-plane node (which reaches the pod network), within timeout.
func brokerMetricsText(ctx context.Context, c *Cluster, podIP string, timeout time.Duration) (string, error) {
	out, err := exec.CommandContext(ctx, "/usr/bin/docker", "exec", "lab-"+c.Name+"-control-plane",
		"curl", "-sf", "--max-time", strconv.Itoa(int(timeout.Seconds())), "http://"+podIP+":8080/metrics").Output()
	if err != nil {
		return "", fmt.Errorf("the broker's metrics at %s:8080: %w", podIP, err)
	}
	return string(out), nil
}

// waitStandby waits until cluster c has two running broker pods (one active,
// one standby), so that a failover has somewhere to go.
func waitStandby(ctx context.Context, t *testing.T, c *Cluster) {
	t.Helper()
	if _, err := Eventually(ctx, 120*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
		pods, err := c.BrokerPods(ctx)
		if err != nil {
			return err
		}
		// A broker serves /metrics once its cache has synced, right before
		// it runs for the Lease: from then on it can take over.
		serving := 0
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				continue
			}
			out, err := brokerMetricsText(ctx, c, p.Status.PodIP, 2*time.Second)
			if err == nil && strings.Contains(out, "kubelink_broker_active") {
				serving++
			}
		}
		if serving < 2 {
			return fmt.Errorf("%d of 2 broker pods serve (cache synced, running for the Lease)", serving)
		}
		if _, err := activeBroker(ctx, c); err != nil {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("cluster %s: no standby broker: %v", c.Name, err)
	}
}

func TestRouterRestartKeepsRoutes(t *testing.T) {
	var fs []features.Feature
	for _, d := range []struct{ c, peer *Cluster }{{lab.A, lab.B}, {lab.B, lab.A}} {
		fs = append(fs, features.New("router restart in "+d.c.Name).Assess(fmt.Sprintf("deleting every router pod of %s loses no route; the restarted routers keep them; traffic to %s flows", d.c.Name, d.peer.Name),
			func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
				routerRestart(ctx, t, d.c, d.peer)
				return ctx
			}).Feature())
	}
	testenv.Test(t, fs...)
}

func routerRestart(ctx context.Context, t *testing.T, c, peer *Cluster) {
	t.Helper()
	var nodes corev1.NodeList
	if err := c.Res.List(ctx, &nodes); err != nil {
		t.Fatal(err)
	}
	before := map[string][]string{}
	for _, n := range nodes.Items {
		r, err := NodeRoutes(ctx, n.Name, 77)
		if err != nil {
			t.Fatal(err)
		}
		if len(r) == 0 {
			t.Fatalf("node %s has no router routes (protocol 77)", n.Name)
		}
		before[n.Name] = r
		t.Logf("%s: %v", n.Name, r)
	}
	var pods corev1.PodList
	if err := c.In("kubelink").List(ctx, &pods, resourcesLabel("app.kubernetes.io/name=kubelink-router")); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if err := c.Res.Delete(ctx, &pods.Items[i], deleteNow()); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		for node, want := range before {
			got, err := NodeRoutes(ctx, node, 77)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range want {
				if !slices.Contains(got, r) {
					t.Errorf("%s: route %q lost %s (now %v)", node, r, when, got)
				}
			}
		}
	}
	// every route is there all the time the routers are gone and starting
	checks := 0
	if _, err := Eventually(ctx, 120*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		check("while the routers restarted")
		checks++
		var ps corev1.PodList
		if err := c.In("kubelink").List(ctx, &ps, resourcesLabel("app.kubernetes.io/name=kubelink-router")); err != nil {
			return err
		}
		ready := 0
		for _, p := range ps.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Ready && p.DeletionTimestamp == nil {
					ready++
				}
			}
		}
		if ready != len(nodes.Items) {
			return fmt.Errorf("%d of %d routers running", ready, len(nodes.Items))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// and through the first passes of the new routers: checked every
	// 250 ms for 3 s, not once after a pause
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) && !t.Failed() {
		check("after the routers restarted")
		checks++
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s: %d route checks on %d nodes while and after the routers restarted", c.Name, checks, len(nodes.Items))
	clients, _ := clientsAndGateway(ctx, t, c)
	for _, p := range clients {
		expectEcho(ctx, t, c, p, echoURL(ctx, t, peer), peer.Name, 10*time.Second)
	}
}

func TestInvalidKubeLink(t *testing.T) {
	bad := func() *v1alpha1.KubeLink {
		return &v1alpha1.KubeLink{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-invalid"},
			Spec:       v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.99/24", CIDR: "100.64.48.1/20", Endpoint: "192.0.2.1:30777"},
		}
	}
	var saved *apiextensionsv1.CustomResourceDefinition
	f := features.New("invalid KubeLink").
		Assess("the API server rejects it with a message naming the field", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			err := lab.A.Res.Create(ctx, bad())
			if err == nil {
				_ = lab.A.Res.Delete(ctx, bad())
				t.Fatal("a KubeLink with host bits in spec.cidr was accepted")
			}
			t.Logf("rejected: %v", err)
			if !strings.Contains(err.Error(), "spec.cidr") || !strings.Contains(err.Error(), "no host bits") {
				t.Errorf("message %q does not name spec.cidr and the problem", err)
			}
			return ctx
		}).
		Assess("one stored past validation (an older CRD) shows Invalid with a message; link b stays Up", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			var err error
			if saved, err = openKubeLinkSchema(ctx, lab.A); err != nil {
				t.Fatal(err)
			}
			if _, err := Eventually(ctx, 20*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				return lab.A.Res.Create(ctx, bad())
			}); err != nil {
				t.Fatal(err)
			}
			var got *v1alpha1.KubeLink
			if _, err := Eventually(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				l, err := lab.A.Link(ctx, "e2e-invalid")
				if err != nil {
					return err
				}
				got = l
				if l.Status.State != v1alpha1.StateInvalid {
					return fmt.Errorf("state %q", l.Status.State)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			t.Logf("e2e-invalid: %s: %s", got.Status.State, got.Status.Message)
			if !strings.Contains(got.Status.Message, "did you mean 100.64.48.0/20") {
				t.Errorf("message %q does not say what is wrong", got.Status.Message)
			}
			b, err := lab.A.Link(ctx, "b")
			if err != nil || b.Status.State != v1alpha1.StateUp {
				t.Errorf("link b: %v %+v", err, b.Status)
			}
			clients, _ := clientsAndGateway(ctx, t, lab.A)
			for _, p := range clients {
				expectEcho(ctx, t, lab.A, p, echoURL(ctx, t, lab.B), "b", 10*time.Second)
				break
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			if err := lab.A.Res.Delete(ctx, bad()); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
			if saved != nil {
				if err := restoreSchema(ctx, lab.A, saved); err != nil {
					t.Errorf("restoring the KubeLink CRD: %v", err)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// openKubeLinkSchema drops the validation of the KubeLink CRD (as if the
// object had been stored under an older CRD) and returns the original.
func openKubeLinkSchema(ctx context.Context, c *Cluster) (*apiextensionsv1.CustomResourceDefinition, error) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Res.Get(ctx, "kubelinks.kubelink.mandelsoft.org", "", &crd); err != nil {
		return nil, err
	}
	orig := crd.DeepCopy()
	yes := true
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &yes}
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.XValidations = nil
	return orig, c.Res.Update(ctx, &crd)
}

func restoreSchema(ctx context.Context, c *Cluster, orig *apiextensionsv1.CustomResourceDefinition) error {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Res.Get(ctx, orig.Name, "", &crd); err != nil {
		return err
	}
	crd.Spec = orig.Spec
	return c.Res.Update(ctx, &crd)
}

// A connection to a peer's Service without endpoints is refused at once:
// kube-proxy there rejects it with an ICMP error from a node address,
// which the peer's gateway sends on with its cluster address as source
// (the receiving gateway drops sources the link does not own). Without
// that, the client would only time out, and so would path MTU discovery
// through the mesh.
func TestPeerRejectionReachesTheClient(t *testing.T) {
	for _, d := range [][2]*Cluster{{lab.A, lab.B}, {lab.B, lab.A}} {
		from, to := d[0], d[1]
		t.Run(from.Name+"-to-"+to.Name, func(t *testing.T) {
			ctx := context.Background()
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "e2e-no-endpoints", Namespace: "default"},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "e2e-nothing"}, Ports: []corev1.ServicePort{{Port: 80}}}}
			to.CreateFresh(ctx, t, svc)
			ip, err := to.ServiceIP(ctx, svc.Name)
			if err != nil {
				t.Fatal(err)
			}
			pod := anyClient(ctx, t, from)
			// Until kube-proxy in to has programmed the Service, packets to
			// it go unanswered; then each attempt must be refused within
			// wget's 3 s bound.
			took, err := Eventually(ctx, 60*time.Second, time.Second, func(ctx context.Context) error {
				start := time.Now()
				_, err := from.Wget(ctx, pod, "http://"+ip+"/")
				switch {
				case err == nil:
					return fmt.Errorf("a Service without endpoints answered")
				case !strings.Contains(err.Error(), "refused"):
					return fmt.Errorf("not refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s → %s's Service %s without endpoints: %v", from.Name, to.Name, ip, err)
			}
			t.Logf("%s → %s's Service %s without endpoints: refused (after %s)", from.Name, to.Name, ip, took.Round(time.Millisecond))
		})
	}
}
