package netapply

import (
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// foreignNAT puts things into nat that belong to someone else.
func foreignNAT(t *testing.T, ns *nstest.Namespace) {
	ns.Run(t, "iptables", "-t", "nat", "-N", "FOO")
	ns.Run(t, "iptables", "-t", "nat", "-A", "FOO", "-d", "10.9.9.9/32", "-j", "RETURN")
	ns.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
	ns.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", "FOO")
}

func newChains(t *testing.T, owned func(string) bool) *Chains {
	t.Helper()
	c, err := NewChains(owned, false)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func set(t *testing.T, ns *nstest.Namespace, c *Chains, rs mesh.RuleSet) {
	t.Helper()
	do(t, ns, func() error { return c.Set(rs) })
}

func TestChainsSetWritesExactlyOurChainsAndHooks(t *testing.T) {
	ns := nstest.New(t, "ipt")
	foreignNAT(t, ns)
	before := ruleLines(t, ns, "iptables", "nat")
	rs := twoMeshes(t).SNATRules(mesh.NATOptions{Device: "kubelink"})
	c := newChains(t, SNATChains)
	set(t, ns, c, rs)

	want := expectedLines(rs, "nat")
	got := ruleLines(t, ns, "iptables", "nat")
	if !sameLines(kubelinkOnly(got), want) {
		t.Errorf("our nat state:\n got %q\nwant %q", kubelinkOnly(got), want)
	}
	if !strings.HasPrefix(got["POSTROUTING"][0], "-A POSTROUTING -m comment") {
		t.Errorf("hook is not first in POSTROUTING: %q", got["POSTROUTING"])
	}
	for chain, lines := range before {
		for _, l := range lines {
			if !strings.Contains(strings.Join(got[chain], "\n"), l) {
				t.Errorf("foreign rule %q is gone", l)
			}
		}
	}
	if c.rewrites != len(rs.Chains) {
		t.Errorf("%d chains written, want %d", c.rewrites, len(rs.Chains))
	}
	for _, table := range []string{"filter", "mangle", "raw"} {
		if out := ns.Run(t, "iptables", "-t", table, "-S"); strings.Contains(out, mesh.ChainPrefix) {
			t.Errorf("table %s has kubelink rules:\n%s", table, out)
		}
	}
}

// packets reads the packet counter of a rule from iptables-save -c.
func packets(t *testing.T, ns *nstest.Namespace, table, rule string) int {
	t.Helper()
	re := regexp.MustCompile(`^\[(\d+):\d+\] ` + regexp.QuoteMeta(rule) + `$`)
	for _, l := range strings.Split(ns.Run(t, "iptables-save", "-c", "-t", table), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("rule %q not found", rule)
	return 0
}

func TestChainsSkipUnchangedAndRepairDrift(t *testing.T) {
	ns := nstest.New(t, "ipt")
	ns.Run(t, "ip", "link", "add", "kubelink", "type", "veth", "peer", "name", "klpeer")
	ns.Run(t, "ip", "addr", "add", "192.168.0.11/24", "dev", "kubelink")
	ns.Run(t, "ip", "link", "set", "kubelink", "up")
	ns.Run(t, "ip", "link", "set", "klpeer", "up")
	rs := oneMesh(t).SNATRules(mesh.NATOptions{Device: "kubelink"})
	want := expectedLines(rs, "nat")
	nt := rs.Chains[1].Name
	counted := want[nt][0] // "-s 192.168.0.0/24 -j RETURN": our own outgoing packets
	c := newChains(t, SNATChains)
	check := func(step string, rewrites int) {
		t.Helper()
		if got := kubelinkOnly(ruleLines(t, ns, "iptables", "nat")); !sameLines(got, want) {
			t.Errorf("%s: nat state\n got %q\nwant %q", step, got, want)
		}
		if c.rewrites != rewrites {
			t.Errorf("%s: %d chain writes, want %d", step, c.rewrites, rewrites)
		}
	}

	set(t, ns, c, rs)
	check("first Set", 2)
	// One packet into the mesh network: it passes our NT chain once.
	do(t, ns, func() error {
		conn, err := net.Dial("udp", "192.168.0.12:9")
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("x"))
		return err
	})
	if n := packets(t, ns, "nat", counted); n != 1 {
		t.Fatalf("counter of %q = %d, want 1", counted, n)
	}

	set(t, ns, c, rs)
	check("unchanged Set", 2)
	if n := packets(t, ns, "nat", counted); n != 1 {
		t.Errorf("unchanged Set reset the counter to %d", n)
	}

	ns.Run(t, "iptables", "-t", "nat", "-F", nt)
	set(t, ns, c, rs)
	check("after a hand flush", 3)
	if n := packets(t, ns, "nat", counted); n != 0 {
		t.Errorf("counter = %d after the rewrite, want 0 (was the chain really rewritten?)", n)
	}

	ns.Run(t, "iptables", "-t", "nat", "-A", mesh.ChainNAT, "-j", "RETURN")
	set(t, ns, c, rs)
	check("after a hand edit", 4)

	hook := rs.Hooks[0].Rule
	ns.Run(t, "iptables", append([]string{"-t", "nat", "-D", "POSTROUTING"}, hook...)...)
	set(t, ns, c, rs)
	check("after the hook was deleted", 4)

	ns.Run(t, "iptables", append([]string{"-t", "nat", "-A", "POSTROUTING"}, hook...)...)
	ns.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "kubelink", "-j", mesh.ChainNAT)
	ns.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", nt)
	set(t, ns, c, rs)
	check("after a duplicate, an old variant and a stray hook", 4)
}

func TestChainsRemoveWhatIsNoLongerWanted(t *testing.T) {
	ns := nstest.New(t, "ipt")
	foreignNAT(t, ns)
	before := ruleLines(t, ns, "iptables", "nat")
	c := newChains(t, SNATChains)
	two := twoMeshes(t).SNATRules(mesh.NATOptions{Device: "kubelink"})
	one := oneMesh(t).SNATRules(mesh.NATOptions{Device: "kubelink", PodInterface: "eth0"})
	set(t, ns, c, two)
	set(t, ns, c, one)
	if got := kubelinkOnly(ruleLines(t, ns, "iptables", "nat")); !sameLines(got, expectedLines(one, "nat")) {
		t.Errorf("after a smaller rule set:\n got %q\nwant %q", got, expectedLines(one, "nat"))
	}
	set(t, ns, c, mesh.RuleSet{})
	if got := ruleLines(t, ns, "iptables", "nat"); !sameLines(got, before) {
		t.Errorf("an empty rule set must restore the foreign state exactly:\n got %q\nwant %q", got, before)
	}
	set(t, ns, c, two)
	do(t, ns, c.CleanUp)
	if got := ruleLines(t, ns, "iptables", "nat"); !sameLines(got, before) {
		t.Errorf("CleanUp must restore the foreign state exactly:\n got %q\nwant %q", got, before)
	}
}

func serviceRules(t *testing.T) mesh.RuleSet {
	return withDNATProtocol(t, mesh.ServiceRules([]*mesh.ServiceBinding{{
		Key: "default/echo", Address: netip.MustParseAddr("192.168.0.100"),
		Ports: []mesh.BoundPort{{Protocol: "tcp", Port: 80, Targets: []netip.AddrPort{
			netip.MustParseAddrPort("10.1.1.2:8080"), netip.MustParseAddrPort("10.1.2.2:8080")}}},
	}}))
}

func TestChainsOfTwoConcernsCoexist(t *testing.T) {
	ns := nstest.New(t, "ipt")
	snat, svc := newChains(t, SNATChains), newChains(t, ServiceChains)
	snatRS := oneMesh(t).SNATRules(mesh.NATOptions{Device: "kubelink"})
	svcRS := serviceRules(t)
	set(t, ns, snat, snatRS)
	set(t, ns, svc, svcRS)
	set(t, ns, snat, snatRS)
	both := expectedLines(snatRS, "nat")
	for c, l := range expectedLines(svcRS, "nat") {
		both[c] = append(both[c], l...)
	}
	if got := kubelinkOnly(ruleLines(t, ns, "iptables", "nat")); !sameLines(got, both) {
		t.Errorf("both concerns:\n got %q\nwant %q", got, both)
	}
	do(t, ns, svc.CleanUp)
	if got := kubelinkOnly(ruleLines(t, ns, "iptables", "nat")); !sameLines(got, expectedLines(snatRS, "nat")) {
		t.Errorf("after removing services:\n got %q\nwant only SNAT %q", got, expectedLines(snatRS, "nat"))
	}
}

func TestCleanUpAllRemovesEveryKubelinkChain(t *testing.T) {
	ns := nstest.New(t, "ipt")
	foreignNAT(t, ns)
	ns.Run(t, "ip6tables", "-N", "BAR")
	ns.Run(t, "ip6tables", "-A", "INPUT", "-j", "BAR")
	var saved [2]string
	saved[0], saved[1] = ns.Run(t, "iptables", "-S"), ns.Run(t, "ip6tables", "-S")
	before := ruleLines(t, ns, "iptables", "nat")

	set(t, ns, newChains(t, SNATChains), oneMesh(t).SNATRules(mesh.NATOptions{Device: "kubelink"}))
	set(t, ns, newChains(t, ServiceChains), serviceRules(t))
	fw := model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"), peerLink("b", "192.168.0.12/24", "", keyB, "100.64.0.0/20"))
	set(t, ns, newChains(t, FirewallChains), fw.FirewallRules("kubelink", 8779))
	// Leftovers of some older version: a chain in raw with a hook, another
	// jumping to it, and one in ip6tables.
	ns.Run(t, "iptables", "-t", "raw", "-N", "KUBELINK-OLD")
	ns.Run(t, "iptables", "-t", "raw", "-N", "KUBELINK-OLDER")
	ns.Run(t, "iptables", "-t", "raw", "-A", "KUBELINK-OLDER", "-j", "KUBELINK-OLD")
	ns.Run(t, "iptables", "-t", "raw", "-A", "PREROUTING", "-j", "KUBELINK-OLDER")
	ns.Run(t, "ip6tables", "-t", "filter", "-N", "KUBELINK-X")
	ns.Run(t, "ip6tables", "-t", "filter", "-I", "FORWARD", "-j", "KUBELINK-X")

	do(t, ns, func() error { return CleanUpAll(false) })
	do(t, ns, func() error { return CleanUpAll(true) })
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if out := ns.Run(t, cmd); strings.Contains(out, mesh.ChainPrefix) {
			t.Errorf("%s still shows kubelink chains:\n%s", cmd, out)
		}
	}
	if got := ruleLines(t, ns, "iptables", "nat"); !sameLines(got, before) {
		t.Errorf("foreign nat state changed:\n got %q\nwant %q", got, before)
	}
	if got := ns.Run(t, "iptables", "-S"); got != saved[0] {
		t.Errorf("foreign filter state changed:\n%s\nwant\n%s", got, saved[0])
	}
	if got := ns.Run(t, "ip6tables", "-S"); got != saved[1] {
		t.Errorf("foreign ip6tables state changed:\n%s\nwant\n%s", got, saved[1])
	}
}

