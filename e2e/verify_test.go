//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// kubelinkctl runs bin/kubelinkctl (make e2e builds it) against the lab's
// clusters; it returns stdout, stderr and the error.
func kubelinkctl(ctx context.Context, t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("..", "bin", "kubelinkctl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (make e2e builds it: make kubelinkctl)", bin, err)
	}
	var kcs []string
	for _, c := range lab.Members() {
		kcs = append(kcs, c.Kubeconfig)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+strings.Join(kcs, ":"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// labContexts are --context flags for every cluster of the lab.
func labContexts() []string {
	var args []string
	for _, c := range lab.Members() {
		args = append(args, "--context", "kind-lab-"+c.Name)
	}
	return args
}

type junitReport struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Cases    []struct {
		Name    string    `xml:"name,attr"`
		Failure *struct{} `xml:"failure"`
	} `xml:"testcase"`
}

func readJUnit(t *testing.T, path string) junitReport {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the JUnit report: %v", err)
	}
	var r junitReport
	if err := xml.Unmarshal(b, &r); err != nil {
		t.Fatalf("the JUnit report: %v\n%s", err, b)
	}
	return r
}

// wantChecks is how many checks verify runs: from every cluster to every
// other, from its agents (the gateway node and one other node where it has
// one) by ClusterIP and by DNS name, plus one path MTU check per pair.
func wantChecks(ctx context.Context, t *testing.T) int {
	n := 0
	for _, c := range lab.Members() {
		agents := len(LabNodes(c))
		if agents > 2 {
			agents = 2
		}
		n += (len(lab.Members()) - 1) * (agents*2 + 1)
	}
	return n
}

