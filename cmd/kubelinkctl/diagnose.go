package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/discover"
)

// maxClockSkew is how far a cluster's clock may be from this machine's
// before diagnose warns: certificates are checked against it.
const maxClockSkew = 30 * time.Second

type diagnoseOptions struct {
	contexts []string
	meshCIDR string
	probe    bool
	image    string
}

func newDiagnose(g *globals) *cobra.Command {
	o := &diagnoseOptions{}
	cmd := &cobra.Command{
		Use:   "diagnose --context A [--context B ...]",
		Short: "Look for the usual causes of a broken mesh, and name each with its fix",
		Long: `diagnose reads the given clusters and reports what keeps their links from
working, each finding with the fix:
  - clusters that cannot form one mesh: overlapping service CIDRs, the same
    name or mesh address, different meshes or data planes;
  - a KubeLink whose publicKey, endpoint, address or CIDR differs from what
    the peer's LocalLink publishes, or a missing link;
  - an endpoint that is not the peer's NodePort, LoadBalancer or node (with
    --expose hostport: the node its broker runs on);
  - a kube-proxy mode kubelink is not tested with;
  - a clock that is off, and certificates outside their validity;
  - a cluster DNS without the kubelink zone;
  - a member whose identity the mesh authority did not register.
It changes nothing, and exits non-zero when it finds an error.

With --probe it also looks from each cluster at the others, with verify's
agent (started in a namespace kubelink-verify-<random> of its own and removed
afterwards):
  - each peer's endpoint from the cluster's gateway node: a TCP connection
    (the bridge), or a datagram that must not be refused (WireGuard);
  - the path MTU through the mesh: small requests to the peer pass, but an
    upload of 64 KiB does not.`,
		Example: fmt.Sprintf(`  %[1]s diagnose --context eu --context us
  %[1]s diagnose --context eu --context us --probe`, commandName()),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster to look at (repeat it; default: the current context)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh to look at, where a cluster is in several")
	f.BoolVar(&o.probe, "probe", false, "also probe each peer's endpoint and the path MTU from each cluster (starts verify's agent for the time of the probe)")
	f.StringVar(&o.image, "image", "", "with --probe: the agent's image (default: the release's registry and tag, kubelink/verifier)")
	f.StringVarP(&g.output, "output", "o", "", "print the findings as json or yaml")
	return cmd
}

// finding is one cause diagnose found.
type finding struct {
	Severity string `json:"severity"` // error or warning
	Cluster  string `json:"cluster"`
	Cause    string `json:"cause"`
	Fix      string `json:"fix,omitempty"`
}

func (o *diagnoseOptions) run(ctx context.Context, g *globals) error {
	if g.output != "" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("-o %q: must be json or yaml", g.output)
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	contexts := dedupe(o.contexts)
	if len(contexts) == 0 {
		contexts = []string{*g.kube.Context}
	}
	var ms []*member
	for _, name := range contexts {
		m, err := g.loadMember(ctx, name, o.meshCIDR)
		if err != nil {
			return err
		}
		ms = append(ms, m)
	}
	fs := diagnose(ctx, ms)
	if o.probe && len(ms) > 1 {
		pf, err := probe(ctx, g, contexts, o.meshCIDR, o.image)
		if err != nil {
			// The findings so far still count.
			pf = append(pf, finding{Severity: "error", Cluster: "-", Cause: "--probe could not run: " + err.Error(),
				Fix: "see the message; `" + commandName() + " verify` starts the same agents"})
		}
		fs = append(fs, pf...)
	}
	errs := 0
	for _, f := range fs {
		if f.Severity == "error" {
			errs++
		}
	}
	if err := printObject(g, fs, func() { printFindings(g.out, fs, len(ms)) }); err != nil {
		return err
	}
	if errs > 0 {
		if errs == 1 {
			return fmt.Errorf("diagnose found 1 error")
		}
		return fmt.Errorf("diagnose found %d errors", errs)
	}
	return nil
}

// diagnose runs every check over the members.
func diagnose(ctx context.Context, ms []*member) []finding {
	var fs []finding
	add := func(sev string, m *member, cause, fix string) {
		name := "-"
		if m != nil {
			name = m.name
		}
		fs = append(fs, finding{Severity: sev, Cluster: name, Cause: cause, Fix: fix})
	}
	for _, p := range memberProblems(ms) {
		add("error", nil, p, "")
	}
	auth, authErr := findAuthority(ms)
	for _, m := range ms {
		for _, p := range ms {
			if m != p {
				diagnoseLink(ctx, m, p, add)
			}
		}
		diagnoseCluster(ctx, m, add)
		diagnoseEndpoint(ctx, m, add)
		if authErr == nil && m != auth {
			diagnoseRegistration(ctx, auth, m, add)
		}
	}
	if authErr != nil && len(ms) > 1 && ms[0].dataPlane == "bridge" {
		add("error", nil, authErr.Error(), "")
	}
	return fs
}

type addFunc func(sev string, m *member, cause, fix string)

// diagnoseLink compares m's KubeLink for p with what p publishes.
func diagnoseLink(ctx context.Context, m, p *member, add addFunc) {
	join := fmt.Sprintf("`%s join --context %s --context %s` sets it from %s's LocalLink", commandName(), m.context, p.context, p.name)
	l := m.link(p.name)
	if l == nil {
		add("error", m, fmt.Sprintf("no KubeLink for %s", p.name), join)
		return
	}
	want := wantSpec(m, p)
	if p.dataPlane == "wireguard" && l.Spec.PublicKey != want.PublicKey {
		add("error", m, fmt.Sprintf("KubeLink %s has publicKey %s, but %s's LocalLink publishes %s: the WireGuard handshake cannot succeed",
			p.name, dash(l.Spec.PublicKey), p.name, dash(want.PublicKey)), join)
	}
	if l.Spec.Endpoint != want.Endpoint && want.Endpoint != "" {
		add("error", m, fmt.Sprintf("KubeLink %s has endpoint %s, but %s announces %s", p.name, dash(l.Spec.Endpoint), p.name, want.Endpoint), join)
	}
	if l.Spec.ClusterAddress != want.ClusterAddress {
		add("error", m, fmt.Sprintf("KubeLink %s has clusterAddress %s, but %s's mesh address is %s", p.name, l.Spec.ClusterAddress, p.name, want.ClusterAddress), join)
	}
	if l.Spec.CIDR != want.CIDR {
		add("error", m, fmt.Sprintf("KubeLink %s has cidr %s, but %s's service CIDR is %s: its Services are not routed", p.name, l.Spec.CIDR, p.name, want.CIDR), join)
	}
	if s := l.Status.State; s != "" && s != v1alpha1.StateUp {
		add("warning", m, fmt.Sprintf("KubeLink %s is %s: %s", p.name, s, dash(l.Status.Message)), "see the findings about "+p.name+" and the broker's log")
	}
}

// diagnoseEndpoint checks that p's announced endpoint is a way into p's
// broker: its LoadBalancer address, a node of p with the NodePort, or with
// a HostPort broker (a ClusterIP Service) the node the broker runs on.
func diagnoseEndpoint(ctx context.Context, p *member, add addFunc) {
	if p.endpoint == "" {
		return
	}
	host, port, err := splitHostPort(p.endpoint, 0)
	if err != nil {
		add("error", p, fmt.Sprintf("its endpoint annotation %q: %v", p.endpoint, err), "run install again, or give --announce host:port")
		return
	}
	svc, err := p.cs.CoreV1().Services(p.ns).Get(ctx, "kubelink-broker", metav1.GetOptions{})
	if err != nil {
		add("error", p, fmt.Sprintf("the broker Service %s/kubelink-broker: %v", p.ns, err), "run install again")
		return
	}
	proto := corev1.ProtocolUDP
	if p.dataPlane == "bridge" {
		proto = corev1.ProtocolTCP
	}
	portOK := false
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol == proto && (int(sp.NodePort) == port || int(sp.Port) == port) {
			portOK = true
		}
	}
	if !portOK {
		add("error", p, fmt.Sprintf("it announces %s, but its broker Service has no %s port %d (a %s Service)", p.endpoint, proto, port, svc.Spec.Type),
			"run install again (it announces the Service's port), or fix --announce")
	}
	pod := diagnoseServiceEndpoints(ctx, p, svc, add)
	if lbAddress(svc) == host {
		return
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return // a name: it may resolve to any of these
	}
	nodes, err := p.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	if svc.Spec.Type == corev1.ServiceTypeClusterIP {
		// HostPort: only the gateway node, where the broker binds the port,
		// answers at the announced address.
		if pod != nil {
			if sev, cause, fix := hostPortFinding(p.endpoint, host, nodes.Items, pod.Spec.NodeName); cause != "" {
				add(sev, p, cause, fix)
			}
		}
		return
	}
	for i := range nodes.Items {
		for _, a := range nodes.Items[i].Status.Addresses {
			if a.Address == host {
				if !nodeReady(&nodes.Items[i]) {
					add("error", p, fmt.Sprintf("it announces %s, the address of node %s, which is not Ready", p.endpoint, nodes.Items[i].Name),
						"announce a Ready node or a LoadBalancer (install --announce, --expose loadbalancer)")
				}
				return
			}
		}
	}
	add("warning", p, fmt.Sprintf("it announces %s, which is neither a node's address nor its LoadBalancer's", p.endpoint),
		"fine behind a NAT or an external load balancer that forwards to the NodePort; else fix --announce")
}