func TestChainsIPv6(t *testing.T) {
	ns := nstest.New(t, "ipt")
	c, err := NewChains(FirewallChains, true)
	if err != nil {
		t.Fatal(err)
	}
	rs := mesh.RuleSet{
		Hooks:  []mesh.Hook{{Table: "filter", Chain: "FORWARD", Rule: []string{"-i", "kubelink", "-j", mesh.ChainFirewall}}},
		Chains: []mesh.Chain{{Table: "filter", Name: mesh.ChainFirewall, Rules: [][]string{{"-d", "fd00::1/128", "-j", "DROP"}}}},
	}
	set(t, ns, c, rs)
	if got := kubelinkOnly(ruleLines(t, ns, "ip6tables", "filter")); !sameLines(got, expectedLines(rs, "filter")) {
		t.Errorf("ip6tables:\n got %q\nwant %q", got, expectedLines(rs, "filter"))
	}
	if out := ns.Run(t, "iptables-save"); strings.Contains(out, mesh.ChainPrefix) {
		t.Errorf("an IPv6 applier wrote IPv4 rules:\n%s", out)
	}
	do(t, ns, c.CleanUp)
	if out := ns.Run(t, "ip6tables-save"); strings.Contains(out, mesh.ChainPrefix) {
		t.Errorf("CleanUp left:\n%s", out)
	}
}

