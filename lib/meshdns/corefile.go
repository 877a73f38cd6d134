// Package meshdns makes <svc>.<ns>.svc.<cluster>.<mesh-domain> resolve in
// every member cluster: it renders the Corefile of the kubelink CoreDNS (one
// server block per remote cluster whose link is Up) and the coredns-custom
// hook of the cluster DNS, and a controller writes both and restarts CoreDNS
// when they change.
//
// Rendering is pure (Render, CorednsCustom, BuildInput) and golden-tested;
// the controller only moves the result into Secrets and ConfigMaps.
package meshdns

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Modes of --dns-propagation.
const (
	ModeNone       = "none"
	ModeDNS        = "dns"
	ModeKubernetes = "kubernetes"
)

// Defaults of the kubelink CoreDNS deployment (examples: Service kubelink-dns
// maps 53 to 8053; probes on 8080 and 8181).
const (
	DefaultPort       = 8053
	DefaultHealthAddr = ":8080"
	DefaultReadyAddr  = ":8181"
	// KubeconfigPath is where the deployment mounts the Secret key kubeconfig.
	KubeconfigPath = "/etc/coredns/kubeconfig"
)

// cacheSeconds caps how long an answer stays cached, so that names of a
// cluster whose link went Down stop resolving within seconds.
const cacheSeconds = 5

// cacheEntries is CoreDNS's default cache capacity, spelled out where a
// success or denial line must name it before its TTLs.
const cacheEntries = 10000

// cacheLines is the cache directive of the blocks that forward or ask an API
// server: answers at most cacheSeconds, failures (SERVFAIL) never. CoreDNS
// keeps a SERVFAIL 5 s by default, so one query that failed while a path
// was not ready yet (the first one after a link came Up) pinned the failure
// for 5 s (clusterlab's TestMeshDNSLinkGate saw a member's names come back
// more than 3 s after Up).
func cacheLines() []string {
	return []string{fmt.Sprintf("cache %d {", cacheSeconds), "    servfail 0", "}"}
}

// hookCache is cacheLines for the cluster DNS's block of a mesh domain, which
// also keeps TTLs below CoreDNS's minimum of 5 s: the link gate caps a
// member's answers, and its NXDOMAIN while the link is not Up, at 1 s, and a
// cluster DNS that raised them to 5 s kept a dead member's names up to 5 s
// after Down, and a returned member's NXDOMAIN up to 5 s after Up.
func hookCache() []string {
	return []string{
		fmt.Sprintf("cache %d {", cacheSeconds),
		fmt.Sprintf("    success %d %d 0", cacheEntries, cacheSeconds),
		fmt.Sprintf("    denial %d %d 0", cacheEntries, cacheSeconds),
		"    servfail 0",
		"}",
	}
}

// Input is everything the Corefile depends on. BuildInput derives it from
// the mesh model; tests write it by hand.
type Input struct {
	// Mode is ModeDNS or ModeKubernetes.
	Mode string
	// ClusterDomain and DNS describe the local cluster (dns mode: where the
	// local block forwards to).
	ClusterDomain string
	DNS           netip.AddrPort
	// Meshes the local cluster is a member of.
	Meshes []MeshInput

	// Port of every server block (0: DefaultPort).
	Port int
	// Bind restricts the listeners to one address ("": all; tests use
	// loopback).
	Bind string
	// HealthAddr and ReadyAddr of the health and ready plugins ("": defaults).
	HealthAddr, ReadyAddr string
	// KubeconfigPath is where CoreDNS finds the kubeconfig (kubernetes mode;
	// "": KubeconfigPath).
	KubeconfigPath string
	// Upstream is where the default block forwards names outside the meshes,
	// e.g. /etc/resolv.conf; "" forwards nothing (the kubelink CoreDNS only
	// gets mesh names from the cluster DNS hook).
	Upstream string

	// ClusterSetZone is the zone of the Multi-Cluster Services API's names,
	// <svc>.<ns>.svc.<zone> (ClusterSetZone: clusterset.local), served from
	// this cluster's ServiceImports by the kubernetes plugin's multicluster
	// option ("": no such block; the kubelink CoreDNS then reads no
	// Services and no ServiceImports).
	ClusterSetZone string
	// ClusterSetAPI, where set, reaches this cluster's API server through
	// the kubeconfig (its APIServer, Token, CA and Context) instead of the
	// pod's service account: for tests outside a cluster.
	ClusterSetAPI *Cluster
}

