package netapply

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// applyOps plays ops on a chain the way iptables does.
func applyOps(t *testing.T, chain [][]string, ops []ruleOp) [][]string {
	t.Helper()
	chain = slices.Clone(chain)
	for _, op := range ops {
		switch {
		case op.delete:
			if op.pos < 1 || op.pos > len(chain) {
				t.Fatalf("delete at %d of a chain of %d", op.pos, len(chain))
			}
			chain = slices.Delete(chain, op.pos-1, op.pos)
		case op.pos == 0:
			chain = append(chain, op.rule)
		default:
			// iptables refuses an insert past the end; an insert at
			// the end must be an append (pos 0).
			if op.pos < 1 || op.pos > len(chain) {
				t.Fatalf("insert at %d into a chain of %d", op.pos, len(chain))
			}
			chain = slices.Insert(chain, op.pos-1, op.rule)
		}
	}
	return chain
}

func rules(names ...string) [][]string {
	var out [][]string
	for _, n := range names {
		out = append(out, []string{"-s", n, "-j", "RETURN"})
	}
	return out
}

func TestChainEditKeepsSharedRulesAndReachesWant(t *testing.T) {
	// Fixed cases: what is edited, and when the chain is written whole.
	cases := []struct {
		name      string
		old, want [][]string
		ok        bool
		ops       int
	}{
		{"one rule changed in the middle", rules("a", "b", "c", "d", "e"), rules("a", "b", "X", "d", "e"), true, 2},
		{"one rule moved to the end", rules("a", "b", "c", "d", "e"), rules("a", "c", "d", "e", "b"), true, 2},
		{"one appended", rules("a", "b", "c"), rules("a", "b", "c", "d"), true, 1},
		{"one removed", rules("a", "b", "c"), rules("a", "c"), true, 1},
		{"everything different", rules("a", "b", "c"), rules("x", "y", "z"), false, 0},
		{"a rule repeats in want", rules("a", "b", "c"), rules("a", "b", "b", "c"), false, 0},
		{"a rule repeats in old", rules("a", "a", "c"), rules("a", "c"), false, 0},
		{"nothing written before", nil, rules("a"), false, 0},
		{"nothing wanted", rules("a"), nil, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops, keptFrom, ok := chainEdit(c.old, c.want)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v (ops %v)", ok, c.ok, ops)
			}
			if !ok {
				return
			}
			if len(ops) != c.ops {
				t.Errorf("%d edits, want %d: %v", len(ops), c.ops, ops)
			}
			if got := applyOps(t, c.old, ops); !slices.EqualFunc(got, c.want, slices.Equal) {
				t.Errorf("edits give %q, want %q", got, c.want)
			}
			checkKeptFrom(t, c.old, c.want, keptFrom)
		})
	}

	// Random chains: the edits always reach want, and keep as many rules
	// as the longest common run in order (checked against a quadratic LCS).
	rng := rand.New(rand.NewPCG(1, 2))
	fresh := 0 // numbers every new rule, so that no rule repeats
	for round := range 2000 {
		n := 1 + rng.IntN(30)
		old := make([][]string, 0, n)
		for i := range n {
			old = append(old, []string{"-s", fmt.Sprint(i)})
		}
		want := slices.Clone(old)
		rng.Shuffle(len(want), func(i, j int) {
			if rng.IntN(8) == 0 {
				want[i], want[j] = want[j], want[i]
			}
		})
		for range rng.IntN(4) {
			i := rng.IntN(len(want))
			switch rng.IntN(3) {
			case 0:
				want = slices.Delete(want, i, i+1)
			case 1:
				fresh++
				want = slices.Insert(want, i, []string{"-s", fmt.Sprint("new-", fresh)})
			case 2:
				fresh++
				want[i] = []string{"-d", fmt.Sprint("changed-", fresh)}
			}
			if len(want) == 0 {
				want = append(want, []string{"-j", "DROP"})
			}
		}
		ops, keptFrom, ok := chainEdit(old, want)
		lcs := lcsLen(old, want)
		if edits := len(old) - lcs + len(want) - lcs; edits > len(want) {
			if ok {
				t.Fatalf("round %d: edited with %d ops where writing %d rules is no more", round, len(ops), len(want))
			}
			continue
		}
		if !ok {
			t.Fatalf("round %d: no edit for %q -> %q", round, old, want)
		}
		if got := applyOps(t, old, ops); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("round %d: edits %v give %q, want %q", round, ops, got, want)
		}
		if len(ops) != len(old)-lcs+len(want)-lcs {
			t.Fatalf("round %d: %d edits, the fewest is %d", round, len(ops), len(old)-lcs+len(want)-lcs)
		}
		checkKeptFrom(t, old, want, keptFrom)
	}
}