func TestChainsRejectRuleSetsOutsideTheirConcern(t *testing.T) {
	ns := nstest.New(t, "ipt")
	nat := func(name string, rules ...[]string) mesh.Chain {
		return mesh.Chain{Table: "nat", Name: name, Rules: rules}
	}
	jump := func(to string) []string { return []string{"-j", to} }
	tests := []struct {
		name string
		rs   mesh.RuleSet
		want string
	}{
		{"foreign chain", mesh.RuleSet{Chains: []mesh.Chain{nat("FOO")}}, "not owned by this applier"},
		{"chain of another concern", mesh.RuleSet{Chains: []mesh.Chain{nat(mesh.ChainServices)}}, "not owned"},
		{"unknown table", mesh.RuleSet{Chains: []mesh.Chain{{Table: "security", Name: mesh.ChainNAT}}}, `unsupported table "security"`},
		{"twice", mesh.RuleSet{Chains: []mesh.Chain{nat(mesh.ChainNAT), nat(mesh.ChainNAT)}}, "defined twice"},
		{"jump to a missing chain of ours", mesh.RuleSet{Chains: []mesh.Chain{nat(mesh.ChainNAT, jump("KUBELINK-NT-X"))}}, "does not define"},
		{"hook to a missing chain", mesh.RuleSet{Hooks: []mesh.Hook{{Table: "nat", Chain: "POSTROUTING", Rule: jump(mesh.ChainNAT)}}}, "not a chain of the rule set"},
		{"hook in a user chain", mesh.RuleSet{Chains: []mesh.Chain{nat(mesh.ChainNAT)}, Hooks: []mesh.Hook{{Table: "nat", Chain: "FOO", Rule: jump(mesh.ChainNAT)}}}, "not a built-in chain"},
		// A line break in a rule is contained per chain (the chain is
		// quarantined, the others written): TestQuarantineControlCharacters.
	}
	c := newChains(t, SNATChains)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ns.Do(func() error { return c.Set(tt.rs) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
		})
	}
	if out := ns.Run(t, "iptables-save"); strings.Contains(out, mesh.ChainPrefix) || strings.Contains(out, "FOO") {
		t.Errorf("a rejected rule set changed the kernel:\n%s", out)
	}
}

