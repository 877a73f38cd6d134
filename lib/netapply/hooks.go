package netapply

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kubelink/kubelink/lib/mesh"
)

// syncHooks makes every desired hook exist exactly once in its built-in
// chain and removes every other rule in the built-in chains that jumps into
// a chain we own (stale hooks, duplicates, and older variants of a hook).
// st is the table as listed last; our chain writes do not touch the
// built-in chains, so it is current for them.
func (c *Chains) syncHooks(table string, builtins []string, hooks []mesh.Hook, st *tableState) error {
	slices.Sort(builtins)
	for _, bc := range builtins {
		var present [][]string
		for _, l := range st.rules[bc] {
			args, err := splitRule(l, bc)
			if err != nil {
				return fmt.Errorf("chain %s: %w", bc, err)
			}
			if t := jumpTarget(args); t != "" && c.owned(t) {
				present = append(present, args)
			}
		}
		var want []mesh.Hook
		for _, h := range hooks {
			if h.Chain == bc {
				want = append(want, h)
			}
		}
		if err := c.syncChainHooks(table, bc, want, present); err != nil {
			return err
		}
	}
	return nil
}

// syncChainHooks works on one built-in chain. present are its rules that jump
// into our chains, as iptables printed them.
func (c *Chains) syncChainHooks(table, chain string, want []mesh.Hook, present [][]string) error {
	keep := make([]bool, len(present))
	for _, h := range want {
		i := -1
		for j := range present {
			if !keep[j] && slices.Equal(present[j], h.Rule) {
				i = j
				break
			}
		}
		if i >= 0 {
			keep[i] = true
			continue
		}
		ok, err := c.ipt.Exists(table, chain, h.Rule...)
		if err != nil {
			return fmt.Errorf("check hook in %s: %w", chain, err)
		}
		if ok {
			// Present, but iptables prints it differently from how it was
			// given, so we cannot tell which line it is: keep every line
			// with the same target rather than delete the live hook.
			t := jumpTarget(h.Rule)
			for j, p := range present {
				if jumpTarget(p) == t {
					keep[j] = true
				}
			}
			continue
		}
		// Position 1: our jump must come before rules that accept or drop.
		if err := c.ipt.Insert(table, chain, 1, h.Rule...); err != nil {
			return fmt.Errorf("insert hook %q into %s: %w", strings.Join(h.Rule, " "), chain, err)
		}
		c.hookInserts++
	}
	for i, p := range present {
		if keep[i] {
			continue
		}
		// Deleting by specification (not by number) is safe against
		// concurrent changes by other tools; for identical duplicates it
		// does not matter which one goes.
		if err := c.ipt.Delete(table, chain, p...); err != nil {
			return fmt.Errorf("delete stale hook %q from %s: %w", strings.Join(p, " "), chain, err)
		}
	}
	return nil
}

// jumpTarget returns the chain or target of -j/--jump or -g/--goto.
func jumpTarget(rule []string) string {
	for i := 0; i+1 < len(rule); i++ {
		switch rule[i] {
		case "-j", "--jump", "-g", "--goto":
			return rule[i+1]
		}
	}
	return ""
}

// splitRule turns a line "-A CHAIN args..." of iptables -S into args.
func splitRule(line, chain string) ([]string, error) {
	words, err := splitWords(line)
	if err != nil {
		return nil, err
	}
	if len(words) < 2 || words[0] != "-A" || words[1] != chain {
		return nil, fmt.Errorf("unexpected iptables -S line %q", line)
	}
	return words[2:], nil
}

// splitWords splits like iptables-restore does: words separated by blanks,
// double quotes group, a backslash escapes the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted, escaped := false, false, false
	// Byte by byte: the special characters are ASCII, and any other byte
	// (also of invalid UTF-8, as a comment may hold) is kept as it is.
	for i := 0; i < len(s); i++ {
		r := s[i]
		switch {
		case escaped:
			cur.WriteByte(r)
			escaped = false
		case r == '\\':
			escaped, inWord = true, true
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(r)
			inWord = true
		}
	}
	if quoted || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
