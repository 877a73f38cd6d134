package netapply

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-iptables/iptables"

	"github.com/kubelink/kubelink/lib/mesh"
)

// tables are the iptables tables kubelink may use. Stale chains are looked
// for in all of them, so a concern that moves between tables leaves nothing.
var tables = []string{"raw", "mangle", "nat", "filter"}

// builtinChains are where hooks live.
var builtinChains = map[string]bool{"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true}

// iptablesCmd is the part of go-iptables the applier uses (the seam to the
// kernel); *iptables.IPTables implements it.
type iptablesCmd interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	ClearChain(table, chain string) error
	DeleteChain(table, chain string) error
}

// Chains applies the iptables chains of one concern (SNAT, services,
// firewall, ...). It owns the chains its owned function accepts and the rules
// in built-in chains that jump to them, and nothing else.
type Chains struct {
	ipv6    bool
	owned   func(chain string) bool
	ipt     iptablesCmd
	restore func(input []byte) error
	list    func(table string, counters bool) ([]string, error)

	mu sync.Mutex
	// written remembers, per chain we wrote, the rules we wrote and what
	// iptables -S printed right after. While both still match, the chain is
	// not rewritten, which keeps its packet counters.
	written map[chainKey]writtenChain
	// rewrites counts chains written; tests use it to prove skipped writes.
	rewrites int
	// hookInserts counts hooks inserted (new, or repaired after removal).
	hookInserts int
	// edits counts the chains of rewrites that Update edited in place
	// rather than wrote whole.
	edits int
	// clean holds, per table, when it was last listed with no chain of ours
	// in it. A pass that wants nothing in such a table skips listing it
	// until tableSweep has passed (then it lists it again, removing any
	// chain of ours found there): the firewall then lists only mangle and
	// the SNAT and service chains only nat, instead of all four tables each
	// (issue #33).
	clean map[string]time.Time
	now   func() time.Time
	// synced holds, per table, the hooks of the last Set (or Update) that
	// left the table as wanted; a table absent was never synced, or its
	// last write failed. Update trusts only such tables.
	synced map[string][]mesh.Hook
	// unsettled holds the tables Update wrote chains into that Settle has
	// not listed yet.
	unsettled map[string]bool
}

// tableSweep is how often a table with nothing of ours is listed anyway,
// to remove chains of ours that appeared there (an older version's, or
// another tool's copy).
const tableSweep = time.Minute

type chainKey struct{ table, chain string }

type writtenChain struct {
	rules  [][]string
	listed []string
	// pending: written by Update, not listed yet (Settle lists it). Set
	// rewrites a pending chain rather than compare the kernel's copy with
	// a listing it never made.
	pending bool
	// expect, for a chain Update edited in place (pending), is what Settle
	// must find listed: the rules kept list as they listed before the edit;
	// "" for a rule inserted, whose listing is new. A rule changed by hand
	// before the edit, or one added or removed (which moves every position
	// the edit used), shows as a difference: the record is forgotten and
	// the next pass writes the chain through Set's path.
	expect []string
}

// NewChains returns an applier for the chains owned accepts, using iptables
// (or ip6tables and ip6tables-restore when ipv6 is set) from PATH, the same
// binaries go-iptables picks.
func NewChains(owned func(chain string) bool, ipv6 bool) (*Chains, error) {
	proto, restore, list := iptables.ProtocolIPv4, "iptables-restore", "iptables"
	if ipv6 {
		proto, restore, list = iptables.ProtocolIPv6, "ip6tables-restore", "ip6tables"
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(30))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w (is the iptables package installed?)", err)
	}
	return &Chains{ipv6: ipv6, owned: owned, ipt: ipt, restore: execRestore(restore), list: execList(list), written: map[chainKey]writtenChain{},
		clean: map[string]time.Time{}, now: time.Now, synced: map[string][]mesh.Hook{}, unsettled: map[string]bool{}}, nil
}

