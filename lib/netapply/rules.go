package netapply

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// syncRules makes the rule "from all lookup <table> priority <priority>"
// exist once in each wanted family and removes our other rules (any rule
// that looks up our table: older priorities, duplicates, families without
// routes). Nothing to do for the main table, which the kernel looks up anyway.
func (r *Routes) syncRules(wanted map[int]bool) error {
	if r.table == MainTable {
		return nil
	}
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if err := r.syncFamilyRules(fam, wanted[fam]); err != nil {
			errs = append(errs, fmt.Errorf("ip rule for table %d (%s): %w", r.table, familyName(fam), err))
		}
	}
	return errors.Join(errs...)
}

func (r *Routes) syncFamilyRules(fam int, want bool) error {
	rules, err := r.listRules(fam)
	if err != nil {
		return err
	}
	var ours []netlink.Rule
	keep := -1
	var taken *netlink.Rule
	for _, ru := range rules {
		switch {
		case ru.Table == r.table:
			if want && keep < 0 && ru.Priority == r.priority && plainRule(ru) {
				keep = len(ours)
			}
			ours = append(ours, ru)
		case ru.Priority == r.priority && taken == nil:
			taken = &ru
		}
	}
	if want && keep < 0 {
		if taken != nil {
			// Keep any older rule of ours: traffic still flows through it.
			return fmt.Errorf("priority %d is already used by another rule (%s); choose another rule priority", r.priority, taken)
		}
		ru := netlink.NewRule()
		ru.Family, ru.Table, ru.Priority, ru.Protocol = fam, r.table, r.priority, uint8(r.proto)
		if err := r.nl.RuleAdd(ru); err != nil {
			return fmt.Errorf("add rule priority %d: %w", r.priority, err)
		}
	}
	for i := range ours {
		if i == keep {
			continue
		}
		if err := r.nl.RuleDel(&ours[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete rule %s: %w", ours[i], err)
		}
	}
	return nil
}

// listRules treats a family the kernel does not support (IPv6 disabled) as
// having no rules.
func (r *Routes) listRules(fam int) ([]netlink.Rule, error) {
	for attempt := 1; ; attempt++ {
		rules, err := r.nl.RuleList(fam)
		switch {
		case errors.Is(err, netlink.ErrDumpInterrupted) && attempt < 5:
			continue
		case errors.Is(err, unix.EAFNOSUPPORT):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("list rules: %w", err)
		}
		return rules, nil
	}
}

// plainRule: "from all" without other selectors, as we create it.
func plainRule(ru netlink.Rule) bool {
	return ru.Src == nil && ru.Dst == nil && ru.IifName == "" && ru.OifName == "" && ru.Mark == 0 &&
		ru.Mask == nil && !ru.Invert && ru.Tos == 0 && ru.IPProto == 0 && ru.Dport == nil && ru.Sport == nil && ru.UIDRange == nil
}

func familyName(fam int) string {
	if fam == netlink.FAMILY_V6 {
		return "IPv6"
	}
	return "IPv4"
}