// hostPortFinding judges the address announced for a HostPort broker
// running on node gateway: the gateway's own address is right; another
// node's is an error (that node binds nothing); no node's is a warning
// (right only behind a NAT that forwards to the gateway).
func hostPortFinding(endpoint, host string, nodes []corev1.Node, gateway string) (severity, cause, fix string) {
	var gwAddrs []string
	for i := range nodes {
		if nodes[i].Name == gateway {
			for _, a := range nodes[i].Status.Addresses {
				gwAddrs = append(gwAddrs, a.Address)
			}
		}
	}
	for i := range nodes {
		for _, a := range nodes[i].Status.Addresses {
			if a.Address != host {
				continue
			}
			if nodes[i].Name == gateway {
				return "", "", ""
			}
			return "error", fmt.Sprintf("it announces %s, the address of node %s, but its broker binds the host port on node %s (%s)",
					endpoint, nodes[i].Name, gateway, strings.Join(gwAddrs, ", ")),
				fmt.Sprintf("install again with --expose hostport --gateway-node %s (it announces that node's address)", gateway)
		}
	}
	return "warning", fmt.Sprintf("it announces %s, which is no node's address; its broker binds the host port on node %s (%s)", endpoint, gateway, strings.Join(gwAddrs, ", ")),
		fmt.Sprintf("fine behind a NAT that forwards to node %s; else install again with --expose hostport --gateway-node %s", gateway, gateway)
}

