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
// entries covered by another entry.
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	s := slices.Clone(in)
	// Shorter prefixes first so that covering entries are kept.
	slices.SortFunc(s, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range s {
		covered := false
		for _, q := range out {
			if contains(q, p) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
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
