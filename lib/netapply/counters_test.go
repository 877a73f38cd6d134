package netapply

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

func TestSumDropsCountsOnlyDropRules(t *testing.T) {
	lines := []string{
		"-N KUBELINK-FW-X",
		"-A KUBELINK-FW-X -d 192.168.0.11/32 -p udp -m udp --dport 8779 -c 40 2000 -j RETURN",
		"-A KUBELINK-FW-X -d 100.64.0.21/32 -c 3 180 -j DROP",
		"-A KUBELINK-FW-X -d 100.64.0.0/20 -c 9 500 -j RETURN",
		"-A KUBELINK-FW-X -c 5 300 -j DROP",
	}
	if got := sumDrops(lines); got != 8 {
		t.Errorf("sumDrops = %d, want 8", got)
	}
}

func TestParseTableKeepsChainsAndRulesInOrder(t *testing.T) {
	st, err := parseTable([]string{
		"-P PREROUTING ACCEPT",
		"-N KUBELINK-FW-A",
		"-N KUBELINK-FW-B",
		"-A PREROUTING -i wg0 -j KUBELINK-FW",
		"-A KUBELINK-FW-A -s 1.2.3.4/32 -m comment --comment \"a  b\" -j DROP",
		"-A KUBELINK-FW-A -j RETURN",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PREROUTING", "KUBELINK-FW-A", "KUBELINK-FW-B"}; !slices.Equal(st.chains, want) {
		t.Errorf("chains %q, want %q", st.chains, want)
	}
	if got := st.rules["KUBELINK-FW-A"]; len(got) != 2 || got[0] != "-A KUBELINK-FW-A -s 1.2.3.4/32 -m comment --comment \"a  b\" -j DROP" {
		t.Errorf("rules of KUBELINK-FW-A: %q", got)
	}
	if !st.has("KUBELINK-FW-B") || len(st.rules["KUBELINK-FW-B"]) != 0 || st.has("KUBELINK-FW-C") {
		t.Errorf("empty chain B or missing chain C wrong: %v", st.rules)
	}
	for _, bad := range [][]string{{"-A X -j DROP"}, {"-X FOO"}, {"-N"}} {
		if _, err := parseTable(bad); err == nil {
			t.Errorf("parseTable(%q) accepted it", bad)
		}
	}
}

// A pass lists each table once, whatever the number of chains (a listing per
// chain made the broker's pass cost links × table size, issue #33), and a
// pass that writes lists the table once more; Drops is one listing too and
// counts each chain's DROP rules.
func TestChainsListEachTableOncePerPass(t *testing.T) {
	ns := nstest.New(t, "ipt")
	c := newChains(t, FirewallChains)
	lists := 0
	real := c.list
	c.list = func(table string, counters bool) ([]string, error) {
		lists++
		return real(table, counters)
	}
	const n = 60
	rs := mesh.RuleSet{}
	for i := range n {
		name := fmt.Sprintf("%sFW-%d", mesh.ChainPrefix, i)
		rs.Chains = append(rs.Chains, mesh.Chain{Table: "mangle", Name: name, Rules: [][]string{
			{"-s", fmt.Sprintf("10.1.%d.0/24", i), "-j", "RETURN"}, {"-j", "DROP"}}})
	}
	rs.Chains = append(rs.Chains, mesh.Chain{Table: "mangle", Name: mesh.ChainFirewall, Rules: [][]string{{"-j", "RETURN"}}})
	rs.Hooks = []mesh.Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-j", mesh.ChainFirewall}}}

	now := time.Now()
	c.now = func() time.Time { return now }
	set(t, ns, c, rs)
	if want := len(tables) + 1; lists != want {
		t.Errorf("first pass (writes %d chains): %d listings, want %d (one per table, one after the write)", n+1, lists, want)
	}
	// Later passes list only mangle: the other tables had nothing of ours.
	lists = 0
	set(t, ns, c, rs)
	if lists != 1 || c.rewrites != n+1 {
		t.Errorf("unchanged pass: %d listings and %d writes in all, want 1 (mangle) and %d", lists, c.rewrites, n+1)
	}
	// Drift behind our back in one chain: found in the same listing, and
	// only that chain is written again.
	ns.Run(t, "iptables", "-t", "mangle", "-A", mesh.ChainPrefix+"FW-7", "-j", "ACCEPT")
	lists = 0
	set(t, ns, c, rs)
	if lists != 2 || c.rewrites != n+2 {
		t.Errorf("pass after drift: %d listings and %d writes in all, want 2 and %d", lists, c.rewrites, n+2)
	}
	// A chain of ours in a table we want nothing in (another copy's, an
	// older version's) goes at the next sweep of every table.
	ns.Run(t, "iptables", "-t", "filter", "-N", mesh.ChainPrefix+"FW-old")
	lists = 0
	set(t, ns, c, rs)
	if lists != 1 {
		t.Errorf("pass before the sweep: %d listings, want 1", lists)
	}
	now = now.Add(tableSweep)
	lists = 0
	set(t, ns, c, rs)
	if lists != len(tables) {
		t.Errorf("pass at the sweep: %d listings, want %d (every table)", lists, len(tables))
	}
	if out := ns.Run(t, "iptables", "-t", "filter", "-S"); strings.Contains(out, "FW-old") {
		t.Errorf("the stale chain in filter survived the sweep:\n%s", out)
	}

	// One packet dropped by chain 3's DROP rule (the sender sees EPERM),
	// none by the others.
	ns.Run(t, "iptables", "-t", "mangle", "-I", "OUTPUT", "-d", "127.0.0.9/32", "-j", mesh.ChainPrefix+"FW-3")
	do(t, ns, func() error {
		conn, err := net.Dial("udp", "127.0.0.9:9")
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err = conn.Write([]byte("x")); err == nil {
			return fmt.Errorf("the packet was not dropped")
		}
		return nil
	})
	lists = 0
	var drops map[string]uint64
	do(t, ns, func() (err error) { drops, err = c.Drops("mangle"); return err })
	if lists != 1 {
		t.Errorf("Drops: %d listings, want 1", lists)
	}
	if len(drops) != n+1 || drops[mesh.ChainPrefix+"FW-3"] != 1 || drops[mesh.ChainPrefix+"FW-4"] != 0 {
		t.Errorf("drops: %d chains, FW-3 %d (want 1), FW-4 %d (want 0)", len(drops), drops[mesh.ChainPrefix+"FW-3"], drops[mesh.ChainPrefix+"FW-4"])
	}
}

// Update, between two Sets, trusts what it wrote: an unchanged rule set runs
// no iptables command, a changed chain is one iptables-restore (and Settle,
// later, one listing of its table), a chain no longer wanted is removed
// after the chain that jumped to it was rewritten; what changed behind its
// back is found by the next Set, a chain not yet settled is written again
// by Set, and a failed write or a written chain gone before Settle makes
// the next Update list again (issue #33: one change to one link must not
// cost a listing of every table, nor wait for one).
func TestUpdateWritesOnlyWhatChangedWithoutListing(t *testing.T) {
	ns := nstest.New(t, "ipt")
	c := newChains(t, FirewallChains)
	lists, restores := 0, 0
	realList, realRestore := c.list, c.restore
	c.list = func(table string, counters bool) ([]string, error) {
		lists++
		return realList(table, counters)
	}
	failRestore := false
	c.restore = func(in []byte) error {
		restores++
		if failRestore {
			return fmt.Errorf("injected failure")
		}
		return realRestore(in)
	}
	chain := func(i int) string { return fmt.Sprintf("%sFW-%d", mesh.ChainPrefix, i) }
	ruleSet := func(n int, source func(i int) string, skip int) mesh.RuleSet {
		rs := mesh.RuleSet{}
		top := mesh.Chain{Table: "mangle", Name: mesh.ChainFirewall}
		for i := range n {
			if i == skip {
				continue
			}
			rs.Chains = append(rs.Chains, mesh.Chain{Table: "mangle", Name: chain(i), Rules: [][]string{
				{"-s", source(i), "-j", "RETURN"}, {"-j", "DROP"}}})
			// The top chain jumps to each: a chain removed is first no
			// longer jumped to.
			top.Rules = append(top.Rules, []string{"-d", fmt.Sprintf("10.9.%d.0/24", i), "-g", chain(i)})
		}
		top.Rules = append(top.Rules, []string{"-j", "RETURN"})
		rs.Chains = append(rs.Chains, top)
		rs.Hooks = []mesh.Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-j", mesh.ChainFirewall}}}
		return rs
	}
	base := func(i int) string { return fmt.Sprintf("10.1.%d.0/24", i) }
	update := func(rs mesh.RuleSet) { t.Helper(); do(t, ns, func() error { return c.Update(rs) }) }
	settle := func() { t.Helper(); do(t, ns, c.Settle) }
	reset := func() { lists, restores = 0, 0 }
	const n = 30
	rs := ruleSet(n, base, -1)

	// Before any Set, Update lists as Set does.
	update(rs)
	if lists == 0 || restores != 1 {
		t.Fatalf("first Update: %d listings and %d restores, want listings and one restore", lists, restores)
	}
	reset()
	update(rs)
	if lists != 0 || restores != 0 {
		t.Errorf("unchanged Update: %d listings and %d restores, want none", lists, restores)
	}

	// One chain changes: one restore and no listing, and the kernel has
	// it; Settle then lists its table once, and a second Settle nothing.
	changed := func(i int) string {
		if i == 5 {
			return "10.2.5.0/24"
		}
		return base(i)
	}
	rs = ruleSet(n, changed, -1)
	reset()
	writes := c.rewrites
	update(rs)
	if lists != 0 || restores != 1 || c.rewrites != writes+1 {
		t.Errorf("one chain changed: %d listings, %d restores, %d chains written; want 0, 1, 1", lists, restores, c.rewrites-writes)
	}
	if got := ruleLines(t, ns, "iptables", "mangle")[chain(5)]; len(got) == 0 || !strings.Contains(got[0], "10.2.5.0/24") {
		t.Errorf("chain 5 in the kernel after Update: %q, want its new source", got)
	}
	reset()
	settle()
	settle()
	if lists != 1 || restores != 0 {
		t.Errorf("two Settles after one Update: %d listings and %d restores, want 1 and 0", lists, restores)
	}

	// A chain no longer wanted goes once the top chain no longer jumps to
	// it (rewritten first, in the same Update).
	rs = ruleSet(n, changed, 7)
	reset()
	writes = c.rewrites
	update(rs)
	if lists != 0 || restores != 1 || c.rewrites != writes+1 {
		t.Errorf("a chain removed: %d listings, %d restores, %d chains written; want 0, 1, 1 (the top chain)", lists, restores, c.rewrites-writes)
	}
	if _, ok := ruleLines(t, ns, "iptables", "mangle")[chain(7)]; ok {
		t.Errorf("chain 7 is still in the kernel after Update removed it")
	}
	settle()

	// A Set now finds everything Update wrote as it recorded it: nothing
	// is written again (a write would reset the drop counters).
	writes = c.rewrites
	set(t, ns, c, rs)
	if c.rewrites != writes {
		t.Errorf("Set after Updates: %d chains written again, want none", c.rewrites-writes)
	}

	// A Set before Settle cannot know what iptables printed for a chain
	// just written: it writes that chain again rather than trust it.
	rs5 := ruleSet(n, base, 7)
	update(rs5)
	writes = c.rewrites
	set(t, ns, c, rs5)
	if c.rewrites != writes+1 {
		t.Errorf("Set after an Update without Settle: %d chains written, want 1 (the one Update wrote)", c.rewrites-writes)
	}
	reset()
	settle()
	if lists != 0 {
		t.Errorf("Settle after Set: %d listings, want none (Set settled the table)", lists)
	}

	// A chain Update wrote and someone deleted before Settle listed it:
	// Settle says so and forgets it, and the next Update writes it again.
	update(rs)
	ns.Run(t, "iptables", "-t", "mangle", "-F", mesh.ChainFirewall)
	ns.Run(t, "iptables", "-t", "mangle", "-F", chain(5))
	ns.Run(t, "iptables", "-t", "mangle", "-X", chain(5))
	if err := ns.Do(c.Settle); err == nil || !strings.Contains(err.Error(), chain(5)) {
		t.Errorf("Settle with a written chain deleted: %v, want an error naming %s", err, chain(5))
	}
	reset()
	update(rs)
	if lists == 0 || restores == 0 {
		t.Errorf("Update after Settle found a chain missing: %d listings and %d restores, want the table listed and written", lists, restores)
	}
	if got := ruleLines(t, ns, "iptables", "mangle")[chain(5)]; len(got) != 2 {
		t.Errorf("chain 5 after the Update that followed: %q, want its two rules", got)
	}
	settle()

	// A chain Update wrote and someone flushed before Settle listed it:
	// Settle does not record the flushed copy as what it wrote (Set would
	// then never repair it); the next Update writes it again.
	flushed := ruleSet(n, base, 7)
	update(flushed)
	ns.Run(t, "iptables", "-t", "mangle", "-F", chain(5))
	if err := ns.Do(c.Settle); err == nil || !strings.Contains(err.Error(), chain(5)) {
		t.Errorf("Settle with a written chain flushed: %v, want an error naming %s", err, chain(5))
	}
	reset()
	update(flushed) // the same rule set: only the forgotten chain is written
	if lists == 0 || restores != 1 {
		t.Errorf("Update after Settle found a chain flushed: %d listings and %d restores, want the table listed and one restore", lists, restores)
	}
	settle()
	if got := ruleLines(t, ns, "iptables", "mangle")[chain(5)]; len(got) != 2 || !strings.Contains(got[0], base(5)) {
		t.Errorf("chain 5 after the Update that followed the flush: %q, want its two rules with %s", got, base(5))
	}
	update(rs)
	settle()

	// Drift behind our back — a rule added to chain 3, and chain 5, which
	// Update wrote, flushed: Update cannot see it, the next Set repairs both.
	ns.Run(t, "iptables", "-t", "mangle", "-A", chain(3), "-j", "ACCEPT")
	ns.Run(t, "iptables", "-t", "mangle", "-F", chain(5))
	reset()
	update(rs)
	if lists != 0 || restores != 0 {
		t.Errorf("Update after drift: %d listings and %d restores, want none", lists, restores)
	}
	writes = c.rewrites
	set(t, ns, c, rs)
	if c.rewrites != writes+2 {
		t.Errorf("Set after drift: %d chains written, want 2 (the drifted 3 and the flushed 5)", c.rewrites-writes)
	}
	rules := ruleLines(t, ns, "iptables", "mangle")
	if got := rules[chain(3)]; len(got) != 2 {
		t.Errorf("chain 3 after Set: %q, want its two rules again", got)
	}
	if got := rules[chain(5)]; len(got) != 2 || !strings.Contains(got[0], "10.2.5.0/24") {
		t.Errorf("the flushed chain 5 after Set: %q, want its two rules again", got)
	}

	// A failed write: the next Update lists again, and writes.
	rs = ruleSet(n, base, 7)
	failRestore = true
	if err := ns.Do(func() error { return c.Update(rs) }); err == nil {
		t.Fatal("Update with a failing iptables-restore returned no error")
	}
	failRestore = false
	reset()
	update(rs)
	if lists == 0 || restores != 1 {
		t.Errorf("Update after a failed write: %d listings and %d restores, want listings and one restore", lists, restores)
	}
	if got := ruleLines(t, ns, "iptables", "mangle")[chain(5)]; len(got) == 0 || !strings.Contains(got[0], base(5)) {
		t.Errorf("chain 5 after the repeated Update: %q, want %s", got, base(5))
	}

	// Other hooks: through Set's path (a listing).
	rs.Hooks = append(rs.Hooks, mesh.Hook{Table: "mangle", Chain: "OUTPUT", Rule: []string{"-j", mesh.ChainFirewall}})
	reset()
	update(rs)
	if lists == 0 {
		t.Errorf("Update with a new hook listed nothing; want the table listed")
	}
	if out := ns.Run(t, "iptables", "-t", "mangle", "-S", "OUTPUT"); !strings.Contains(out, mesh.ChainFirewall) {
		t.Errorf("the new hook is missing:\n%s", out)
	}
}
