package mesh

import (
	"fmt"
	"slices"
	"strings"
)

// ChainLocal guards the local cluster addresses against the peers.
const ChainLocal = ChainPrefix + "LOCAL"

// LocalRules guard the local cluster address of every mesh: in node mode
// it sits on the gateway node itself, in pod mode on the broker's pod, so
// every socket listening on all addresses there (the kubelet, sshd, the
// broker's metrics) would otherwise be open to every member, as the mesh
// network is in the default allow list. From the mesh device, a packet to
// a local cluster address passes only when it
//
//   - belongs to a connection tracked already (the replies to this
//     cluster's own connections, which leave with that address, and ICMP
//     errors about them),
//   - is for the health-probe responder, or the Multi-Cluster Services
//     exchange (TCP, its export record),
//   - is for a port a MeshService binds on the address, or
//   - comes from a link whose own allow list (or its mesh's) names the
//     address itself (the host address, not a network holding it): an
//     operator who opens it on purpose.
//
// Everything else to the address is dropped, in INPUT as in FORWARD (mangle
// PREROUTING, before the MeshService DNAT), whichever data plane carries
// the traffic; the per-link firewall still applies to what passes.
func (p *GatewayPlan) LocalRules(bindings []*ServiceBinding) RuleSet {
	c := Chain{Table: "mangle", Name: ChainLocal}
	for _, ms := range p.Model.Meshes {
		if len(ms.Members) == 0 {
			continue
		}
		local := ms.Local.IP()
		dst := hostPrefix(local).String()
		if pp := p.Options.ProbePort; pp > 0 && pp < 65536 {
			c.Rules = append(c.Rules, []string{"-d", dst, "-p", "udp", "-m", "udp", "--dport", fmt.Sprint(pp), "-j", "RETURN"})
		}
		if mp := p.Options.MCSPort; mp > 0 && mp < 65536 {
			c.Rules = append(c.Rules, []string{"-d", dst, "-p", "tcp", "-m", "tcp", "--dport", fmt.Sprint(mp), "-j", "RETURN"})
		}
		for _, b := range bindings {
			if b.Address != local {
				continue
			}
			for _, bp := range b.Ports {
				proto := strings.ToLower(bp.Protocol)
				c.Rules = append(c.Rules, []string{"-d", dst, "-p", proto, "-m", proto, "--dport", fmt.Sprint(bp.Port), "-j", "RETURN"})
			}
		}
		if p.Policy != nil {
			for _, lp := range p.Policy.Links {
				if lp.Mesh != ms.Name || lp.Default || !slices.Contains(lp.Allow, hostPrefix(local)) || inAny(lp.Deny, local) {
					continue
				}
				for _, s := range lp.Sources {
					c.Rules = append(c.Rules, []string{"-s", s.String(), "-d", dst, "-j", "RETURN"})
				}
			}
		}
		c.Rules = append(c.Rules, []string{"-d", dst, "-j", "DROP"})
	}
	if len(c.Rules) == 0 {
		return RuleSet{}
	}
	// Replies and related errors first: the one rule most packets match.
	c.Rules = append([][]string{{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"}}, c.Rules...)
	return RuleSet{
		Hooks:  []Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-i", p.Options.Device, "-m", "comment", "--comment", "kubelink cluster address", "-j", ChainLocal}}},
		Chains: []Chain{c},
	}
}
