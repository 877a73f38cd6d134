package mesh

import (
	"fmt"
	"net/netip"
)

// FirewallRules enforce spec.ingress for traffic arriving from the mesh
// device, in mangle PREROUTING (before any DNAT, so rules see the addresses the
// peer used). For a link, the denied destinations of the link and of its mesh's
// LocalLink are dropped; if the link (or, when the link has none, its
// LocalLink) has an allow list, everything outside it is dropped too — the
// original bridge ignored allow lists. Traffic to another member's networks
// is transit and is left to that member's own firewall. The health probe
// (UDP probePort on the local cluster address) always passes: a firewall rule
// must not make a healthy link look Down.
func (m *Model) FirewallRules(device string, probePort int) RuleSet {
	top := Chain{Table: "mangle", Name: ChainFirewall}
	var chains []Chain
	for _, ms := range m.Meshes {
		for _, l := range ms.Members {
			in := EffectiveIngress(ms.Local.Ingress, l.Ingress)
			if !in.IsSet() {
				continue
			}
			c := Chain{Table: "mangle", Name: FirewallChain(l.Name.String())}
			if probePort > 0 {
				// Probes from the peer, and the peer's replies to our probes.
				local, port := hostPrefix(ms.Local.IP()).String(), fmt.Sprint(probePort)
				c.Rules = append(c.Rules,
					[]string{"-d", local, "-p", "udp", "-m", "udp", "--dport", port, "-j", "RETURN"},
					[]string{"-d", local, "-p", "udp", "-m", "udp", "--sport", port, "-j", "RETURN"})
			}
			for _, other := range ms.Members {
				if other == l {
					continue
				}
				for _, d := range other.AllowedIPs() {
					c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "RETURN"})
				}
			}
			for _, d := range in.Deny {
				c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "DROP"})
			}
			if len(in.Allow) > 0 {
				for _, a := range in.Allow {
					c.Rules = append(c.Rules, []string{"-d", a.String(), "-j", "RETURN"})
				}
				c.Rules = append(c.Rules, []string{"-j", "DROP"})
			}
			for _, s := range l.AllowedIPs() {
				top.Rules = append(top.Rules, []string{"-s", s.String(), "-j", c.Name})
			}
			chains = append(chains, c)
		}
	}
	if len(chains) == 0 {
		return RuleSet{}
	}
	return RuleSet{
		Hooks:  []Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-i", device, "-m", "comment", "--comment", "kubelink firewall rules", "-j", ChainFirewall}}},
		Chains: append([]Chain{top}, chains...),
	}
}

// EffectiveIngress combines the mesh-wide rule of the LocalLink with a link's
// own: denies add up; the link's allow list replaces the mesh-wide one.
func EffectiveIngress(mesh, link Ingress) Ingress {
	out := Ingress{Deny: mergePrefixes(append(append([]netip.Prefix(nil), mesh.Deny...), link.Deny...))}
	out.Allow = mesh.Allow
	if len(link.Allow) > 0 {
		out.Allow = link.Allow
	}
	return out
}

// Allows reports whether the ingress rule lets a packet to dst pass; the
// bridge data plane enforces ingress in user space with it.
func (i Ingress) Allows(dst netip.Addr) bool {
	for _, d := range i.Deny {
		if d.Contains(dst) {
			return false
		}
	}
	if len(i.Allow) == 0 {
		return true
	}
	for _, a := range i.Allow {
		if a.Contains(dst) {
			return true
		}
	}
	return false
}

// FirewallChain is the mangle chain holding the ingress rules of a link.
func FirewallChain(link string) string { return chainName("FW", link) }
