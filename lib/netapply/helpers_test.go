package netapply

import (
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// Valid WireGuard keys for the test models.
const (
	keyB = "4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI/4ms="
	keyC = "0hNZgTv4lV2YkRB3O7nUoQ8xh0xHkqOQp2G0kYQ3yFw="
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func kubeLink(name string, age int, spec v1alpha1.KubeLinkSpec) v1alpha1.KubeLink {
	return v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))},
		Spec:       spec,
	}
}

func localLink(name, addr, cidr string) v1alpha1.KubeLink {
	return kubeLink(name, 0, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: addr, CIDR: cidr})
}

func peerLink(name, addr, cidr, key string, ingress ...string) v1alpha1.KubeLink {
	return kubeLink(name, 1, v1alpha1.KubeLinkSpec{ClusterAddress: addr, CIDR: cidr, Endpoint: name + ".example.org", PublicKey: key, Ingress: ingress})
}

func model(t *testing.T, links ...v1alpha1.KubeLink) *mesh.Model {
	t.Helper()
	m := mesh.Build(links, mesh.ParseOptions{DefaultPort: 8777})
	for name, v := range m.Verdicts {
		if !v.Accepted() {
			t.Fatalf("test model: link %s: %s %s", name, v.State, v.Message)
		}
	}
	return m
}

// oneMesh: local cluster a and peer b in the default mesh.
func oneMesh(t *testing.T) *mesh.Model {
	return model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"), peerLink("b", "192.168.0.12/24", "100.64.16.0/20", keyB))
}

// twoMeshes adds mesh "lab" with peer z, which gives SNAT a second chain.
func twoMeshes(t *testing.T) *mesh.Model {
	return model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"), peerLink("b", "192.168.0.12/24", "100.64.16.0/20", keyB),
		localLink("lab--a", "10.200.0.1/24", ""), peerLink("lab--z", "10.200.0.26/24", "100.64.48.0/20", keyC))
}

// do runs fn inside ns and fails the test on error.
func do(t *testing.T, ns *nstest.Namespace, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// ruleLines parses `iptables -S` output of a table into chain -> rule
// lines; a declared chain without rules maps to an empty slice.
func ruleLines(t *testing.T, ns *nstest.Namespace, cmd, table string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(ns.Run(t, cmd, "-t", table, "-S")), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-N", "-P":
			if out[f[1]] == nil {
				out[f[1]] = []string{}
			}
		case "-A":
			out[f[1]] = append(out[f[1]], l)
		}
	}
	return out
}

// expectedLines renders a rule set the way iptables -S prints it (the mesh
// rules are written in that canonical form).
func expectedLines(rs mesh.RuleSet, table string) map[string][]string {
	out := map[string][]string{}
	line := func(chain string, rule []string) string {
		var q []string
		for _, a := range rule {
			q = append(q, quoteArg(a))
		}
		return "-A " + chain + " " + strings.Join(q, " ")
	}
	for _, c := range rs.Chains {
		if c.Table != table {
			continue
		}
		out[c.Name] = []string{}
		for _, r := range c.Rules {
			out[c.Name] = append(out[c.Name], line(c.Name, r))
		}
	}
	for _, h := range rs.Hooks {
		if h.Table == table {
			out[h.Chain] = append(out[h.Chain], line(h.Chain, h.Rule))
		}
	}
	return out
}

// kubelinkOnly keeps the chains named KUBELINK-* and, of the built-in
// chains, the rules jumping to them.
func kubelinkOnly(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for c, lines := range m {
		if strings.HasPrefix(c, mesh.ChainPrefix) {
			out[c] = lines
			continue
		}
		for _, l := range lines {
			if strings.Contains(l, "-j "+mesh.ChainPrefix) {
				out[c] = append(out[c], l)
			}
		}
	}
	return out
}

// serve answers every TCP connection on addr (inside ns) with reply.
func serve(t *testing.T, ns *nstest.Namespace, addr, reply string) {
	t.Helper()
	var ln net.Listener
	do(t, ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.WriteString(c, reply)
			_ = c.Close()
		}
	}()
}

// dial connects from inside ns and returns what the server said.
func dial(ns *nstest.Namespace, addr string, timeout time.Duration) (string, error) {
	return dialFrom(ns, "", addr, timeout)
}

// dialFrom is dial from the local address src ("ip" or "ip:port"; "" lets
// the kernel choose).
func dialFrom(ns *nstest.Namespace, src, addr string, timeout time.Duration) (string, error) {
	d := net.Dialer{Timeout: timeout}
	if src != "" {
		if !strings.Contains(src, ":") {
			src += ":0"
		}
		a, err := net.ResolveTCPAddr("tcp", src)
		if err != nil {
			return "", err
		}
		d.LocalAddr = a
	}
	var reply string
	err := ns.Do(func() error {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		reply = string(b)
		return err
	})
	return reply, err
}

func sameLines(a, b map[string][]string) bool { return maps.EqualFunc(a, b, slices.Equal[[]string]) }

// withDNATProtocol adds "-p <proto>" to DNAT rules that lack it, taking the
// protocol from the rule jumping to their chain: iptables refuses
// "--to-destination ip:port" without a protocol in the same rule, and
// mesh.ServiceRules (when this was written) leaves it out of the spread
// rules. It changes nothing once lib/mesh adds the protocol itself.
func withDNATProtocol(t *testing.T, rs mesh.RuleSet) mesh.RuleSet {
	protoOf := map[string]string{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if i := slices.Index(r, "-p"); i >= 0 && i+1 < len(r) {
				protoOf[jumpTarget(r)] = r[i+1]
			}
		}
	}
	out := mesh.RuleSet{Hooks: rs.Hooks}
	for _, c := range rs.Chains {
		c.Rules = slices.Clone(c.Rules)
		for i, r := range c.Rules {
			if p := protoOf[c.Name]; p != "" && slices.Contains(r, "DNAT") && !slices.Contains(r, "-p") {
				t.Logf("mesh.ServiceRules: adding the missing -p %s to %s %q", p, c.Name, r)
				c.Rules[i] = append([]string{"-p", p}, r...)
			}
		}
		out.Chains = append(out.Chains, c)
	}
	return out
}