// checkKeptFrom: each rule of want is either kept from old (the same rule,
// the old positions increasing) or inserted (-1).
func checkKeptFrom(t *testing.T, old, want [][]string, keptFrom []int) {
	t.Helper()
	if len(keptFrom) != len(want) {
		t.Fatalf("keptFrom has %d entries for %d rules", len(keptFrom), len(want))
	}
	last := -1
	for j, i := range keptFrom {
		if i < 0 {
			continue
		}
		if i <= last || !slices.Equal(old[i], want[j]) {
			t.Fatalf("keptFrom %v: rule %d of want (%q) is not kept in order from old rule %d", keptFrom, j, want[j], i)
		}
		last = i
	}
}

func lcsLen(a, b [][]string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if slices.Equal(a[i], b[j]) {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

// Update edits a long chain in place when a few of its rules change: the
// kernel then holds exactly the wanted rules in order, the restore input
// has a line per changed rule instead of one per rule, and a rule left
// alone keeps its packet counters.
func TestUpdateEditsALongChainInPlace(t *testing.T) {
	ns := nstest.New(t, "ipt")
	c := newChains(t, FirewallChains)
	var inputs []string
	realRestore := c.restore
	c.restore = func(in []byte) error {
		inputs = append(inputs, string(in))
		return realRestore(in)
	}
	const n = 200
	ruleSet := func(edit func(rules [][]string) [][]string) mesh.RuleSet {
		top := mesh.Chain{Table: "mangle", Name: mesh.ChainFirewall}
		// The rule that counts: loopback UDP to port 9 from this test.
		top.Rules = append(top.Rules, []string{"-d", "127.0.0.1/32", "-p", "udp", "-m", "udp", "--dport", "9", "-j", "RETURN"})
		for i := range n {
			top.Rules = append(top.Rules, []string{"-s", fmt.Sprintf("10.%d.%d.0/24", 1+i/250, i%250), "-j", "RETURN"})
		}
		top.Rules = edit(top.Rules)
		return mesh.RuleSet{Chains: []mesh.Chain{top},
			Hooks: []mesh.Hook{{Table: "mangle", Chain: "OUTPUT", Rule: []string{"-j", mesh.ChainFirewall}}}}
	}
	update := func(rs mesh.RuleSet) {
		t.Helper()
		inputs = nil
		do(t, ns, func() error { return c.Update(rs) })
		do(t, ns, c.Settle)
		if got, want := ruleLines(t, ns, "iptables", "mangle")[mesh.ChainFirewall], expectedLines(rs, "mangle")[mesh.ChainFirewall]; !slices.Equal(got, want) {
			t.Fatalf("the chain in the kernel differs from the rule set:\n got %q\nwant %q", got, want)
		}
	}
	counter := func() string {
		t.Helper()
		var lines []string
		do(t, ns, func() (err error) { lines, err = c.list("mangle", true); return err })
		for _, l := range lines {
			if !strings.Contains(l, "--dport 9 ") {
				continue
			}
			f := strings.Fields(l)
			if i := slices.Index(f, "-c"); i >= 0 && i+1 < len(f) {
				return f[i+1]
			}
			t.Fatalf("no counters in %q", l)
		}
		t.Fatalf("no --dport 9 rule listed: %q", lines)
		return ""
	}
	same := func(r [][]string) [][]string { return r }
	update(ruleSet(same))
	do(t, ns, func() error {
		conn, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			return err
		}
		defer conn.Close()
		for range 5 {
			// Nothing listens: the write may report the previous
			// datagram's ICMP error; each still passed the chain.
			_, _ = conn.Write([]byte("x"))
		}
		return nil
	})
	packets := counter()
	if packets == "0" {
		t.Fatalf("the counted rule saw no packet: the test sends none through it")
	}

	// One source changed, one moved to the end, one removed, one added.
	edited := func(r [][]string) [][]string {
		r = slices.Clone(r)
		r[50] = []string{"-s", "10.9.9.0/24", "-j", "RETURN"}
		moved := r[100]
		r = slices.Delete(r, 100, 101)
		r = append(r, moved)
		r = slices.Delete(r, 150, 151)
		return slices.Insert(r, 10, []string{"-s", "10.8.8.0/24", "-j", "RETURN"})
	}
	edits := c.edits
	update(ruleSet(edited))
	if c.edits != edits+1 || len(inputs) != 1 {
		t.Fatalf("%d chains edited in place in %d restores, want 1 in 1", c.edits-edits, len(inputs))
	}
	if lines := strings.Count(inputs[0], "\n"); lines > 12 || strings.Contains(inputs[0], ":"+mesh.ChainFirewall) {
		t.Errorf("restore input of %d lines, want the few edits, not the chain declared and written whole:\n%s", lines, inputs[0])
	}
	if got := counter(); got != packets {
		t.Errorf("the untouched rule's packet counter went from %s to %s: the chain was rewritten", packets, got)
	}
	// Settle recorded the edited chain as it lists: a Set finds nothing to
	// write.
	writes := c.rewrites
	set(t, ns, c, ruleSet(edited))
	if c.rewrites != writes {
		t.Errorf("a Set after the edit wrote %d chains, want none", c.rewrites-writes)
	}

	// A rule replaced by hand stays in a chain edited by position: Settle
	// must find it (the kept rules list as before, or the record is
	// wrong), say so and forget the record, so that the next pass writes
	// the chain whole.
	ns.Run(t, "iptables", "-t", "mangle", "-R", mesh.ChainFirewall, "5", "-s", "10.77.0.0/16", "-j", "ACCEPT")
	edited2 := func(r [][]string) [][]string {
		r = edited(r)
		r[20] = []string{"-s", "10.9.10.0/24", "-j", "RETURN"}
		return r
	}
	inputs = nil
	do(t, ns, func() error { return c.Update(ruleSet(edited2)) })
	if err := ns.Do(c.Settle); err == nil || !strings.Contains(err.Error(), "edited in place") {
		t.Fatalf("Settle after an edit of a chain changed by hand: %v, want the edit reported", err)
	}
	update(ruleSet(edited2)) // written whole now, and checked against the rule set
	if !strings.Contains(inputs[0], ":"+mesh.ChainFirewall) {
		t.Errorf("after a failed Settle the chain was edited again instead of written whole:\n%.300s", inputs[0])
	}

	// Everything different: written whole, and still right.
	update(ruleSet(func(r [][]string) [][]string {
		var out [][]string
		for i := range r {
			out = append(out, []string{"-s", fmt.Sprintf("10.20.%d.0/24", i), "-j", "RETURN"})
		}
		return out
	}))
	if !strings.Contains(inputs[0], ":"+mesh.ChainFirewall) {
		t.Errorf("a chain with every rule changed was edited, not written whole:\n%.300s", inputs[0])
	}

	// A Set afterwards finds nothing to repair.
	writes = c.rewrites
	set(t, ns, c, ruleSet(edited))
	set(t, ns, c, ruleSet(edited))
	if c.rewrites != writes+1 {
		t.Errorf("two Sets of one rule set wrote %d chains, want 1", c.rewrites-writes)
	}
}
