package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Each run of verify (and of benchmark and diagnose --probe) starts its
// agents in a namespace of its own, verifyNamespacePrefix and a random
// suffix, labelled verifyRunLabel; it is deleted at the end (unless --keep)
// without waiting, so that the next run need not wait for it to go.
const (
	verifyNamespacePrefix = "kubelink-verify-"
	verifyRunLabel        = "kubelink.mandelsoft.org/verify-run"
	// verifyKeepLabel marks the namespace of a run with --keep: no later
	// run deletes it.
	verifyKeepLabel = "kubelink.mandelsoft.org/verify-keep"
	verifyApp       = "kubelink-verifier"
	verifyPort      = 8080
	// mtuUpload is the MTU check's POST body: large enough for full-size
	// segments, so that the kernel learns the path MTU.
	mtuUpload = 64 << 10
)

type verifyOptions struct {
	contexts []string
	meshCIDR string
	image    string
	junit    string
	failover bool
	keep     bool
}

func newVerify(g *globals) *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify --context A --context B [...]",
		Short: "Check connectivity between clusters through the mesh, both ways",
		Long: `verify starts a small agent (image kubelink/verifier, from the registry the
release uses) in a namespace of its own, kubelink-verify-<random>, of every
given cluster: a server behind a Service, on the gateway node and on one other
node. Then, for every ordered pair of clusters, from the pod on the gateway
node and from the one on another node, it fetches the peer's Service by ClusterIP and by its mesh DNS
name (<svc>.<ns>.svc.<cluster>.kubelink), and uploads 64 KiB to measure the
path MTU through the tunnel. It prints each check with pass or fail and its
duration, writes them as JUnit XML with --junit-report, removes what it
started, and exits non-zero when a check failed.

--failover then deletes the active broker pod of the first cluster while a
pod there fetches the second cluster's Service every 100 ms, and prints how
long traffic stopped. The fetches end once the new broker has published itself
and every fetch of the next 10s passed (45s at most).`,
		Example: fmt.Sprintf(`  %[1]s verify --context eu --context us
  %[1]s verify --context eu --context us --failover --junit-report verify.xml`, commandName()),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(dedupe(o.contexts)) < 2 {
				return usagef(cmd, "verify needs the contexts of at least two clusters (--context A --context B), got %d", len(dedupe(o.contexts)))
			}
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster to check (repeat it, at least twice)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh to check, where a cluster is in several")
	f.StringVar(&o.image, "image", "", "the agent's image (default: images.verifier of each cluster's release, from its registry and tag)")
	f.StringVar(&o.junit, "junit-report", "", "write the checks as JUnit XML to this file")
	f.BoolVar(&o.failover, "failover", false, "also delete the first cluster's active broker and measure how long traffic to the second stopped")
	f.BoolVar(&o.keep, "keep", false, "keep this run's namespace kubelink-verify-<random> afterwards (to look at the agents); no later run deletes it")
	f.StringVarP(&g.output, "output", "o", "", "print the checks as json or yaml")
	return cmd
}