func TestQuoteAndSplitRoundTrip(t *testing.T) {
	args := []string{"-m", "comment", "--comment", `say "hi" \ there`, "-j", "RETURN", ""}
	var q []string
	for _, a := range args {
		q = append(q, quoteArg(a))
	}
	got, err := splitRule("-A X "+strings.Join(q, " "), "X")
	if err != nil || strings.Join(got, "|") != strings.Join(args, "|") {
		t.Errorf("round trip = %q, %v; want %q", got, err, args)
	}
	if _, err := splitWords(`-m comment --comment "open`); err == nil {
		t.Error("an unterminated quote must be an error")
	}
}

// TestConcernsOwnDisjointChains: every chain lib/mesh computes belongs to
// exactly one concern, or two appliers would fight over it.
func TestConcernsOwnDisjointChains(t *testing.T) {
	fw := model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"), peerLink("b", "192.168.0.12/24", "", keyB, "100.64.0.0/20"))
	concerns := map[string]func(string) bool{"snat": SNATChains, "services": ServiceChains, "firewall": FirewallChains}
	sets := map[string]mesh.RuleSet{
		"snat":     twoMeshes(t).SNATRules(mesh.NATOptions{Device: "kubelink"}),
		"services": serviceRules(t),
		"firewall": fw.FirewallRules("kubelink", 8779),
	}
	for concern, rs := range sets {
		for _, c := range rs.Chains {
			for other, owns := range concerns {
				if owns(c.Name) != (other == concern) {
					t.Errorf("chain %s of %s: owned by %s = %v", c.Name, concern, other, owns(c.Name))
				}
			}
		}
	}
}

