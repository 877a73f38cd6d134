package netapply

import (
	"fmt"
	"os/exec"
	"strings"
)

// tableState is one listing of a table (iptables -t TABLE -S): its chains in
// the order printed (built-in chains from their -P lines, the others from
// their -N lines) and each chain's "-A ..." lines. A pass of Set lists each
// table once (and once more after it wrote chains), instead of once per
// chain and per built-in chain: with a chain per link, listings per chain
// made a pass cost links × the size of the table (issue #33).
type tableState struct {
	chains []string
	rules  map[string][]string
}

func (s *tableState) has(chain string) bool {
	_, ok := s.rules[chain]
	return ok
}

// parseTable reads the lines of iptables -S (or -v -S) of a whole table.
func parseTable(lines []string) (*tableState, error) {
	s := &tableState{rules: map[string][]string{}}
	for _, l := range lines {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil, fmt.Errorf("unexpected iptables -S line %q", l)
		}
		switch f[0] {
		case "-P", "-N":
			if !s.has(f[1]) {
				s.chains = append(s.chains, f[1])
				s.rules[f[1]] = nil
			}
		case "-A":
			if !s.has(f[1]) {
				return nil, fmt.Errorf("iptables -S printed a rule of chain %s before the chain", f[1])
			}
			s.rules[f[1]] = append(s.rules[f[1]], l)
		default:
			return nil, fmt.Errorf("unexpected iptables -S line %q", l)
		}
	}
	return s, nil
}

// execList lists a whole table with the iptables (or ip6tables) of PATH, the
// binary go-iptables picks; counters adds each rule's packet and byte
// counters (-v: "-c PACKETS BYTES").
func execList(name string) func(table string, counters bool) ([]string, error) {
	return func(table string, counters bool) ([]string, error) {
		args := []string{"--wait", "-t", table, "-S"}
		if counters {
			args = append(args, "-v")
		}
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = ": " + strings.TrimSpace(string(ee.Stderr))
			}
			return nil, fmt.Errorf("%s %s: %w%s", name, strings.Join(args, " "), err, msg)
		}
		return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"), nil
	}
}

// listTable lists one table and parses it.
func (c *Chains) listTable(table string) (*tableState, error) {
	lines, err := c.list(table, false)
	if err != nil {
		return nil, fmt.Errorf("list table: %w", err)
	}
	return parseTable(lines)
}
