package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// parsePrefixOrAddr accepts "10.0.0.0/8" (no host bits) or "10.1.2.3" (as /32).
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a CIDR", s)
		}
		if p.Masked() != p {
			return p, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// contains reports whether outer contains all of inner. (The original compared
// the second mask with itself; this compares the right ones.)
func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// overlaps reports whether two prefixes share any address.
func overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// comparePrefix orders by family, address, then prefix length: a total order.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// mergePrefixes returns the prefixes sorted, without duplicates and without
// entries covered by another entry. Sorted by address and then length, a
// prefix can only be covered by the last one kept before it (prefixes nest
// or are disjoint, and whatever lies between a covering prefix and a prefix
// it covers is covered too), so one pass after the sort suffices: O(k log k)
// (a comparison with every kept prefix made each pass of the broker cubic in
// its links, issue #33).
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	s := make([]netip.Prefix, len(in))
	for i, p := range in {
		s[i] = p.Masked()
	}
	slices.SortFunc(s, comparePrefix)
	var out []netip.Prefix
	for _, p := range s {
		if n := len(out); n > 0 && contains(out[n-1], p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// hostPrefix is the single-address prefix of a.
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// prefixStrings renders prefixes for rules and messages.
func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