// One bad chain must not fail the restore of its table: before the
// quarantine, an IPv6 prefix in one link's firewall chain made
// iptables-restore reject the whole mangle table, so no link had a firewall.
func TestChainsQuarantineABadChainAndWriteTheRest(t *testing.T) {
	ns := nstest.New(t, "ipq")
	m := model(t, localLink("a", "192.168.0.11/24", "100.64.0.0/20"), peerLink("b", "192.168.0.12/24", "100.64.16.0/20", keyB, "100.64.0.0/20"))
	rs := m.FirewallRules("kubelink", 8779)
	if len(rs.Chains) != 3 || rs.Chains[2].Name != mesh.FirewallChain("b") {
		t.Fatalf("want the top chain, the sources chain and b's chain, got %+v", rs.Chains)
	}
	good := rs.Chains[2]
	// A hostile chain rendered past every validation (the renderer never
	// does this since ParseLink rejects IPv6; this is the last line).
	bad := mesh.Chain{Table: "mangle", Name: mesh.FirewallChain("evil"), Rules: [][]string{{"-d", "fd00:50::/64", "-j", "RETURN"}, {"-j", "RETURN"}}}
	rs.Chains[0].Rules = append(rs.Chains[0].Rules, []string{"-s", "192.168.0.66/32", "-j", bad.Name})
	rs.Chains = append(rs.Chains, bad)

	c := newChains(t, FirewallChains)
	var err error
	err = doErr(t, ns, func() error { return c.Set(rs) })
	if err == nil || !strings.Contains(err.Error(), bad.Name) || !strings.Contains(err.Error(), "wrong address family") {
		t.Fatalf("Set = %v, want an error naming chain %s and the address family", err, bad.Name)
	}
	got := ruleLines(t, ns, "iptables", "mangle")
	want := expectedLines(mesh.RuleSet{Chains: []mesh.Chain{good}}, "mangle")
	if !slices.Equal(got[good.Name], want[good.Name]) || len(want[good.Name]) == 0 {
		t.Errorf("the good chain was not written as rendered:\n got %q\nwant %q", got[good.Name], want[good.Name])
	}
	if g := got[bad.Name]; len(g) != 1 || !strings.HasSuffix(g[0], "-j DROP") {
		t.Errorf("the bad chain must fail closed (one DROP), got %q", g)
	}
	if len(got["PREROUTING"]) != 1 || !strings.Contains(got["PREROUTING"][0], mesh.ChainFirewall) {
		t.Errorf("hook missing: %q", got["PREROUTING"])
	}

	// In nat a quarantined chain is empty (DROP is not allowed there).
	nat := newChains(t, SNATChains)
	nrs := m.SNATRules(mesh.NATOptions{Device: "kubelink"})
	nrs.Chains[1].Rules = append(nrs.Chains[1].Rules, []string{"-d", "fd00::/8", "-j", "SNAT", "--to-source", "192.168.0.11"})
	err = doErr(t, ns, func() error { return nat.Set(nrs) })
	if err == nil {
		t.Fatal("nat: want an error for the IPv6 rule")
	}
	gotNAT := ruleLines(t, ns, "iptables", "nat")
	if g, ok := gotNAT[nrs.Chains[1].Name]; !ok || len(g) != 0 {
		t.Errorf("nat: quarantined chain = %q (present %v), want empty", g, ok)
	}
	if len(gotNAT[mesh.ChainNAT]) == 0 {
		t.Error("nat: the top chain must still be written")
	}
}

func TestBadAddressFindsWrongFamilies(t *testing.T) {
	for _, tt := range []struct {
		rule []string
		v6   bool
		bad  bool
	}{
		{[]string{"-s", "10.0.0.0/8", "-d", "10.1.2.3/32", "-j", "RETURN"}, false, false},
		{[]string{"-d", "fd00::/64", "-j", "RETURN"}, false, true},
		{[]string{"-d", "10.0.0.0/8", "-j", "RETURN"}, true, true},
		{[]string{"-j", "DNAT", "--to-destination", "100.64.0.20:8080"}, false, false},
		{[]string{"-j", "DNAT", "--to-destination", "[fd00::1]:8080"}, false, true},
		{[]string{"-j", "SNAT", "--to-source", "garbage"}, false, true},
		{[]string{"!", "-o", "kubelink", "-j", "RETURN"}, false, false},
	} {
		if got := badAddress(tt.rule, tt.v6) != ""; got != tt.bad {
			t.Errorf("badAddress(%q, v6=%v) bad = %v, want %v", tt.rule, tt.v6, got, tt.bad)
		}
	}
}

// doErr runs fn in ns and returns fn's error (entering ns must work).
func doErr(t *testing.T, ns *nstest.Namespace, fn func() error) error {
	t.Helper()
	var inner error
	if err := ns.Do(func() error { inner = fn(); return nil }); err != nil {
		t.Fatal(err)
	}
	return inner
}