// ClusterSetZone is the zone of KEP-1645's names, which kubelink serves when
// the Multi-Cluster Services API is on (--clusterset-zone).
const ClusterSetZone = "clusterset.local"

// MeshInput is one mesh.
type MeshInput struct {
	Name string
	// Domain is the mesh domain, e.g. "kubelink".
	Domain string
	// LocalCluster is the name of the local cluster in the mesh ("": no block
	// for the local cluster).
	LocalCluster string
	// GlobalDNS is the mesh-global DNS server (invalid: none).
	GlobalDNS netip.Addr
	// Omit: the mesh takes no part in DNS propagation (dns.omitDNSPropagation
	// on its LocalLink).
	Omit bool
	// Clusters are the remote clusters whose link is Up.
	Clusters []Cluster
}

// Cluster is one remote cluster.
type Cluster struct {
	// Name is the cluster part of the link name.
	Name string
	// Domain is the cluster domain of the remote cluster.
	Domain string
	// DNS is the remote cluster DNS (dns mode).
	DNS netip.AddrPort
	// Context names the cluster in the kubeconfig (kubernetes mode): the link
	// object name, unique across meshes.
	Context string
	// APIServer, Token and CA reach the remote API server (kubernetes mode).
	APIServer string
	Token     string
	CA        []byte
	// Gated puts the kubelinkgate plugin for the link Context in front of
	// the block (dns mode, InputOptions.LinkGate).
	Gated bool
}

// Output is the content of the kubelink CoreDNS Secret.
type Output struct {
	Corefile   string
	Kubeconfig []byte
	// Warnings name blocks that were dropped because another block already
	// serves their zone.
	Warnings []string
}

// server is one server block before printing.
type server struct {
	zone string
	body []string
}

// Render produces the Corefile and kubeconfig of the kubelink CoreDNS.
// Output is deterministic: meshes and clusters are sorted by name.
func Render(in Input) (Output, error) {
	if err := in.validate(); err != nil {
		return Output{}, err
	}
	var out Output
	servers := []server{defaultServer(in)}
	seen := map[string]int{".": 0}
	add := func(s server) bool {
		if i, ok := seen[s.zone]; ok {
			if !slices.Equal(servers[i].body, s.body) {
				out.Warnings = append(out.Warnings, fmt.Sprintf("zone %s is defined twice (e.g. two meshes share a domain and a cluster name); keeping the first", s.zone))
			}
			return false
		}
		seen[s.zone] = len(servers)
		servers = append(servers, s)
		return true
	}
	var kubeClusters []Cluster
	for _, m := range sortedMeshes(in.Meshes) {
		if m.Omit {
			continue
		}
		if m.GlobalDNS.IsValid() {
			add(forwardServer("svc.global."+m.Domain, m.GlobalDNS.String()))
		}
		if m.LocalCluster != "" {
			add(localServer(in, m))
		}
		for _, c := range sortedClusters(m.Clusters) {
			zone := c.Name + "." + m.Domain
			if in.Mode == ModeKubernetes {
				if add(server{zone: zone, body: kubernetesPlugin(zone, &c, in.kubeconfigPath())}) {
					kubeClusters = append(kubeClusters, c)
				}
			} else {
				body := rewriteForward(zone, c.Domain, c.DNS)
				if c.Gated {
					body = append([]string{body[0], "kubelinkgate " + c.Context}, body[1:]...)
				}
				add(server{zone: zone, body: body})
			}
		}
		// Unknown clusters (e.g. a link that went Down) get NXDOMAIN here
		// instead of leaking to the default block's upstream.
		add(server{zone: m.Domain, body: []string{"errors", "template ANY ANY {", "    rcode NXDOMAIN", "}"}})
	}
	if in.ClusterSetZone != "" {
		if add(clusterSetServer(in.ClusterSetZone, in.ClusterSetAPI, in.kubeconfigPath())) && in.ClusterSetAPI != nil {
			kubeClusters = append(kubeClusters, *in.ClusterSetAPI)
		}
	}
	out.Corefile = printServers(servers, in.port(), in.Bind)
	kc, err := renderKubeconfig(kubeClusters)
	if err != nil {
		return Output{}, err
	}
	out.Kubeconfig = kc
	return out, nil
}

func (in *Input) kubeconfigPath() string {
	if in.KubeconfigPath == "" {
		return KubeconfigPath
	}
	return in.KubeconfigPath
}

func (in *Input) port() int {
	if in.Port == 0 {
		return DefaultPort
	}
	return in.Port
}

