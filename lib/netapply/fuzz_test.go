package netapply

import (
	"slices"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/mesh"
)

// The rule arguments of a chain come from KubeLink and firewall objects
// (addresses, ports, comments): whatever they hold, the iptables-restore
// input has exactly one line per rule, every rule reads back (as
// iptables -S prints it, split by splitRule) into the arguments it was
// written from, and the parsers of iptables output never panic.
func FuzzRestoreInput(f *testing.F) {
	f.Add("-d", "100.64.0.1/32", "-j", "ACCEPT", "-A KUBELINK-FW-X -c 3 1 -j DROP")
	f.Add("-m", "comment", "--comment", `a "quoted" \ comment`, `-A X "unterminated`)
	f.Add("--comment", "x\n-A INPUT -j ACCEPT", "-j", "DROP", "-A X -j DROP\n-A Y -c 18446744073709551615 9 -j DROP")
	f.Add("-s", "", "\t", "'", "\\")
	f.Fuzz(func(t *testing.T, a, b, c, d, output string) {
		const chain = "KUBELINK-FW-FUZZ"
		rule := []string{a, b, c, d}
		ch := &Chains{}
		rs, errs := ch.quarantine(mesh.RuleSet{Chains: []mesh.Chain{{Table: "filter", Name: chain, Rules: [][]string{rule}}}})
		if len(rs.Chains) != 1 {
			t.Fatalf("quarantine returned %d chains for one", len(rs.Chains))
		}
		written := rs.Chains[0].Rules
		if len(errs) == 0 && !slices.Equal(written[0], rule) {
			t.Fatalf("quarantine changed %q to %q without an error", rule, written)
		}
		in := string(restoreInput("filter", rs.Chains))
		lines := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
		// *filter, the chain, its rules, COMMIT
		if len(lines) != 3+len(written) || lines[0] != "*filter" || lines[1] != ":"+chain+" - [0:0]" || lines[len(lines)-1] != "COMMIT" {
			t.Fatalf("restore input for %q is not one line per rule:\n%s", written, in)
		}
		for i, r := range written {
			got, err := splitRule(lines[2+i], chain)
			if err != nil {
				t.Fatalf("rule %q written as %q does not read back: %v", r, lines[2+i], err)
			}
			if !slices.Equal(got, r) {
				t.Fatalf("rule %q written as %q reads back as %q", r, lines[2+i], got)
			}
		}
		// What iptables prints is input too: no panic, whatever it is.
		_ = sumDrops(strings.Split(output, "\n"))
		_, _ = splitWords(output)
	})
}

// A new line in an argument would add a rule of its own to the restore
// input; quarantine turns the chain into a single DROP and says why.
func TestQuarantineControlCharacters(t *testing.T) {
	ch := &Chains{}
	rs, errs := ch.quarantine(mesh.RuleSet{Chains: []mesh.Chain{
		{Table: "filter", Name: "KUBELINK-FW-BAD", Rules: [][]string{{"-m", "comment", "--comment", "x\n-A INPUT -j ACCEPT"}}},
		{Table: "filter", Name: "KUBELINK-FW-GOOD", Rules: [][]string{{"-d", "100.64.0.1/32", "-j", "ACCEPT"}}},
		{Table: "filter", Name: "BAD NAME", Rules: [][]string{{"-j", "ACCEPT"}}},
	}})
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "control character") || !strings.Contains(errs[1].Error(), "chain name") {
		t.Fatalf("errors %v, want one for the control character and one for the chain name", errs)
	}
	if len(rs.Chains) != 2 || !slices.Equal(rs.Chains[0].Rules[0], []string{"-j", "DROP"}) || rs.Chains[1].Name != "KUBELINK-FW-GOOD" || len(rs.Chains[1].Rules[0]) != 4 {
		t.Fatalf("chains %+v, want the bad one as a single DROP, the good one as it is, the unnamed one left out", rs.Chains)
	}
}
