package netapply

import (
	"fmt"
	"strconv"
	"strings"
)

// countingCmd is implemented by go-iptables; it is separate from iptablesCmd
// so that test seams need not provide it.
type countingCmd interface {
	ListWithCounters(table, chain string) ([]string, error)
}

// DroppedPackets sums the packet counters of the DROP rules of one of our
// chains (e.g. a link's firewall chain): the drops to report as a metric.
// A chain that does not exist counts zero.
func (c *Chains) DroppedPackets(table, chain string) (uint64, error) {
	if !c.owned(chain) {
		return 0, fmt.Errorf("chain %s is not owned by this applier", chain)
	}
	lc, ok := c.ipt.(countingCmd)
	if !ok {
		return 0, fmt.Errorf("iptables counters are not available")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	chains, err := c.ipt.ListChains(table)
	if err != nil {
		return 0, err
	}
	found := false
	for _, ch := range chains {
		found = found || ch == chain
	}
	if !found {
		return 0, nil
	}
	lines, err := lc.ListWithCounters(table, chain)
	if err != nil {
		return 0, fmt.Errorf("counters of %s: %w", chain, err)
	}
	return sumDrops(lines), nil
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