// diagnoseServiceEndpoints checks that the broker Service reaches exactly
// the active broker: no selector, one EndpointSlice, naming the Lease
// holder's pod, ready. It returns the active broker's pod, if there is one.
func diagnoseServiceEndpoints(ctx context.Context, p *member, svc *corev1.Service, add addFunc) *corev1.Pod {
	if len(svc.Spec.Selector) != 0 {
		add("error", p, fmt.Sprintf("its broker Service %s/kubelink-broker selects pods (%v): peers reach every Ready broker, the standby too", p.ns, svc.Spec.Selector),
			"run install again (the chart's Service has no selector; the active broker writes its endpoints)")
		return nil
	}
	list, err := p.cs.DiscoveryV1().EndpointSlices(p.ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubelink-broker"})
	if err != nil {
		add("warning", p, fmt.Sprintf("the EndpointSlices of its broker Service: %v", err), "")
		return nil
	}
	var active *discoveryv1.EndpointSlice
	for i := range list.Items {
		if s := &list.Items[i]; s.Name == brokerEndpointSlice {
			active = s
		} else {
			add("error", p, fmt.Sprintf("its broker Service has the EndpointSlice %s (managed by %s) besides the active broker's: peers may reach the pods it names",
				s.Name, dash(s.Labels[discoveryv1.LabelManagedBy])), fmt.Sprintf("run install again, or `kubectl -n %s delete endpointslice %s`", p.ns, s.Name))
		}
	}
	holder := ""
	if l, err := p.cs.CoordinationV1().Leases(p.ns).Get(ctx, "kubelink-broker", metav1.GetOptions{}); err == nil && l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	var pod *corev1.Pod
	if holder != "" {
		if got, err := p.cs.CoreV1().Pods(p.ns).Get(ctx, holder, metav1.GetOptions{}); err == nil {
			pod = got
		}
	}
	logs := fmt.Sprintf("`kubectl -n %s logs %s -c broker`", p.ns, dash(holder))
	switch {
	case active == nil:
		add("error", p, fmt.Sprintf("its broker Service has no EndpointSlice %s: no broker points it at itself, so peers are refused", brokerEndpointSlice),
			"check that a broker holds the Lease kubelink-broker, and its log: "+logs)
	case pod == nil:
		add("error", p, "no broker holds the Lease kubelink-broker (or its pod is gone)", fmt.Sprintf("`kubectl -n %s get pods -l app.kubernetes.io/name=kubelink-broker`", p.ns))
	case !sliceNames(active, pod.Status.PodIP):
		add("error", p, fmt.Sprintf("its broker Service's EndpointSlice does not name the active broker %s (%s) as ready: peers reach another pod or none", holder, pod.Status.PodIP),
			"the active broker writes it once its data plane is synced: see its log, "+logs)
	}
	return pod
}

// sliceNames tells whether a ready endpoint of s has the address ip (any
// address when ip is empty).
func sliceNames(s *discoveryv1.EndpointSlice, ip string) bool {
	for _, e := range s.Endpoints {
		if (ip == "" && len(e.Addresses) > 0 || slices.Contains(e.Addresses, ip)) && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
			return true
		}
	}
	return false
}