// check is one verify check.
type check struct {
	Name    string  `json:"name"`
	From    string  `json:"from"`
	To      string  `json:"to,omitempty"`
	Pass    bool    `json:"pass"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// agent is the verifier pod on one node of a cluster.
type agent struct {
	pod, node, role string // role: gateway node or other node
}

// verifyCluster is a member with its agents.
type verifyCluster struct {
	*member
	runNS     string // this run's namespace (not member.ns, kubelink's)
	agents    []agent
	serviceIP string
}

// agentResult is what kubelink-verifier --get prints.
type agentResult struct {
	OK         bool    `json:"ok"`
	Error      string  `json:"error"`
	Millis     float64 `json:"ms"`
	PathMTU    int     `json:"pathMTU"`
	SendMSS    int     `json:"sendMSS"`
	UnixMillis int64   `json:"unixMillis"`
}

type verifyResult struct {
	Checks          []check  `json:"checks"`
	PathMTU         []check  `json:"-"`
	FailoverSeconds *float64 `json:"failoverSeconds,omitempty"`
}

func (o *verifyOptions) run(ctx context.Context, g *globals) error {
	if g.output != "" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("-o %q: must be json or yaml", g.output)
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	vcs, cleanup, err := startAgentsIn(ctx, g, o.contexts, o.meshCIDR, o.image, o.keep)
	defer cleanup()
	if err != nil {
		return err
	}
	var res verifyResult
	for _, from := range vcs {
		for _, to := range vcs {
			if from == to {
				continue
			}
			for _, a := range from.agents {
				for _, target := range []struct{ how, url string }{
					{"ClusterIP", fmt.Sprintf("http://%s/", to.serviceIP)},
					{"DNS name", fmt.Sprintf("http://%s.%s.svc.%s.%s/", verifyApp, to.runNS, to.name, meshZone)},
				} {
					c := runCheck(ctx, from, a, to, fmt.Sprintf("%s (%s) → %s by %s", from.name, a.role, to.name, target.how), target.url, 0)
					g.progress("%s %s (%.2fs)%s", passFail(c.Pass), c.Name, c.Seconds, detail(c))
					res.Checks = append(res.Checks, c)
				}
			}
			c := runCheck(ctx, from, from.agents[0], to, fmt.Sprintf("%s → %s path MTU", from.name, to.name), fmt.Sprintf("http://%s/", to.serviceIP), mtuUpload)
			if !c.Pass && res.passed(fmt.Sprintf("%s (%s) → %s by ClusterIP", from.name, from.agents[0].role, to.name)) {
				c.Detail += fmt.Sprintf(" (small requests pass, the upload of %d KiB does not: packets of full size are lost on the path, an MTU too small with ICMP \"fragmentation needed\" blocked)", mtuUpload>>10)
			}
			g.progress("%s %s (%.2fs)%s", passFail(c.Pass), c.Name, c.Seconds, detail(c))
			res.Checks = append(res.Checks, c)
		}
	}
	msc, err := meshServiceChecks(ctx, g, vcs)
	if err != nil {
		return err
	}
	res.Checks = append(res.Checks, msc...)
	if o.failover {
		c, secs := failover(ctx, g, vcs[0], vcs[1])
		res.Checks = append(res.Checks, c)
		res.FailoverSeconds = secs
	}
	if o.junit != "" {
		if err := writeJUnit(o.junit, res.Checks); err != nil {
			return err
		}
	}
	var failed []string
	for _, c := range res.Checks {
		if !c.Pass {
			failed = append(failed, c.Name)
		}
	}
	if err := printObject(g, res, func() { printChecks(g.out, res.Checks) }); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d checks failed: %s (`%s show` shows the links' states; `%s diagnose` looks for the usual causes)",
			len(failed), len(res.Checks), strings.Join(failed, "; "), commandName(), commandName())
	}
	return nil
}

// passed: the check of that name ran and passed.
func (r *verifyResult) passed(name string) bool {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Pass
		}
	}
	return false
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func detail(c check) string {
	if c.Detail == "" {
		return ""
	}
	return ": " + c.Detail
}

// startAgentsIn loads the members of the contexts and starts the agents
// in each, waiting until they are ready. cleanup removes them (unless
// keep); it must be called also when err is set.
func startAgentsIn(ctx context.Context, g *globals, contexts []string, meshCIDR, image string, keep bool) (vcs []*verifyCluster, cleanup func(), err error) {
	ns, err := newVerifyNamespaceName()
	if err != nil {
		return nil, func() {}, err
	}
	cleanup = func() {
		if keep {
			g.progress("keeping namespace %s (--keep): delete it with kubectl delete namespace %s", ns, ns)
			return
		}
		// The clean-up runs also after a timeout or ^C. It does not wait
		// for the namespace to go: the next run uses another.
		clean, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, vc := range vcs {
			if err := vc.cs.CoreV1().Namespaces().Delete(clean, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				g.progress("%s: deleting namespace %s: %v", vc.member, ns, err)
			}
		}
	}
	for _, name := range dedupe(contexts) {
		m, err := g.loadMember(ctx, name, meshCIDR)
		if err != nil {
			return vcs, cleanup, err
		}
		vcs = append(vcs, &verifyCluster{member: m, runNS: ns})
	}
	o := &verifyOptions{image: image, keep: keep}
	for _, vc := range vcs {
		if err := o.startAgents(ctx, g, vc); err != nil {
			return vcs, cleanup, err
		}
	}
	for _, vc := range vcs {
		if err := waitAgents(ctx, g, vc); err != nil {
			return vcs, cleanup, err
		}
	}
	for _, vc := range vcs {
		if err := waitServing(ctx, g, vc); err != nil {
			return vcs, cleanup, err
		}
	}
	return vcs, cleanup, nil
}

// serveWait bounds how long the agents' new Service may take to be served
// in its own cluster.
const serveWait = time.Minute

// waitServing waits until the agents' Service answers on the gateway
// node, inside its own cluster: a Service just made is refused (or its
// packets dropped) until kube-proxy there has programmed it, and the
// checks through the mesh must not count that against the mesh (nor
// measure it).
func waitServing(ctx context.Context, g *globals, vc *verifyCluster) error {
	start := time.Now()
	url := fmt.Sprintf("http://%s/", vc.serviceIP)
	var last check
	for {
		last = runCheck(ctx, vc, vc.agents[0], vc, "", url, 0)
		if last.Pass {
			if d := time.Since(start); d > 2*time.Second {
				g.progress("%s: the agents' Service %s answers in its own cluster (after %s)", vc.member, vc.serviceIP, d.Round(100*time.Millisecond))
			}
			return nil
		}
		if time.Since(start) > serveWait || ctx.Err() != nil {
			return fmt.Errorf("%s: the agents' Service %s did not answer inside its own cluster within %s (%s): is kube-proxy (or the CNI's service proxy) running on %s?",
				vc.member, vc.serviceIP, serveWait, last.Detail, vc.agents[0].node)
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// verifierImage is the agent's image in this cluster: --image, else the
// release's registry, images.verifier and tag.
func (o *verifyOptions) verifierImage(m *member) (string, error) {
	if o.image != "" {
		return o.image, nil
	}
	if m.release == nil {
		return "", fmt.Errorf("%s: kubelink was not installed with its chart here, so verify does not know its registry: give the agent's image with --image", m)
	}
	return m.releaseImage("verifier"), nil
}

// startAgents creates the namespace, the agent pods (on the gateway node
// and on one other Ready node) and their Service.
func (o *verifyOptions) startAgents(ctx context.Context, g *globals, vc *verifyCluster) error {
	image, err := o.verifierImage(vc.member)
	if err != nil {
		return err
	}
	nodes, err := vc.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("%s: listing nodes: %w", vc.member, err)
	}
	var gateway, other string
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !nodeReady(n) {
			continue
		}
		isGateway := false
		for _, a := range n.Status.Addresses {
			if a.Address == vc.local.Status.Gateway {
				isGateway = true
			}
		}
		switch {
		case isGateway:
			gateway = n.Name
		case other == "":
			other = n.Name
		}
	}
	if gateway == "" {
		return fmt.Errorf("%s: no Ready node has the gateway address %q of the LocalLink's status: is its broker active? (`%s show gateways --context %s`)",
			vc.member, vc.local.Status.Gateway, commandName(), vc.context)
	}
	vc.agents = []agent{{pod: "verifier-gateway", node: gateway, role: "gateway node"}}
	if other != "" {
		vc.agents = append(vc.agents, agent{pod: "verifier-other", node: other, role: "other node"})
	}
	if err := ensureVerifyNamespace(ctx, g, vc, o.keep); err != nil {
		return err
	}
	labels := map[string]string{"app.kubernetes.io/name": verifyApp, managedByLabel: managedBy}
	for _, a := range vc.agents {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: a.pod, Namespace: vc.runNS, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:                      a.node,
				Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				AutomountServiceAccountToken:  ptr.To(false),
				SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{
					Name: "verifier", Image: image,
					Args:  []string{"--serve", "--cluster", vc.name, "--listen", ":" + strconv.Itoa(verifyPort)},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: verifyPort}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(verifyPort)}},
						PeriodSeconds: 1},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("10m"), corev1.ResourceMemory: mustQuantity("16Mi")},
						Limits: corev1.ResourceList{corev1.ResourceMemory: mustQuantity("64Mi")}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
			},
		}
		if _, err := vc.cs.CoreV1().Pods(vc.runNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("%s: creating pod %s/%s: %w", vc.member, vc.runNS, a.pod, err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: verifyApp, Namespace: vc.runNS, Labels: labels},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app.kubernetes.io/name": verifyApp},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(verifyPort)}}}}
	s, err := vc.cs.CoreV1().Services(vc.runNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%s: creating Service %s/%s: %w", vc.member, vc.runNS, verifyApp, err)
	}
	vc.serviceIP = s.Spec.ClusterIP
	g.progress("%s: agents on %d nodes (%s), Service %s (image %s)", vc.member, len(vc.agents), agentNodes(vc.agents), vc.serviceIP, image)
	return nil
}

func agentNodes(as []agent) string {
	var s []string
	for _, a := range as {
		s = append(s, a.node+" ("+a.role+")")
	}
	return strings.Join(s, ", ")
}

// verifyLeftoverAge is how old a namespace of another run (not kept) must
// be before a run deletes it as left behind by a killed run; a younger one
// may be another verify still running. A variable for the tests.
var verifyLeftoverAge = 15 * time.Minute

// newVerifyNamespaceName is a run's namespace: the prefix and five random
// lowercase letters or digits.
func newVerifyNamespaceName() (string, error) {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("a random namespace name: %w", err)
	}
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return verifyNamespacePrefix + string(b), nil
}

// ensureVerifyNamespace creates this run's namespace in vc's cluster. It
// first deletes, without waiting, the namespaces of earlier runs that a
// killed run left behind: not kept (--keep), not being deleted, and older
// than verifyLeftoverAge, so that another verify that is running keeps
// its own.
func ensureVerifyNamespace(ctx context.Context, g *globals, vc *verifyCluster, keep bool) error {
	runs, err := vc.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: verifyRunLabel})
	if err != nil {
		return fmt.Errorf("%s: listing the namespaces of earlier verify runs: %w", vc.member, err)
	}
	for _, n := range runs.Items {
		if n.DeletionTimestamp != nil || n.Labels[verifyKeepLabel] == "true" || time.Since(n.CreationTimestamp.Time) < verifyLeftoverAge {
			continue
		}
		g.progress("%s: deleting namespace %s, left by an earlier verify", vc.member, n.Name)
		if err := vc.cs.CoreV1().Namespaces().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: deleting namespace %s of an earlier verify: %w", vc.member, n.Name, err)
		}
	}
	labels := map[string]string{managedByLabel: managedBy, verifyRunLabel: "true", "pod-security.kubernetes.io/enforce": "restricted"}
	if keep {
		labels[verifyKeepLabel] = "true"
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: vc.runNS, Labels: labels}}
	if _, err := vc.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("%s: creating namespace %s: %w", vc.member, vc.runNS, err)
	}
	return nil
}

// waitAgents waits until every agent pod is Ready, naming what holds one
// back (e.g. an image that cannot be pulled).
func waitAgents(ctx context.Context, g *globals, vc *verifyCluster) error {
	start, last := time.Now(), ""
	for {
		var waiting []string
		for _, a := range vc.agents {
			p, err := vc.cs.CoreV1().Pods(vc.runNS).Get(ctx, a.pod, metav1.GetOptions{})
			if err != nil {
				waiting = append(waiting, a.pod+": "+err.Error())
				continue
			}
			ready := false
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if ready {
				continue
			}
			why := string(p.Status.Phase)
			for _, s := range p.Status.ContainerStatuses {
				if w := s.State.Waiting; w != nil && w.Reason != "" {
					why = w.Reason + ": " + w.Message
				}
			}
			waiting = append(waiting, a.pod+" "+why)
		}
		if len(waiting) == 0 {
			return nil
		}
		now := strings.Join(waiting, "; ")
		if now != last {
			g.progress("%s: waiting for the agents: %s", vc.member, now)
			last = now
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: the agents in namespace %s were not ready after %s: %s (--image sets another image; --timeout the limit)",
				vc.member, vc.runNS, time.Since(start).Round(time.Second), now)
		case <-time.After(time.Second):
		}
	}
}

// runCheck runs kubelink-verifier --get in agent a of from against url,
// where to's agent must answer.
func runCheck(ctx context.Context, from *verifyCluster, a agent, to *verifyCluster, name, url string, upload int) check {
	args := []string{"--get", url, "--want", to.name, "--timeout", "3s"}
	if upload > 0 {
		args = append(args, "--upload", strconv.Itoa(upload))
	}
	c, r := runAgent(ctx, from, a, to, name, args...)
	if c.Pass && upload > 0 {
		c.Detail = fmt.Sprintf("path MTU %d, MSS %d", r.PathMTU, r.SendMSS)
	}
	return c
}

// meshServiceChecks checks every MeshService of each cluster from the
// gateway agent of every other cluster that routes its address: a TCP
// connection to each of its TCP ports (its server is not an agent, so only
// the connection is checked). A MeshService that is not Ok fails, with its
// message; UDP ports are not checked.
func meshServiceChecks(ctx context.Context, g *globals, vcs []*verifyCluster) ([]check, error) {
	var checks []check
	for _, to := range vcs {
		var list v1alpha1.MeshServiceList
		if err := to.c.List(ctx, &list); err != nil {
			if isNoKind(err) {
				continue
			}
			return nil, fmt.Errorf("%s: listing MeshServices: %w", to.member, err)
		}
		for i := range list.Items {
			ms := &list.Items[i]
			what := fmt.Sprintf("MeshService %s/%s of %s", ms.Namespace, ms.Name, to.name)
			if ms.Status.State != v1alpha1.StateOk {
				c := check{Name: what, To: to.name, Detail: fmt.Sprintf("state %s: %s", dash(ms.Status.State), ms.Status.Message)}
				g.progress("%s %s%s", passFail(false), c.Name, detail(c))
				checks = append(checks, c)
				continue
			}
			addr := to.address.Addr()
			if ms.Spec.MeshAddress != "" {
				a, err := netip.ParseAddr(ms.Spec.MeshAddress)
				if err != nil {
					continue // admission refuses it
				}
				addr = a
			}
			ports, err := meshServicePorts(ctx, to, ms)
			if err != nil {
				c := check{Name: what, To: to.name, Detail: err.Error()}
				g.progress("%s %s%s", passFail(false), c.Name, detail(c))
				checks = append(checks, c)
				continue
			}
			if len(ports) == 0 {
				g.progress("%s: not checked (no TCP port)", what)
				continue
			}
			for _, from := range vcs {
				if from == to {
					continue
				}
				if from.link(to.name) == nil {
					g.progress("%s: not checked from %s: it has no KubeLink to %s", what, from.name, to.name)
					continue
				}
				if ms.Spec.MeshAddress != "" && !routes(from.link(to.name), addr) {
					g.progress("%s: not checked from %s: its KubeLink %s does not route %s (spec.egress)", what, from.name, to.name, addr)
					continue
				}
				for _, port := range ports {
					target := netip.AddrPortFrom(addr, uint16(port)).String()
					c := runConnect(ctx, from, from.agents[0], to, fmt.Sprintf("%s → %s (%s)", from.name, what, target), target)
					g.progress("%s %s (%.2fs)%s", passFail(c.Pass), c.Name, c.Seconds, detail(c))
					checks = append(checks, c)
				}
			}
		}
	}
	return checks, nil
}

// meshServicePorts are the TCP ports a MeshService serves: its ports, or
// without them (a virtual address) its Service's.
func meshServicePorts(ctx context.Context, vc *verifyCluster, ms *v1alpha1.MeshService) ([]int32, error) {
	var ports []int32
	for _, p := range ms.Spec.Ports {
		if p.Protocol == "" || strings.EqualFold(p.Protocol, "tcp") {
			ports = append(ports, p.Port)
		}
	}
	if len(ms.Spec.Ports) > 0 || ms.Spec.Service == "" {
		return ports, nil
	}
	svc, err := vc.cs.CoreV1().Services(ms.Namespace).Get(ctx, ms.Spec.Service, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: the Service %s/%s of MeshService %s: %w", vc.member, ms.Namespace, ms.Spec.Service, ms.Name, err)
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			ports = append(ports, p.Port)
		}
	}
	return ports, nil
}

// routes reports whether the link routes addr (its egress).
func routes(l *v1alpha1.KubeLink, addr netip.Addr) bool {
	if l == nil {
		return false
	}
	for _, e := range l.Spec.Egress {
		if p, err := netip.ParsePrefix(e); err == nil && p.Contains(addr) {
			return true
		}
		if a, err := netip.ParseAddr(e); err == nil && a == addr {
			return true
		}
	}
	return false
}

// runConnect runs kubelink-verifier --connect in agent a of from.
func runConnect(ctx context.Context, from *verifyCluster, a agent, to *verifyCluster, name, target string) check {
	c, _ := runAgent(ctx, from, a, to, name, "--connect", target, "--timeout", "3s")
	return c
}

// runAgent runs kubelink-verifier with args in agent a of from, which
// prints one result: the check, and the result as the agent printed it.
func runAgent(ctx context.Context, from *verifyCluster, a agent, to *verifyCluster, name string, args ...string) (check, agentResult) {
	c := check{Name: name, From: from.name, To: to.name}
	var r agentResult
	start := time.Now()
	out, err := execIn(ctx, from, a.pod, append([]string{"/usr/local/bin/app"}, args...)...)
	c.Seconds = time.Since(start).Seconds()
	if err != nil {
		c.Detail = err.Error()
		return c, r
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		c.Detail = fmt.Sprintf("the agent printed %q: %v", strings.TrimSpace(string(out)), err)
		return c, r
	}
	c.Pass, c.Seconds, c.Detail = r.OK, r.Millis/1000, r.Error
	return c, r
}

// execIn runs a command in the agent pod and returns its stdout.
func execIn(ctx context.Context, vc *verifyCluster, pod string, args ...string) ([]byte, error) {
	return execInWithStdin(ctx, vc, pod, nil, args...)
}

// execInWithStdin is execIn with stdin (nil: none) fed to the command.
func execInWithStdin(ctx context.Context, vc *verifyCluster, pod string, stdin io.Reader, args ...string) ([]byte, error) {
	req := vc.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(vc.runNS).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "verifier", Command: args, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(vc.rest, "POST", req.URL())
	if err != nil {
		return nil, err
	}
	var out, errOut bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errOut}); err != nil {
		return out.Bytes(), fmt.Errorf("exec in %s/%s: %w %s", vc.runNS, pod, err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// failover deletes from's active broker while from's agent fetches to's
// Service every 100 ms, and measures how long the fetches failed.
func failover(ctx context.Context, g *globals, from, to *verifyCluster) (check, *float64) {
	c := check{Name: fmt.Sprintf("%s → %s across a failover of %s's broker", from.name, to.name, from.name), From: from.name, To: to.name}
	lease, err := from.cs.CoordinationV1().Leases(from.ns).Get(ctx, "kubelink-broker", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		c.Detail = fmt.Sprintf("no active broker (Lease %s/kubelink-broker): %v", from.ns, err)
		return c, nil
	}
	active := *lease.Spec.HolderIdentity
	activeIP := ""
	if p, err := from.cs.CoreV1().Pods(from.ns).Get(ctx, active, metav1.GetOptions{}); err == nil {
		activeIP = p.Status.PodIP
	}
	type watchOut struct {
		out []byte
		err error
	}
	a := from.agents[len(from.agents)-1] // on another node where there is one: the gateway node may be the one that goes
	url := fmt.Sprintf("http://%s/", to.serviceIP)
	// The agent fetches until failoverSettle after the new broker took over
	// and published itself, with every fetch of that stretch passing, and
	// for failoverWindow at most. An agent older than --settle fetches
	// for all of the window.
	watch := func(settle bool) (<-chan watchOut, *io.PipeWriter) {
		done := make(chan watchOut, 1)
		args := []string{"/usr/local/bin/app", "--watch", url, "--want", to.name, "--every", "100ms", "--timeout", "500ms", "--window", failoverWindow.String()}
		var stdin *io.PipeReader
		var over *io.PipeWriter
		if settle {
			args = append(args, "--settle", failoverSettle.String())
			stdin, over = io.Pipe()
		}
		go func() {
			var r io.Reader
			if stdin != nil {
				r = stdin
			}
			out, err := execInWithStdin(ctx, from, a.pod, r, args...)
			done <- watchOut{out, err}
		}()
		return done, over
	}
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
	watchStart := time.Now()
	// Without the old broker's address, the takeover cannot be told from
	// the old broker's own status: the fixed window then.
	done, over := watch(activeIP != "")
	select {
	case <-ctx.Done():
	case w := <-done:
		if over != nil {
			over.Close()
		}
		// It ended at once: an agent that does not know --settle.
		if w.err == nil || !strings.Contains(w.err.Error(), "settle") {
			c.Detail = fmt.Sprintf("the agent's watch ended before the failover: %v", w.err)
			return c, nil
		}
		watchStart = time.Now()
		done, over = watch(false)
		pause()
	case <-time.After(3 * time.Second):
	}
	deleted := time.Now()
	if over != nil {
		g.progress("failover: deleting %s's active broker pod %s; %s fetches %s's Service every 100 ms until traffic passed for %s after the takeover (%s at most)",
			from.name, active, a.pod, to.name, failoverSettle, failoverWindow)
	} else {
		g.progress("failover: deleting %s's active broker pod %s; %s fetches %s's Service every 100 ms for %s", from.name, active, a.pod, to.name, failoverWindow)
	}
	if err := from.cs.CoreV1().Pods(from.ns).Delete(ctx, active, metav1.DeleteOptions{}); err != nil {
		if over != nil {
			over.Close()
		}
		c.Detail = fmt.Sprintf("deleting the active broker pod %s: %v", active, err)
		return c, nil
	}
	if over != nil {
		if ip, ok := waitTakeover(ctx, from, activeIP, failoverWindow); ok {
			g.progress("failover: %s's broker at %s took over and published itself after %s", from.name, ip, time.Since(deleted).Round(100*time.Millisecond))
		}
		over.Close() // the agent settles now (or fetches on to the window's end)
	}
	w := <-done
	c.Seconds = time.Since(deleted).Seconds()
	if w.err != nil {
		c.Detail = w.err.Error()
		return c, nil
	}
	// The fetches carry the node's clock: the deletion is placed on it by
	// the offset of the first fetch from the start of the watch here.
	outage, recovered, err := outageOf(w.out, deleted, watchStart)
	if err != nil {
		c.Detail = err.Error()
		return c, nil
	}
	if !recovered {
		c.Detail = fmt.Sprintf("traffic did not come back within %s of the deletion", failoverWindow)
		return c, nil
	}
	c.Pass = true
	secs := outage.Seconds()
	c.Detail = fmt.Sprintf("traffic stopped for %.1fs", secs)
	g.progress("failover: traffic from %s to %s stopped for %.1fs", from.name, to.name, secs)
	return c, &secs
}

// failoverWindow bounds how long verify --failover watches the traffic;
// failoverSettle is how long it must pass after the new broker published
// itself before the watch ends.
const (
	failoverWindow = 45 * time.Second
	failoverSettle = 10 * time.Second
)

// waitTakeover polls from's LocalLink until its status names an active
// broker pod (status.gatewayPod, its IP) other than oldIP: the new one took
// over and published itself. It waits for at most limit.
func waitTakeover(ctx context.Context, from *verifyCluster, oldIP string, limit time.Duration) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		var l v1alpha1.KubeLink
		if err := from.c.Get(ctx, client.ObjectKey{Name: from.local.Name}, &l); err == nil && l.Status.GatewayPod != "" && l.Status.GatewayPod != oldIP {
			return l.Status.GatewayPod, true
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// outageOf reads the agent's --watch lines and returns how long fetches
// failed after t0: from the first failed fetch to the start of the first
// good one after the last failure (0 when none failed), and whether the
// series ended with good fetches. t0 and start (when the watch began) are
// this machine's times; the fetches' times are the node's, so t0 is moved
// by the first fetch's offset from start.
func outageOf(out []byte, t0, start time.Time) (time.Duration, bool, error) {
	var rs []agentResult
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		var r agentResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return 0, false, fmt.Errorf("the agent printed %q: %v", l, err)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return 0, false, errors.New("the agent printed no fetches")
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].UnixMillis < rs[j].UnixMillis })
	t0ms := rs[0].UnixMillis + t0.Sub(start).Milliseconds()
	firstFail, lastFail := -1, -1
	for i, r := range rs {
		if r.UnixMillis < t0ms || r.OK {
			continue
		}
		if firstFail < 0 {
			firstFail = i
		}
		lastFail = i
	}
	if firstFail < 0 {
		return 0, rs[len(rs)-1].OK, nil
	}
	if lastFail == len(rs)-1 {
		return 0, false, nil
	}
	back := rs[lastFail+1].UnixMillis
	return time.Duration(back-rs[firstFail].UnixMillis) * time.Millisecond, true, nil
}

func printChecks(out io.Writer, cs []check) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RESULT\tCHECK\tSECONDS\tDETAIL")
	pass := 0
	for _, c := range cs {
		if c.Pass {
			pass++
		}
		fmt.Fprintf(w, "%s\t%s\t%.3f\t%s\n", passFail(c.Pass), c.Name, c.Seconds, c.Detail)
	}
	w.Flush()
	fmt.Fprintf(out, "\n%d of %d checks passed.\n", pass, len(cs))
}

// writeJUnit writes the checks as one JUnit test suite.
func writeJUnit(path string, cs []check) error {
	type failure struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		Classname string   `xml:"classname,attr"`
		Time      string   `xml:"time,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		SystemOut string   `xml:"system-out,omitempty"`
	}
	type suite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Time     string     `xml:"time,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	s := suite{Name: "kubelinkctl verify", Tests: len(cs)}
	total := 0.0
	for _, c := range cs {
		tc := testcase{Name: c.Name, Classname: "kubelink." + c.From, Time: fmt.Sprintf("%.3f", c.Seconds)}
		if c.Pass {
			tc.SystemOut = c.Detail
		} else {
			s.Failures++
			tc.Failure = &failure{Message: c.Detail, Text: c.Detail}
		}
		total += c.Seconds
		s.Cases = append(s.Cases, tc)
	}
	s.Time = fmt.Sprintf("%.3f", total)
	b, err := xml.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644); err != nil {
		return fmt.Errorf("--junit-report: %w", err)
	}
	return nil
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
