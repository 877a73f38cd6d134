package netapply

import (
	"slices"
	"strings"
)

// chainEdits are the positional edits that turn one chain, as kubelink last
// wrote it, into what is wanted now.
type chainEdits struct {
	chain string
	ops   []ruleOp
}

// ruleOp is one line of an edit: delete the rule at pos (1-based), insert
// rule at pos, or (pos 0) append it.
type ruleOp struct {
	delete bool
	pos    int
	rule   []string
}

// chainEdit returns the edits that turn a chain holding old into one holding
// want while every rule the two share keeps its place, and its packet
// counters: the shared rules kept are a longest run that is in the same
// order in both; the other rules of old are deleted, last first (so each
// position still names the rule meant), then the other rules of want are
// inserted in order, at the position they have in want (an append when
// that is the end). ok is false, and the chain is better written whole,
// when a rule repeats in old or in want (a position would be ambiguous to
// reason about) or the edit has more lines than want has rules (writing it
// whole takes one line more: the declaration).
//
// This is what makes a change of one link cheap at scale: the firewall's
// top and sources chains have a rule per link, and writing them whole made
// iptables-restore parse and install every one of them again (issue #33).
//
// keptFrom[j] is, for each rule of want, the index in old of the rule kept
// in its place, or -1 for a rule inserted: what Settle compares the listing
// with (the kept rules must list as they listed before).
func chainEdit(old, want [][]string) (ops []ruleOp, keptFrom []int, ok bool) {
	if len(old) == 0 || len(want) == 0 {
		return nil, nil, false
	}
	key := func(r []string) string { return strings.Join(r, "\x00") }
	oldAt := make(map[string]int, len(old))
	for i, r := range old {
		k := key(r)
		if _, dup := oldAt[k]; dup {
			return nil, nil, false
		}
		oldAt[k] = i
	}
	seen := make(map[string]bool, len(want))
	var shared []sharedRule
	for j, r := range want {
		k := key(r)
		if seen[k] {
			return nil, nil, false
		}
		seen[k] = true
		if i, in := oldAt[k]; in {
			shared = append(shared, sharedRule{old: i, want: j})
		}
	}
	kept := inOrder(shared)
	keptOld := make([]bool, len(old))
	keptWant := make([]bool, len(want))
	keptFrom = make([]int, len(want))
	for j := range keptFrom {
		keptFrom[j] = -1
	}
	for _, s := range kept {
		keptOld[s.old], keptWant[s.want] = true, true
		keptFrom[s.want] = s.old
	}
	if len(old)-len(kept)+len(want)-len(kept) > len(want) {
		return nil, nil, false
	}
	for i := len(old) - 1; i >= 0; i-- {
		if !keptOld[i] {
			ops = append(ops, ruleOp{delete: true, pos: i + 1})
		}
	}
	// After the deletes the chain holds the kept rules. Inserting want's
	// others in order keeps it holding want[:j] followed by the kept rules
	// after j, so want[j] goes to position j+1, or to the end.
	length := len(kept)
	for j, r := range want {
		if keptWant[j] {
			continue
		}
		pos := j + 1
		if j == length {
			pos = 0
		}
		ops = append(ops, ruleOp{pos: pos, rule: slices.Clone(r)})
		length++
	}
	return ops, keptFrom, true
}

// sharedRule is a rule in both old and want, at these indexes.
type sharedRule struct{ old, want int }

// inOrder returns a longest subsequence of shared (ordered by want) whose
// old indexes increase: the rules that can stay where they are (patience
// sorting, n log n).
func inOrder(shared []sharedRule) []sharedRule {
	if len(shared) == 0 {
		return nil
	}
	var tails []int // tails[l]: index in shared of the smallest end of a run of l+1
	prev := make([]int, len(shared))
	for k, s := range shared {
		l, _ := slices.BinarySearchFunc(tails, s.old, func(t, old int) int { return shared[t].old - old })
		prev[k] = -1
		if l > 0 {
			prev[k] = tails[l-1]
		}
		if l == len(tails) {
			tails = append(tails, k)
		} else {
			tails[l] = k
		}
	}
	out := make([]sharedRule, len(tails))
	for k, i := tails[len(tails)-1], len(tails)-1; i >= 0; k, i = prev[k], i-1 {
		out[i] = shared[k]
	}
	return out
}