// probe looks from each cluster at every other: its endpoint from the
// gateway node (outside the mesh), and the path MTU through the mesh.
func probe(ctx context.Context, g *globals, contexts []string, meshCIDR, image string) ([]finding, error) {
	vcs, cleanup, err := startAgentsIn(ctx, g, contexts, meshCIDR, image, false)
	defer cleanup()
	if err != nil {
		return nil, err
	}
	var fs []finding
	add := func(sev string, m *member, cause, fix string) {
		fs = append(fs, finding{Severity: sev, Cluster: m.name, Cause: cause, Fix: fix})
	}
	for _, from := range vcs {
		for _, to := range vcs {
			if from == to || to.endpoint == "" {
				continue
			}
			a := from.agents[0]
			var c check
			if to.dataPlane == "bridge" {
				c = runConnect(ctx, from, a, to, "", to.endpoint)
			} else {
				c, _ = runAgent(ctx, from, a, to, "", "--probe-udp", to.endpoint, "--timeout", "2s")
			}
			g.progress("%s: %s's endpoint %s from %s: %s%s", from.member, to.name, to.endpoint, a.node, passFail(c.Pass), detail(c))
			if !c.Pass {
				how := "TCP connections"
				if to.dataPlane != "bridge" {
					how = "UDP (the port is refused)"
				}
				add("error", from.member, fmt.Sprintf("from its gateway node %s, %s's endpoint %s does not take %s: %s", a.node, to.name, to.endpoint, how, c.Detail),
					fmt.Sprintf("is %s's broker running (`%s show gateways --context %s`)? open the port between the clusters' gateway nodes; or announce another endpoint (install --announce)", to.name, commandName(), to.context))
			}
			url := fmt.Sprintf("http://%s/", to.serviceIP)
			small := runCheck(ctx, from, a, to, "", url, 0)
			if !small.Pass {
				add("warning", from.member, fmt.Sprintf("%s's Service %s does not answer through the mesh: %s", to.name, to.serviceIP, small.Detail),
					fmt.Sprintf("the findings about %s's link above; `%s verify` for every path", to.name, commandName()))
				continue
			}
			big := runCheck(ctx, from, a, to, "", url, mtuUpload)
			g.progress("%s: path to %s through the mesh: small requests %s, upload of %d KiB %s%s", from.member, to.name, passFail(true), mtuUpload>>10, passFail(big.Pass), detail(big))
			if !big.Pass {
				add("error", from.member, fmt.Sprintf("small requests to %s through the mesh pass, an upload of %d KiB does not (%s): packets of full size are lost, an MTU on the path smaller than the tunnel's with ICMP \"fragmentation needed\" blocked", to.name, mtuUpload>>10, big.Detail),
					"allow ICMP \"fragmentation needed\" between the clusters, or lower the tunnel MTU on both sides (install --set broker.mtu=1380)")
			}
		}
	}
	return fs, nil
}

