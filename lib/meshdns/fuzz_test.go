package meshdns

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// The values that end up in the Corefile come from KubeLinks, LocalLinks and
// peers' handshakes: none of them may add a directive, a server block or a
// token. checkCorefile is a small structural reader of what Render prints;
// it accepts only the shapes Render means to print.

// fuzzDirectives maps the directives allowed at each depth to the number of
// tokens of their line, without an opening brace at its end.
var fuzzDirectives = map[int]map[string]int{
	1: {"errors": 1, "health": 2, "ready": 2, "forward": 3, "loop": 1, "template": 3, "cache": 2,
		"reload": 3, "rewrite": 2, "kubelinkgate": 2, "kubernetes": 2, "bind": 2},
	2: {"rcode": 2, "name": 4, "answer": 4, "servfail": 2, "success": 4, "denial": 4, "endpoint": 2, "kubeconfig": 3, "ttl": 2},
}

var fuzzHeader = regexp.MustCompile(`^(\.|[a-z0-9][-a-z0-9.]*):[0-9]+ \{$`)

func checkCorefile(corefile string) error {
	lines := strings.Split(strings.TrimSuffix(corefile, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return fmt.Errorf("no header comment")
	}
	depth := 0
	for i, l := range lines[1:] {
		where := fmt.Sprintf("line %d %q", i+2, l)
		if strings.ContainsAny(l, "#\"\r\x00") {
			return fmt.Errorf("%s: comment, quote or control character", where)
		}
		words := strings.Fields(l)
		switch {
		case depth == 0:
			if !fuzzHeader.MatchString(l) {
				return fmt.Errorf("%s: not a server block header", where)
			}
			depth = 1
			continue
		case len(words) == 1 && words[0] == "}":
			depth--
			continue
		case len(words) == 0:
			return fmt.Errorf("%s: empty line in a block", where)
		}
		n, ok := fuzzDirectives[depth][words[0]]
		if !ok {
			return fmt.Errorf("%s: unknown directive at depth %d", where, depth)
		}
		opens := words[len(words)-1] == "{"
		if opens {
			words = words[:len(words)-1]
		}
		if len(words) != n {
			return fmt.Errorf("%s: %d tokens, want %d", where, len(words), n)
		}
		// {1} is the rewrite plugin's back reference; no other brace.
		if strings.ContainsAny(strings.ReplaceAll(strings.Join(words, " "), "{1}", ""), "{}") {
			return fmt.Errorf("%s: brace inside a token", where)
		}
		if opens {
			depth++
		}
		if depth > 2 {
			return fmt.Errorf("%s: blocks nested too deep", where)
		}
	}
	if depth != 0 {
		return fmt.Errorf("unbalanced braces at the end (depth %d)", depth)
	}
	return nil
}

// Whatever the names, domains, addresses and kubeconfig values hold, Render
// and CorednsCustom never panic, and what they accept prints only the
// intended directives: no injected line, block or token.
func FuzzRender(f *testing.F) {
	f.Add(true, "kubelink", "a", "b", "cluster.local", "b", "https://10.0.0.1:6443", "tok", "/etc/resolv.conf", "")
	f.Add(false, "kubelink", "a", "b", "cluster.local", "lab--b", "https://10.0.0.1:6443", "tok", "", "127.0.0.1")
	f.Add(true, "kubelink", "a", "b", "cluster.local", "b\n    import evil", "https://10.0.0.1:6443", "tok", "", "")
	f.Add(false, "kubelink", "a", "b", "cluster.local", "b c", "https://10.0.0.1:6443", "tok", "1.1.1.1\u00a0x", "")
	f.Add(true, "kube}link", "a\nimport x", "b {", "cluster.local\r", "b\n}\nfoo {", "https://x {", "t\nk", "1.1.1.1\rx", "")
	f.Fuzz(func(t *testing.T, dnsMode bool, domain, local, cluster, clusterDomain, context, apiServer, token, upstream, bind string) {
		mode := ModeKubernetes
		if dnsMode {
			mode = ModeDNS
		}
		in := Input{
			Mode: mode, ClusterDomain: clusterDomain, DNS: netip.MustParseAddrPort("10.96.0.10:53"),
			Upstream: upstream, Bind: bind,
			Meshes: []MeshInput{{
				Name: "default", Domain: domain, LocalCluster: local,
				GlobalDNS: netip.MustParseAddr("100.64.0.10"),
				Clusters: []Cluster{{
					Name: cluster, Domain: clusterDomain, DNS: netip.MustParseAddrPort("100.64.16.10:53"),
					Context: context, APIServer: apiServer, Token: token, Gated: true,
				}},
			}},
		}
		out, err := Render(in)
		if err == nil {
			if err := checkCorefile(out.Corefile); err != nil {
				t.Fatalf("Render accepted %+v and printed a Corefile with %v:\n%s", in, err, out.Corefile)
			}
		}
		hook, err := CorednsCustom(in.Meshes, "", netip.MustParseAddr("10.96.0.11"), 0)
		if err == nil {
			if err := checkCorefile(hook); err != nil {
				t.Fatalf("CorednsCustom accepted domain %q and printed %v:\n%s", domain, err, hook)
			}
		}
	})
}

// The reader of the fuzz target must itself reject what it guards against.
func TestCheckCorefileRejectsInjections(t *testing.T) {
	good := "# x\n.:53 {\n    errors\n    template ANY ANY {\n        rcode NXDOMAIN\n    }\n}\n"
	if err := checkCorefile(good); err != nil {
		t.Fatalf("good Corefile rejected: %v", err)
	}
	for _, bad := range []string{
		"# x\n.:53 {\n    errors\n    import evil\n}\n",
		"# x\n.:53 {\n    forward . 1.1.1.1 2.2.2.2\n}\n",
		"# x\n.:53 {\n    kubelinkgate b\n}\n}\n",
		"# x\n.:53 {\n    errors\n",
		"# x\nb {:53 {\n    errors\n}\n",
		"# x\n.:53 {\n    forward . 1.1.1.1\r\n}\n",
		"# x\n.:53 {\n    errors # hidden\n}\n",
	} {
		if checkCorefile(bad) == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Each value that becomes a Corefile token is refused when it would add a
// token, a line or a block (the cases the fuzz target found or guards).
func TestRenderRejectsTokenInjection(t *testing.T) {
	base := func(mode string) Input {
		return Input{Mode: mode, ClusterDomain: "cluster.local", DNS: netip.MustParseAddrPort("10.96.0.10:53"),
			Meshes: []MeshInput{{Name: "default", Domain: "kubelink", LocalCluster: "a",
				Clusters: []Cluster{{Name: "b", Domain: "cluster.local", DNS: netip.MustParseAddrPort("100.64.16.10:53"),
					Context: "b", APIServer: "https://10.0.0.1:6443", Token: "tok", Gated: true}}}}}
	}
	for _, mode := range []string{ModeDNS, ModeKubernetes} {
		if _, err := Render(base(mode)); err != nil {
			t.Fatalf("%s: the valid input is refused: %v", mode, err)
		}
	}
	for _, tc := range []struct {
		name, mode, want string
		edit             func(*Input)
	}{
		{"gate link name with a new line", ModeDNS, "gate (link name)", func(in *Input) { in.Meshes[0].Clusters[0].Context = "b\n    import evil" }},
		{"kubeconfig context with a blank", ModeKubernetes, "kubeconfig context", func(in *Input) { in.Meshes[0].Clusters[0].Context = "b extra" }},
		{"upstream with a carriage return", ModeDNS, "upstream", func(in *Input) { in.Upstream = "1.1.1.1\rimport x" }},
		{"bind with a no-break space", ModeDNS, "upstream, bind", func(in *Input) { in.Bind = "127.0.0.1\u00a0x" }},
		{"API server with a vertical tab", ModeKubernetes, "API server", func(in *Input) { in.Meshes[0].Clusters[0].APIServer = "https://x\vy" }},
	} {
		in := base(tc.mode)
		tc.edit(&in)
		_, err := Render(in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Render error %v, want one naming %q", tc.name, err, tc.want)
		}
	}
}