// SNATChains owns the chains of Model.SNATRules.
func SNATChains(chain string) bool {
	return chain == mesh.ChainNAT || strings.HasPrefix(chain, mesh.ChainPrefix+"NT-")
}

// ServiceChains owns the chains of mesh.ServiceRules.
func ServiceChains(chain string) bool {
	return chain == mesh.ChainServices || strings.HasPrefix(chain, mesh.ChainPrefix+"MS-") ||
		strings.HasPrefix(chain, mesh.ChainPrefix+"EP-")
}

// LocalChains owns the chain of GatewayPlan.LocalRules.
func LocalChains(chain string) bool { return chain == mesh.ChainLocal }

// FirewallChains owns the chains of Model.FirewallRules.
func FirewallChains(chain string) bool {
	return chain == mesh.ChainFirewall || strings.HasPrefix(chain, mesh.ChainPrefix+"FW-")
}

// Changes counts the chains written and hooks inserted so far: a caller
// compares it around Set to learn whether Set changed the kernel's rules
// (a first write, a change, or a repair of drift).
func (c *Chains) Changes() int { return c.rewrites + c.hookInserts }

// Update is Set for the passes between two Sets: it trusts its own record of
// what it wrote instead of listing the tables. A table whose last Set or
// Update succeeded with the same hooks gets only its changed chains written
// (one iptables-restore; a long chain with a few changed rules is edited in
// place, by position, from the record; Settle then lists the table once to
// record what iptables printed, as Set does) and its unwanted chains removed; an
// unchanged table costs no iptables command at all. Any other table (never
// synced, a failed write, other hooks) goes through Set's path, and so does
// a rule set with a chain quarantine would change.
//
// What Update cannot see is a change made behind kubelink's back: the caller
// runs Set now and then (the broker: every --resync) to find and repair it.
func (c *Chains) Update(rs mesh.RuleSet) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, errs := c.quarantine(rs); len(errs) > 0 {
		return c.set(rs)
	}
	want, err := c.group(rs)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tables {
		w := want[t]
		if w == nil {
			w = &tableWant{}
		}
		hooks, ok := c.synced[t]
		if !ok || !slices.EqualFunc(hooks, w.hooks, equalHook) {
			if err := c.setTable(t, w); err != nil {
				errs = append(errs, fmt.Errorf("iptables table %s: %w", t, err))
			}
			continue
		}
		if err := c.updateTable(t, w); err != nil {
			errs = append(errs, fmt.Errorf("iptables table %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

func equalHook(a, b mesh.Hook) bool {
	return a.Table == b.Table && a.Chain == b.Chain && slices.Equal(a.Rule, b.Rule)
}

// updateTable writes the chains of want that differ from what was last
// written and removes the chains written before that want no longer has.
// After a Set of the table, the chains written are exactly the chains of
// ours in it.
func (c *Chains) updateTable(table string, want *tableWant) error {
	var dirty []mesh.Chain
	wanted := map[string]bool{}
	for _, ch := range want.chains {
		wanted[ch.Name] = true
		if w, ok := c.written[chainKey{table, ch.Name}]; ok && slices.EqualFunc(w.rules, ch.Rules, slices.Equal) {
			continue
		}
		dirty = append(dirty, ch)
	}
	var stale []string
	for k := range c.written {
		if k.table == table && !wanted[k.chain] {
			stale = append(stale, k.chain)
		}
	}
	if len(dirty) == 0 && len(stale) == 0 {
		return nil
	}
	delete(c.synced, table) // until the write succeeded
	// A chain written before is edited in place where that is smaller
	// (chainEdit: the few rules of one link in a chain of every link's),
	// else written whole; both in the table's one transaction.
	// Only a chain Settle or Set has listed since its last write is edited:
	// its listing is what Settle checks the edited chain against (expect).
	var full []mesh.Chain
	var edits []chainEdits
	expect := map[string][]string{}
	for _, ch := range dirty {
		if w, ok := c.written[chainKey{table, ch.Name}]; ok && !w.pending && len(w.listed) == len(w.rules) {
			if ops, keptFrom, ok := chainEdit(w.rules, ch.Rules); ok {
				edits = append(edits, chainEdits{chain: ch.Name, ops: ops})
				e := make([]string, len(keptFrom))
				for j, i := range keptFrom {
					if i >= 0 {
						e[j] = w.listed[i]
					}
				}
				expect[ch.Name] = e
				continue
			}
		}
		full = append(full, ch)
	}
	for _, ch := range dirty {
		delete(c.written, chainKey{table, ch.Name})
	}
	if len(dirty) > 0 {
		if err := c.restore(restoreEdits(table, full, edits)); err != nil {
			return fmt.Errorf("write chains: %w", err)
		}
		c.rewrites += len(dirty)
		c.edits += len(edits)
		// What iptables prints for them is recorded by Settle, after the
		// caller's more urgent work (the broker: the status writes).
		for _, ch := range dirty {
			c.written[chainKey{table, ch.Name}] = writtenChain{rules: cloneRules(ch.Rules), pending: true, expect: expect[ch.Name]}
		}
		c.unsettled[table] = true
		delete(c.clean, table)
	}
	slices.Sort(stale)
	if err := c.removeChains(table, stale); err != nil {
		return err
	}
	if len(want.chains) == 0 {
		c.clean[table] = c.now()
	}
	c.synced[table] = cloneHooks(want.hooks)
	return nil
}

// Settle lists each table Update wrote chains into since the last Settle,
// once, and records what iptables printed for those chains, as Set records
// it: the next Set then finds them unchanged (keeping their counters), or
// repairs them, an empty listing of a flushed chain included. The broker
// calls it after a pass's status writes, so that the listing does not
// delay the status of the change that caused it. A chain missing from the
// listing, or a table that could not be listed, is forgotten: the next
// Update writes it again through Set's path; so is one whose number of
// rules differs from what was written (changed in between). A chain Update
// edited in place is also forgotten unless the rules it kept list exactly
// as they listed before the edit: an edit is made by position from the
// record, so a change by hand since the last listing (a rule replaced,
// added or removed) would otherwise live on in the chain, or have the edit
// delete the wrong rule, until the next write of the whole chain. A change
// in the window of one pass that keeps the number of rules (iptables -R by
// hand) of a chain written whole is recorded as written; it would take
// another process editing kubelink's own chains within those milliseconds.
func (c *Chains) Settle() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, t := range tables {
		if !c.unsettled[t] {
			continue
		}
		delete(c.unsettled, t)
		after, err := c.listTable(t)
		for k, w := range c.written {
			if k.table != t || !w.pending {
				continue
			}
			switch {
			case err != nil:
				delete(c.written, k)
			case !after.has(k.chain):
				delete(c.written, k)
				errs = append(errs, fmt.Errorf("iptables table %s: chain %s missing right after it was written", t, k.chain))
			case len(after.rules[k.chain]) != len(w.rules):
				// Changed between the write and this listing (each rule
				// kubelink writes lists as one line): recording it would
				// make the changed copy the one Set compares with.
				delete(c.written, k)
				errs = append(errs, fmt.Errorf("iptables table %s: chain %s lists %d rules right after %d were written", t, k.chain, len(after.rules[k.chain]), len(w.rules)))
			case w.expect != nil && !listsAsExpected(after.rules[k.chain], w.expect):
				delete(c.written, k)
				errs = append(errs, fmt.Errorf("iptables table %s: chain %s, edited in place, does not list the rules it kept as before (changed behind kubelink's back?)", t, k.chain))
			default:
				w.listed, w.pending, w.expect = slices.Clone(after.rules[k.chain]), false, nil
				c.written[k] = w
				continue
			}
			delete(c.synced, t)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables table %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// listsAsExpected reports whether listed has, at each position expect
// names a line for, that line.
func listsAsExpected(listed, expect []string) bool {
	if len(listed) != len(expect) {
		return false
	}
	for i, e := range expect {
		if e != "" && listed[i] != e {
			return false
		}
	}
	return true
}

func cloneHooks(hs []mesh.Hook) []mesh.Hook {
	out := make([]mesh.Hook, len(hs))
	for i, h := range hs {
		out[i] = mesh.Hook{Table: h.Table, Chain: h.Chain, Rule: slices.Clone(h.Rule)}
	}
	return out
}

// Set makes the chains and hooks of the concern match rs: it writes changed
// or drifted chains (one iptables-restore transaction per table), makes each
// hook exist exactly once, and removes chains and hooks no longer wanted. An
// empty rs removes everything of the concern.
func (c *Chains) Set(rs mesh.RuleSet) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set(rs)
}

func (c *Chains) set(rs mesh.RuleSet) error {
	rs, errs := c.quarantine(rs)
	want, err := c.group(rs)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, t := range tables {
		if at, ok := c.clean[t]; ok && want[t] == nil && c.now().Sub(at) < tableSweep {
			continue // nothing of ours there at the last listing, nothing wanted
		}
		if err := c.setTable(t, want[t]); err != nil {
			errs = append(errs, fmt.Errorf("iptables table %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// quarantine keeps one bad chain from failing the restore of its whole
// table: a chain with an address of the wrong family (or none) after -s, -d
// or a NAT target would make iptables-restore reject every chain of the
// table, so the firewall and SNAT of every link would be missing. Such a
// chain is written fail-closed instead — a single DROP (in nat, where DROP is
// not allowed, empty: no translation) — and reported; the other chains are
// written as they are.
func (c *Chains) quarantine(rs mesh.RuleSet) (mesh.RuleSet, []error) {
	var errs []error
	out := mesh.RuleSet{Hooks: rs.Hooks, Chains: make([]mesh.Chain, 0, len(rs.Chains))}
	for _, ch := range rs.Chains {
		if bad := badChainName(ch.Name); bad != "" {
			// Not even a fail-closed chain can be written under this name.
			errs = append(errs, fmt.Errorf("chain %q (table %s) not written: %s", ch.Name, ch.Table, bad))
			continue
		}
		bad := ""
		for _, r := range ch.Rules {
			if bad = badArgument(r); bad != "" {
				break
			}
			if bad = badAddress(r, c.ipv6); bad != "" {
				break
			}
		}
		if bad == "" {
			out.Chains = append(out.Chains, ch)
			continue
		}
		errs = append(errs, fmt.Errorf("chain %s (table %s) not written as rendered: %s; it drops its traffic until fixed", ch.Name, ch.Table, bad))
		q := mesh.Chain{Table: ch.Table, Name: ch.Name}
		if ch.Table != "nat" {
			q.Rules = [][]string{{"-j", "DROP"}}
		}
		out.Chains = append(out.Chains, q)
	}
	return out, errs
}

// badArgument describes the first argument of rule holding a control
// character: a new line would end the rule's line of the iptables-restore
// input and start another (quoteArg cannot quote it), others are no part of
// any valid rule. It returns "" when there is none.
func badArgument(rule []string) string {
	for _, a := range rule {
		if strings.ContainsFunc(a, unicode.IsControl) {
			return fmt.Sprintf("argument %q holds a control character", a)
		}
	}
	return ""
}

// badChainName describes why name cannot be an iptables chain name of the
// restore input (empty, longer than 28 bytes, blanks, quotes or control
// characters), or returns "".
func badChainName(name string) string {
	switch {
	case name == "" || len(name) > 28:
		return "a chain name must have 1-28 characters"
	case strings.ContainsFunc(name, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("\"'\\", r)
	}):
		return "a chain name must not hold blanks, quotes, backslashes or control characters"
	}
	return ""
}

// badAddress describes the first address argument of rule that is not of
// the applier's family, or returns "".
func badAddress(rule []string, ipv6 bool) string {
	for i := 0; i+1 < len(rule); i++ {
		switch rule[i] {
		case "-s", "-d", "--to-source", "--to-destination":
		default:
			continue
		}
		v := rule[i+1]
		host := v
		if h, _, ok := strings.Cut(v, "/"); ok {
			host = h
		} else if rule[i] == "--to-destination" || rule[i] == "--to-source" {
			if ap, err := netip.ParseAddrPort(v); err == nil {
				host = ap.Addr().String()
			}
		}
		a, err := netip.ParseAddr(host)
		switch {
		case err != nil:
			return fmt.Sprintf("%s %q is not an address", rule[i], v)
		case a.Is4() == ipv6:
			return fmt.Sprintf("%s %s is of the wrong address family", rule[i], v)
		}
	}
	return ""
}

// CleanUp removes all chains and hooks of the concern.
func (c *Chains) CleanUp() error { return c.Set(mesh.RuleSet{}) }

// CleanUpAll removes every KUBELINK-* chain of every table and every rule in
// a built-in chain that jumps to one, whatever concern made it (--cleanup).
func CleanUpAll(ipv6 bool) error {
	c, err := NewChains(func(chain string) bool { return strings.HasPrefix(chain, mesh.ChainPrefix) }, ipv6)
	if err != nil {
		return err
	}
	return c.CleanUp()
}

type tableWant struct {
	chains []mesh.Chain
	hooks  []mesh.Hook
}

// group validates rs and sorts it by table. Everything we would write must be
// ours, and every jump into a chain we own must stay inside rs, or removing a
// stale chain would fail (or a hook would dangle).
func (c *Chains) group(rs mesh.RuleSet) (map[string]*tableWant, error) {
	out := map[string]*tableWant{}
	defined := map[chainKey]bool{}
	get := func(table string) *tableWant {
		if out[table] == nil {
			out[table] = &tableWant{}
		}
		return out[table]
	}
	for _, ch := range rs.Chains {
		k := chainKey{ch.Table, ch.Name}
		switch {
		case !slices.Contains(tables, ch.Table):
			return nil, fmt.Errorf("chain %s: unsupported table %q", ch.Name, ch.Table)
		case !c.owned(ch.Name):
			return nil, fmt.Errorf("chain %s (table %s) is not owned by this applier; refusing to write it", ch.Name, ch.Table)
		case defined[k]:
			return nil, fmt.Errorf("chain %s (table %s) is defined twice", ch.Name, ch.Table)
		}
		defined[k] = true
		get(ch.Table).chains = append(get(ch.Table).chains, ch)
	}
	for _, ch := range rs.Chains {
		for _, r := range ch.Rules {
			if t := jumpTarget(r); c.owned(t) && !defined[chainKey{ch.Table, t}] {
				return nil, fmt.Errorf("chain %s jumps to %s, which the rule set does not define", ch.Name, t)
			}
		}
	}
	for _, h := range rs.Hooks {
		t := jumpTarget(h.Rule)
		switch {
		case !builtinChains[h.Chain]:
			return nil, fmt.Errorf("hook %q: %s is not a built-in chain", h.Rule, h.Chain)
		case !defined[chainKey{h.Table, t}]:
			return nil, fmt.Errorf("hook in %s %s jumps to %q, which is not a chain of the rule set", h.Table, h.Chain, t)
		}
		get(h.Table).hooks = append(get(h.Table).hooks, h)
	}
	return out, nil
}

func (c *Chains) setTable(table string, want *tableWant) error {
	if want == nil {
		want = &tableWant{}
	}
	delete(c.synced, table) // until the table is as wanted
	// Its listing below settles the table: a chain Update wrote and
	// Settle has not listed yet counts as changed (writeChains).
	delete(c.unsettled, table)
	st, err := c.listTable(table)
	if err != nil {
		return err
	}
	var mine, builtins []string
	for _, n := range st.chains {
		switch {
		case builtinChains[n]:
			builtins = append(builtins, n)
		case c.owned(n):
			mine = append(mine, n)
		}
	}
	if len(mine) == 0 && len(want.chains) == 0 {
		// No chain of ours, so no hook of ours either (a rule cannot jump
		// to a missing chain).
		for k := range c.written {
			if k.table == table {
				delete(c.written, k)
			}
		}
		c.clean[table] = c.now()
		c.synced[table] = nil
		return nil
	}
	delete(c.clean, table)
	if st, err = c.writeChains(table, want.chains, st); err != nil {
		return err
	}
	for _, h := range want.hooks {
		if !slices.Contains(builtins, h.Chain) {
			builtins = append(builtins, h.Chain)
		}
	}
	if err := c.syncHooks(table, builtins, want.hooks, st); err != nil {
		return err
	}
	var stale []string
	for _, n := range mine {
		if !slices.ContainsFunc(want.chains, func(ch mesh.Chain) bool { return ch.Name == n }) {
			stale = append(stale, n)
		}
	}
	if err := c.removeChains(table, stale); err != nil {
		return err
	}
	c.synced[table] = cloneHooks(want.hooks)
	return nil
}

// writeChains rewrites the desired chains that are new, changed since the
// last write, or changed in the kernel behind our back (st, the table as
// listed before). It returns the table as it is afterwards: st itself when
// nothing was written, else a new listing, which also records what iptables
// printed for each written chain.
func (c *Chains) writeChains(table string, want []mesh.Chain, st *tableState) (*tableState, error) {
	var dirty []mesh.Chain
	for _, ch := range want {
		w, ok := c.written[chainKey{table, ch.Name}]
		if ok && !w.pending && st.has(ch.Name) && slices.EqualFunc(w.rules, ch.Rules, slices.Equal) &&
			slices.Equal(st.rules[ch.Name], w.listed) {
			continue
		}
		dirty = append(dirty, ch)
	}
	if len(dirty) == 0 {
		return st, nil
	}
	for _, ch := range dirty {
		// Forget first: if the write fails we must not trust old state.
		delete(c.written, chainKey{table, ch.Name})
	}
	if err := c.restore(restoreInput(table, dirty)); err != nil {
		return nil, fmt.Errorf("write chains: %w", err)
	}
	c.rewrites += len(dirty)
	after, err := c.listTable(table)
	if err != nil {
		return nil, err
	}
	for _, ch := range dirty {
		if !after.has(ch.Name) {
			return nil, fmt.Errorf("chain %s missing right after it was written", ch.Name)
		}
		c.written[chainKey{table, ch.Name}] = writtenChain{rules: cloneRules(ch.Rules), listed: slices.Clone(after.rules[ch.Name])}
	}
	return after, nil
}

// removeChains flushes all stale chains before deleting any, so jumps
// between them do not block the deletion.
func (c *Chains) removeChains(table string, stale []string) error {
	for _, n := range stale {
		if err := c.ipt.ClearChain(table, n); err != nil {
			return fmt.Errorf("flush stale chain %s: %w", n, err)
		}
	}
	for _, n := range stale {
		delete(c.written, chainKey{table, n})
	}
	for _, n := range stale {
		if err := c.ipt.DeleteChain(table, n); err != nil {
			return fmt.Errorf("delete stale chain %s (is it still referenced by a chain kubelink does not own?): %w", n, err)
		}
	}
	return nil
}

func cloneRules(rules [][]string) [][]string {
	out := make([][]string, len(rules))
	for i, r := range rules {
		out[i] = slices.Clone(r)
	}
	return out
}