// diagnoseCluster checks one cluster on its own: kube-proxy, clock,
// certificates, the DNS hook.
func diagnoseCluster(ctx context.Context, m *member, add addFunc) {
	if d, err := discover.Discover(ctx, m.cs); err == nil {
		switch mode := d.KubeProxyMode.Value; mode {
		case "iptables", "nftables":
		case "unknown":
			add("warning", m, "its kube-proxy mode is unknown ("+d.KubeProxyMode.Source+")", "kubelink is tested with kube-proxy in iptables and nftables mode")
		default:
			add("warning", m, fmt.Sprintf("kube-proxy runs in %s mode (%s), which kubelink is not tested with", mode, d.KubeProxyMode.Source),
				"use kube-proxy in iptables or nftables mode")
		}
	}
	now, skew, err := serverClock(ctx, m.rest)
	if err == nil && (skew > maxClockSkew || skew < -maxClockSkew) {
		add("warning", m, fmt.Sprintf("its API server's clock is %s off this machine's", skew.Round(time.Second)),
			"synchronise the clocks (NTP): certificates are checked against them")
	}
	if err != nil {
		now = time.Now()
	}
	if s, err := m.cs.CoreV1().Secrets(m.ns).Get(ctx, "kubelink-tls", metav1.GetOptions{}); err == nil {
		if blk, _ := pem.Decode(s.Data["tls.crt"]); blk != nil {
			if crt, err := x509.ParseCertificate(blk.Bytes); err == nil {
				switch {
				case now.Before(crt.NotBefore):
					add("error", m, fmt.Sprintf("its certificate (Secret %s/kubelink-tls) is valid only from %s, after the cluster's time %s", m.ns, crt.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)),
						"synchronise the clocks of the clusters (NTP)")
				case now.After(crt.NotAfter):
					add("error", m, fmt.Sprintf("its certificate (Secret %s/kubelink-tls) expired at %s", m.ns, crt.NotAfter.UTC().Format(time.RFC3339)),
						"check that certwatch runs in the broker pods (it renews the certificate): `kubectl -n "+m.ns+" logs deploy/kubelink-broker -c certwatch`")
				case crt.NotAfter.Sub(now) < 24*time.Hour:
					add("warning", m, fmt.Sprintf("its certificate (Secret %s/kubelink-tls) expires at %s", m.ns, crt.NotAfter.UTC().Format(time.RFC3339)),
						"certwatch renews it well before; if it does not, see its log")
				}
			}
		}
	}
	cm, err := m.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err == nil && !strings.Contains(cm.Data["Corefile"], meshZone+":53") {
		custom, cerr := m.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns-custom", metav1.GetOptions{})
		hooked := false
		if cerr == nil {
			for _, v := range custom.Data {
				if strings.Contains(v, meshZone+":53") {
					hooked = true
				}
			}
		}
		if !hooked {
			add("error", m, "the cluster DNS (kube-system/coredns) has no "+meshZone+" zone: names under ."+meshZone+" do not resolve in its pods",
				fmt.Sprintf("`%s install --context %s` again adds it (--dns-hook), or add the block it prints with --dns-hook=false", commandName(), m.context))
		}
	}
}

// diagnoseRegistration checks that m is registered at the authority with
// the identity its certificate carries.
func diagnoseRegistration(ctx context.Context, auth, m *member, add addFunc) {
	ids := m.value("bridge.identities")
	fix := fmt.Sprintf("`%s join --context %s --context %s` registers it", commandName(), auth.context, m.context)
	sa, err := auth.cs.CoreV1().ServiceAccounts(auth.ns).Get(ctx, "member-"+m.name, metav1.GetOptions{})
	switch {
	case err != nil:
		sev := "warning"
		if m.dataPlane == "bridge" {
			sev = "error"
		}
		add(sev, m, fmt.Sprintf("the mesh authority %s has not registered it (no ServiceAccount %s/member-%s): it signs no certificate for %s", auth.name, auth.ns, m.name, dash(ids)), fix)
	case ids != "" && sa.Annotations[identitiesAnnotation] != ids:
		add("error", m, fmt.Sprintf("the mesh authority %s registered it for %s, but its certificate asks for %s", auth.name, dash(sa.Annotations[identitiesAnnotation]), ids), fix)
	}
}

// serverClock reads the API server's Date header: its time and how far
// it is from this machine's.
func serverClock(ctx context.Context, rc *rest.Config) (time.Time, time.Duration, error) {
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return time.Time{}, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(rc.Host, "/")+"/version", nil)
	if err != nil {
		return time.Time{}, 0, err
	}
	before := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return time.Time{}, 0, err
	}
	resp.Body.Close()
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Time{}, 0, err
	}
	// The header has whole seconds: compare with the middle of the request.
	mid := before.Add(time.Since(before) / 2)
	return t, t.Sub(mid.Truncate(time.Second)), nil
}

func printFindings(out io.Writer, fs []finding, clusters int) {
	if len(fs) == 0 {
		fmt.Fprintf(out, "No problem found in %d clusters.\n", clusters)
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEVERITY\tCLUSTER\tCAUSE")
	for _, f := range fs {
		fmt.Fprintf(w, "%s\t%s\t%s\n", strings.ToUpper(f.Severity), f.Cluster, f.Cause)
		if f.Fix != "" {
			fmt.Fprintf(w, "\t\t  fix: %s\n", f.Fix)
		}
	}
	w.Flush()
	fmt.Fprintf(out, "\n%s findings in %d clusters.\n", strconv.Itoa(len(fs)), clusters)
}