// kubelinkctl verify passes on the healthy lab, and diagnose finds no
// error there; with a link broken, verify fails naming the checks, and
// diagnose names the cause.
func TestKubelinkctlVerify(t *testing.T) {
	f := features.New("kubelinkctl verify").
		Assess("every check passes on the healthy lab, and the JUnit report says so", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			// A MeshService of b (a port of its cluster address to its
			// echo), which verify checks from every other cluster.
			ms := &v1alpha1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: "e2e-verify", Namespace: "default"},
				Spec: v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8801}},
					Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{
						{Port: intstr.FromInt32(8801), TargetPort: intstr.FromString("http")}}}}}}
			lab.B.CreateFresh(ctx, t, ms)
			if _, err := Eventually(ctx, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
				var cur v1alpha1.MeshService
				if err := lab.B.Res.Get(ctx, ms.Name, ms.Namespace, &cur); err != nil {
					return err
				}
				if cur.Status.State != v1alpha1.StateOk {
					return fmt.Errorf("MeshService e2e-verify is %q: %s", cur.Status.State, cur.Status.Message)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(t.TempDir(), "verify.xml")
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"verify", "--junit-report", report, "--timeout", "4m"}, labContexts()...)...)
			t.Logf("verify:\n%s%s", stderr, out)
			if err != nil {
				t.Fatalf("verify failed on the healthy lab: %v", err)
			}
			r := readJUnit(t, report)
			if want := wantChecks(ctx, t) + len(lab.Members()) - 1; r.Tests != want || r.Failures != 0 {
				t.Errorf("JUnit report: %d checks, %d failed; want %d checks, none failed", r.Tests, r.Failures, want)
			}
			if table := strings.Join(strings.Fields(out), " "); !strings.Contains(table, "PASS a → MeshService default/e2e-verify of b (192.168.0.12:8801)") {
				t.Errorf("verify did not check the MeshService from a:\n%s", out)
			}
			if !strings.Contains(out, "path MTU") {
				t.Errorf("verify printed no path MTU:\n%s", out)
			}
			out, stderr, err = kubelinkctl(ctx, t, append([]string{"diagnose"}, labContexts()...)...)
			if err != nil || strings.Contains(out, "ERROR") {
				t.Errorf("diagnose of the healthy lab: %v\n%s%s", err, stderr, out)
			}
			out, stderr, err = kubelinkctl(ctx, t, append([]string{"diagnose", "--probe"}, labContexts()...)...)
			t.Logf("diagnose --probe:\n%s%s", stderr, out)
			if err != nil || strings.Contains(out, "ERROR") {
				t.Errorf("diagnose --probe of the healthy lab: %v", err)
			}
			for _, w := range []string{"b's endpoint", "path to b through the mesh: small requests PASS, upload of 64 KiB PASS"} {
				if !strings.Contains(stderr, w) {
					t.Errorf("diagnose --probe did not report %q", w)
				}
			}
			return ctx
		}).
		Assess("diagnose --probe names an endpoint that refuses", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			// b announces a port nothing listens on (only kubelinkctl reads
			// the announcement; the links keep their endpoint).
			const ann = "kubelink.mandelsoft.org/endpoint"
			local, err := lab.B.Link(ctx, "b")
			if err != nil {
				t.Fatal(err)
			}
			orig := local.Annotations[ann]
			host, _, _ := strings.Cut(orig, ":")
			set := func(ep string) error {
				var kl v1alpha1.KubeLink
				if err := lab.B.Res.Get(ctx, "b", "", &kl); err != nil {
					return err
				}
				kl.Annotations[ann] = ep
				return lab.B.Res.Update(ctx, &kl)
			}
			if err := set(host + ":1"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := set(orig); err != nil {
					t.Errorf("restoring b's endpoint annotation %s: %v", orig, err)
				}
			})
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"diagnose", "--probe"}, labContexts()...)...)
			t.Logf("diagnose --probe:\n%s%s", stderr, out)
			if err == nil || !strings.Contains(strings.Join(strings.Fields(out), " "), "b's endpoint "+host+":1 does not take") {
				t.Errorf("diagnose --probe (%v) does not name b's endpoint %s:1 as refusing", err, host)
			}
			return ctx
		}).
		Assess("benchmark measures both directions between a and b", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, what := range []string{"throughput", "latency"} {
				out, stderr, err := kubelinkctl(ctx, t, "benchmark", what, "--context", "kind-lab-a", "--context", "kind-lab-b",
					"--seconds", "3s", "--count", "100", "-o", "json", "--timeout", "3m")
				var rs []struct {
					From, To    string
					OK          bool
					Mbps, P50Ms float64
					Count       int
				}
				if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 2 {
					t.Fatalf("benchmark %s: %v\n%s%s", what, err, stderr, out)
				}
				for _, r := range rs {
					if !r.OK || (what == "throughput" && r.Mbps <= 0) || (what == "latency" && (r.Count != 100 || r.P50Ms <= 0)) {
						t.Errorf("benchmark %s %s → %s: %+v", what, r.From, r.To, r)
					}
				}
				t.Logf("benchmark %s: %s", what, out)
			}
			return ctx
		}).
		Assess("verify --failover replaces a's active broker and says how long traffic stopped", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			before, err := lab.A.BrokerPods(ctx)
			if err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(t.TempDir(), "verify.xml")
			out, stderr, err := kubelinkctl(ctx, t, "verify", "--failover", "--junit-report", report, "--timeout", "4m", "--context", "kind-lab-a", "--context", "kind-lab-b")
			t.Logf("verify --failover:\n%s%s", stderr, out)
			if err != nil {
				t.Fatalf("verify --failover: %v", err)
			}
			table := strings.Join(strings.Fields(out), " ")
			if !strings.Contains(table, "PASS a → b across a failover of a's broker") || !strings.Contains(table, "traffic stopped for") {
				t.Errorf("verify --failover printed no passing failover check with its figure")
			}
			if r := readJUnit(t, report); r.Failures != 0 || r.Tests == 0 {
				t.Errorf("JUnit report: %d checks, %d failed", r.Tests, r.Failures)
			}
			// The watch ended once traffic passed for the settle time after
			// the new broker published itself, not at the end of the window.
			if !strings.Contains(stderr, "took over and published itself") {
				t.Errorf("verify --failover did not see the new broker publish itself in a's LocalLink")
			}
			after, err := lab.A.BrokerPods(ctx)
			if err != nil {
				t.Fatal(err)
			}
			old := map[string]bool{}
			for _, p := range before {
				old[string(p.UID)] = true
			}
			replaced := false
			for _, p := range after {
				replaced = replaced || !old[string(p.UID)]
			}
			if !replaced {
				t.Errorf("no broker pod of a was replaced: verify --failover deleted none")
			}
			return ctx
		}).
		Assess("a broken link makes verify fail and name the checks", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			orig, err := lab.A.Link(ctx, "b")
			if err != nil {
				t.Fatal(err)
			}
			spec := orig.Spec
			// WireGuard: another key for b, so the tunnel fails both ways.
			// The bridge: a service CIDR that is not b's (a peer may dial
			// in, so a wrong endpoint alone would not break it): a no
			// longer routes b's Services there.
			var broken string
			var edit func(s *v1alpha1.KubeLinkSpec)
			if lab.Mode == "wireguard" {
				key := make([]byte, 32)
				rand.Read(key)
				k := base64.StdEncoding.EncodeToString(key)
				broken, edit = "publicKey "+k, func(s *v1alpha1.KubeLinkSpec) { s.PublicKey = k }
			} else {
				broken, edit = "cidr 100.64.200.0/24", func(s *v1alpha1.KubeLinkSpec) { s.CIDR = "100.64.200.0/24" }
			}
			t.Cleanup(func() {
				ctx := context.Background()
				if err := lab.A.UpdateLink(ctx, "b", func(s *v1alpha1.KubeLinkSpec) { s.PublicKey, s.CIDR = spec.PublicKey, spec.CIDR }); err != nil {
					t.Errorf("restoring a's link to b: %v", err)
				}
				client := anyClient(ctx, t, lab.A)
				url := echoURL(ctx, t, lab.B)
				if _, err := Eventually(ctx, 90*time.Second, time.Second, func(ctx context.Context) error {
					l, err := lab.A.Link(ctx, "b")
					if err == nil && l.Status.State != v1alpha1.StateUp {
						return fmt.Errorf("a's link to b is %s", l.Status.State)
					}
					if err == nil {
						_, err = lab.A.Wget(ctx, client, url)
					}
					return err
				}); err != nil {
					t.Errorf("a's link to b did not come back after the restore: %v", err)
				}
			})
			if err := lab.A.UpdateLink(ctx, "b", edit); err != nil {
				t.Fatal(err)
			}
			t.Logf("a's link to b now has %s", broken)
			client, url := anyClient(ctx, t, lab.A), echoURL(ctx, t, lab.B)
			if _, err := Eventually(ctx, 60*time.Second, time.Second, func(ctx context.Context) error {
				if _, err := lab.A.Wget(ctx, client, url); err == nil {
					return fmt.Errorf("a still reaches b's echo at %s", url)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(t.TempDir(), "verify.xml")
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"verify", "--junit-report", report, "--timeout", "4m"}, labContexts()...)...)
			t.Logf("verify:\n%s%s", stderr, out)
			if err == nil {
				t.Fatal("verify passed with a's link to b broken")
			}
			names := []string{"a (gateway node) → b by ClusterIP", "a (other node) → b by ClusterIP"}
			if lab.Mode == "wireguard" {
				names = append(names, "b (gateway node) → a by ClusterIP")
			}
			table := strings.Join(strings.Fields(out), " ")
			for _, name := range names {
				if !strings.Contains(stderr, name) || !strings.Contains(table, "FAIL "+name) {
					t.Errorf("verify does not name the failed check %q", name)
				}
			}
			r := readJUnit(t, report)
			if r.Failures == 0 {
				t.Errorf("the JUnit report has no failure")
			}
			// diagnose names the cause.
			out, stderr, err = kubelinkctl(ctx, t, append([]string{"diagnose"}, labContexts()...)...)
			t.Logf("diagnose:\n%s%s", stderr, out)
			cause := "KubeLink b has cidr 100.64.200.0/24, but b's service CIDR is " + spec.CIDR
			if lab.Mode == "wireguard" {
				cause = "KubeLink b has publicKey " + strings.TrimPrefix(broken, "publicKey ") + ", but b's LocalLink publishes " + spec.PublicKey
			}
			if err == nil || !strings.Contains(out, cause) {
				t.Errorf("diagnose (%v) does not name the cause %q", err, cause)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// diagnose --probe finds a path MTU blackhole: b's active broker forwards
// into a pod network whose MTU is smaller than the tunnel's and drops the
// ICMP "fragmentation needed" it would send, so small requests from a to
// b pass and large packets are lost.
func TestDiagnoseFindsAPathMTUBlackhole(t *testing.T) {
	ctx := context.Background()
	pods, err := lab.B.BrokerPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	active, err := activeBroker(ctx, lab.B)
	if err != nil {
		t.Fatal(err)
	}
	var ip, node string
	for _, p := range pods {
		if p.Name != active {
			continue
		}
		if p.Spec.HostNetwork {
			t.Fatalf("b's broker %s runs in the node's network namespace: this test changes the broker pod's own interface", p.Name)
		}
		ip, node = p.Status.PodIP, p.Spec.NodeName
	}
	if ip == "" {
		t.Fatalf("b's active broker %s (the Lease's holder) is not among its broker pods", active)
	}
	// The broker's network namespace: the process on its node whose eth0
	// has the pod's address.
	sh := func(script string) (string, error) {
		out, err := exec.CommandContext(ctx, "docker", "exec", node, "sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	pid, err := sh(fmt.Sprintf(`for p in $(pgrep -f -- '--node-ip='); do nsenter -t $p -n ip -4 -o addr show dev eth0 2>/dev/null | grep -q ' %s/' && { echo $p; exit 0; }; done; exit 1`, ip))
	if err != nil {
		t.Fatalf("finding the network namespace of b's active broker (%s on %s): %v %s", ip, node, err, pid)
	}
	pid = strings.TrimSpace(pid)
	in := func(cmd string) string { return fmt.Sprintf("nsenter -t %s -n %s", pid, cmd) }
	if out, err := sh(in("ip link set eth0 mtu 1300") + " && " + in("nft add table ip e2e-mtu") + " && " +
		in(`nft 'add chain ip e2e-mtu out { type filter hook output priority 0 ; }'`) + " && " +
		in("nft add rule ip e2e-mtu out icmp type destination-unreachable icmp code frag-needed drop")); err != nil {
		t.Fatalf("making the blackhole in b's broker: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := sh(in("ip link set eth0 mtu 1500") + " ; " + in("nft delete table ip e2e-mtu")); err != nil {
			t.Errorf("removing the blackhole from b's broker: %v %s", err, out)
		}
	})
	out, stderr, err := kubelinkctl(ctx, t, "diagnose", "--probe", "--context", "kind-lab-a", "--context", "kind-lab-b")
	t.Logf("diagnose --probe:\n%s%s", stderr, out)
	table := strings.Join(strings.Fields(out), " ")
	if err == nil || !strings.Contains(table, "small requests to b through the mesh pass, an upload of 64 KiB does not") {
		t.Errorf("diagnose --probe (%v) does not name the path MTU blackhole from a to b", err)
	}
}
