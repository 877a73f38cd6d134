package netapply

import (
	"fmt"
	"strconv"
	"strings"
)

// Drops sums, per chain of ours in table (e.g. each link's firewall chain),
// the packet counters of its DROP rules: the drops to report as metrics.
// One listing of the table serves every chain (a listing per chain made each
// pass cost links × the size of the table, issue #33). Chains that do not
// exist are not in the map.
func (c *Chains) Drops(table string) (map[string]uint64, error) {
	lines, err := c.list(table, true)
	if err != nil {
		return nil, fmt.Errorf("counters of table %s: %w", table, err)
	}
	st, err := parseTable(lines)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, ch := range st.chains {
		if c.owned(ch) && !builtinChains[ch] {
			out[ch] = sumDrops(st.rules[ch])
		}
	}
	return out, nil
}

// sumDrops adds the packets of "-A ... -c <packets> <bytes> ... -j DROP" lines.
func sumDrops(lines []string) uint64 {
	var total uint64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-A" || f[len(f)-2] != "-j" || f[len(f)-1] != "DROP" {
			continue
		}
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "-c" {
				if n, err := strconv.ParseUint(f[i+1], 10, 64); err == nil {
					total += n
				}
				break
			}
		}
	}
	return total
}