// dnsNameRE accepts lower-case DNS names; it also keeps Corefile syntax
// (braces, blanks, quotes) out of zone names.
var dnsNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func checkName(what, v string) error {
	if !dnsNameRE.MatchString(v) || len(v) > 253 {
		return fmt.Errorf("%s %q is not a lower-case DNS name", what, v)
	}
	return nil
}

// plainToken tells whether s can stand as (part of) one Corefile token:
// no blank or other space, no control character, brace, quote or comment.
func plainToken(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("{}\"#", r) || r == utf8.RuneError
	})
}

func (in *Input) validate() error {
	var errs []error
	switch in.Mode {
	case ModeDNS, ModeKubernetes:
	default:
		errs = append(errs, fmt.Errorf("mode %q: must be %s or %s", in.Mode, ModeDNS, ModeKubernetes))
	}
	if in.Port < 0 || in.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: must be 1-65535", in.Port))
	}
	if !plainToken(in.Upstream + in.HealthAddr + in.ReadyAddr + in.Bind + in.KubeconfigPath) {
		errs = append(errs, errors.New("upstream, bind, health and ready addresses and the kubeconfig path must not contain blanks, control characters, braces, quotes or #"))
	}
	if in.ClusterSetZone != "" {
		errs = append(errs, checkName("clusterset zone", in.ClusterSetZone))
		if in.ClusterSetAPI != nil {
			errs = append(errs, in.ClusterSetAPI.validate(ModeKubernetes, "(clusterset)"))
		}
	}
	for _, m := range in.Meshes {
		if m.Omit {
			continue
		}
		errs = append(errs, checkName("mesh "+m.Name+": domain", m.Domain))
		if in.ClusterSetZone != "" && (m.Domain == in.ClusterSetZone || strings.HasSuffix(m.Domain, "."+in.ClusterSetZone) || strings.HasSuffix(in.ClusterSetZone, "."+m.Domain)) {
			errs = append(errs, fmt.Errorf("mesh %s: domain %q overlaps the clusterset zone %q: choose another mesh domain", m.Name, m.Domain, in.ClusterSetZone))
		}
		if m.LocalCluster != "" {
			errs = append(errs, checkName("mesh "+m.Name+": local cluster", m.LocalCluster))
			if in.Mode == ModeDNS {
				errs = append(errs, checkName("local cluster domain", in.ClusterDomain))
				if !in.DNS.IsValid() {
					errs = append(errs, fmt.Errorf("mesh %s: local cluster %s: no cluster DNS address", m.Name, m.LocalCluster))
				}
			}
		}
		for _, c := range m.Clusters {
			errs = append(errs, c.validate(in.Mode, m.Name))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) validate(mode, mesh string) error {
	where := fmt.Sprintf("mesh %s: cluster %s", mesh, c.Name)
	errs := []error{checkName("mesh "+mesh+": cluster", c.Name)}
	if mode == ModeKubernetes {
		if !strings.HasPrefix(c.APIServer, "https://") || !plainToken(c.APIServer) {
			errs = append(errs, fmt.Errorf("%s: API server %q must be an https:// URL", where, c.APIServer))
		}
		if c.Token == "" {
			errs = append(errs, fmt.Errorf("%s: no API token", where))
		}
		// the context name is a token of the kubeconfig directive
		errs = append(errs, checkName(where+": kubeconfig context", c.Context))
		return errors.Join(errs...)
	}
	if c.Gated {
		// the link name is the kubelinkgate directive's argument
		errs = append(errs, checkName(where+": gate (link name)", c.Context))
	}
	errs = append(errs, checkName(where+": cluster domain", c.Domain))
	if !c.DNS.IsValid() {
		errs = append(errs, fmt.Errorf("%s: no DNS address", where))
	}
	return errors.Join(errs...)
}

func sortedMeshes(ms []MeshInput) []MeshInput {
	out := slices.Clone(ms)
	slices.SortFunc(out, func(a, b MeshInput) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func sortedClusters(cs []Cluster) []Cluster {
	out := slices.Clone(cs)
	slices.SortFunc(out, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func defaultServer(in Input) server {
	health, ready := in.HealthAddr, in.ReadyAddr
	if health == "" {
		health = DefaultHealthAddr
	}
	if ready == "" {
		ready = DefaultReadyAddr
	}
	body := []string{"errors", "health " + health, "ready " + ready}
	if in.Upstream != "" {
		// loop detects an upstream that forwards back to us.
		body = append(body, "forward . "+in.Upstream, "loop")
	} else {
		// Not ours: say so at once rather than fail.
		body = append(body, "template ANY ANY {", "    rcode REFUSED", "}")
	}
	// reload picks up a changed Secret even if a restart was missed.
	body = append(append(body, cacheLines()...), "reload 2s 1s")
	return server{zone: ".", body: body}
}

func forwardServer(zone, to string) server {
	return server{zone: zone, body: append(append([]string{"errors"}, cacheLines()...), "forward . "+to)}
}

// hookServer is the cluster DNS's block for a mesh domain (hookCache). It
// caches no SERVFAIL: while a member is dead but not yet Down, its queries
// time out (SERVFAIL), and a cached SERVFAIL (5 s by default) kept answering
// for seconds after the kubelink CoreDNS already said NXDOMAIN, differently
// per cluster-DNS replica (found in the kind lab, issue #11).
func hookServer(zone, to string) server {
	return server{zone: zone, body: append(append([]string{"errors"}, hookCache()...), "forward . "+to)}
}

// localServer serves the local cluster under the mesh domain, so that the
// same name works from every member, including this one.
func localServer(in Input, m MeshInput) server {
	zone := m.LocalCluster + "." + m.Domain
	if in.Mode == ModeKubernetes {
		return server{zone: zone, body: kubernetesPlugin(zone, nil, "")}
	}
	return server{zone: zone, body: rewriteForward(zone, in.ClusterDomain, in.DNS)}
}

// rewriteForward maps <name>.<zone> to <name>.<cluster-domain>, asks the
// cluster's DNS, and maps the answer back so clients see the name they asked.
func rewriteForward(zone, clusterDomain string, dnsServer netip.AddrPort) []string {
	from, to := regexp.QuoteMeta(zone+"."), regexp.QuoteMeta(clusterDomain+".")
	return append([]string{
		"errors",
		"rewrite stop {",
		fmt.Sprintf("    name regex ^(.*)\\.%s$ {1}.%s.", from, clusterDomain),
		fmt.Sprintf("    answer name ^(.*)\\.%s$ {1}.%s.", to, zone),
		fmt.Sprintf("    answer value ^(.*)\\.%s$ {1}.%s.", to, zone),
		"}",
		"forward . " + hostPort(dnsServer),
	}, cacheLines()...)
}

// kubernetesPlugin serves zone from a cluster's API server: the remote one
// through the kubeconfig context c.Context, or the local one (c == nil) with
// the pod's service account.
func kubernetesPlugin(zone string, c *Cluster, kubeconfig string) []string {
	body := []string{"errors", "kubernetes " + zone + " {"}
	if c != nil {
		body = append(body,
			"    endpoint "+c.APIServer,
			fmt.Sprintf("    kubeconfig %s %s", kubeconfig, c.Context))
	}
	return append(append(body, fmt.Sprintf("    ttl %d", cacheSeconds), "}"), cacheLines()...)
}

// clusterSetServer serves <svc>.<ns>.svc.<zone> from this cluster's
// ServiceImports (the kubernetes plugin's multicluster option): the
// ServiceImport's IP for a ClusterSetIP import (A, and SRV per named port),
// nothing for a name that no cluster exports. api (tests) reaches the API
// server through the kubeconfig; nil uses the pod's service account.
func clusterSetServer(zone string, api *Cluster, kubeconfig string) server {
	body := []string{"errors", "kubernetes " + zone + " {"}
	if api != nil {
		body = append(body,
			"    endpoint "+api.APIServer,
			fmt.Sprintf("    kubeconfig %s %s", kubeconfig, api.Context))
	}
	// No cache plugin: the kubernetes plugin answers from its informers'
	// memory, and a cache would keep a withdrawn name up to 5 s longer.
	body = append(body, "    multicluster "+zone, fmt.Sprintf("    ttl %d", cacheSeconds), "}")
	return server{zone: zone, body: body}
}

// hostPort prints a DNS server address; port 53 is implied.
func hostPort(ap netip.AddrPort) string {
	if ap.Port() == 0 || ap.Port() == 53 {
		return ap.Addr().String()
	}
	return ap.String()
}

func printServers(servers []server, port int, bind string) string {
	var b strings.Builder
	b.WriteString("# Generated by kubelink-meshdns; edits are overwritten.\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "%s:%d {\n", s.zone, port)
		if bind != "" {
			fmt.Fprintf(&b, "    bind %s\n", bind)
		}
		for _, line := range s.body {
			fmt.Fprintf(&b, "    %s\n", line)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// CoreDNSVersion is the CoreDNS the Corefile is written and tested for
// (rewrite with "answer value" and the template plugin need a recent one).
const CoreDNSVersion = "v1.14.0"
