package mesh

import (
	"fmt"
	"net/netip"
)

// FirewallRules render the ingress Policy of every foreign link as kernel
// rules for traffic arriving from the mesh device, in mangle PREROUTING
// (before any DNAT, so rules see the addresses the peer used): the top chain
// jumps by source — longest prefix first, so the owning link's chain
// decides (goto, not jump) — into one chain per link holding its probe exemption, transit,
// denies and allow list, ending in DROP. WireGuard itself drops sources
// outside the peer's AllowedIPs, which is the ownership check of
// Policy.Decide. Every link gets a chain: without spec.ingress the secure
// default applies (see LinkPolicy.Default), not "everything" as in the
// original.
func (m *Model) FirewallRules(device string, probePort int) RuleSet {
	return m.Policy(probePort).FirewallRules(device)
}

// FirewallRules renders the policy as iptables chains (see
// Model.FirewallRules).
func (p *Policy) FirewallRules(device string) RuleSet {
	if len(p.Links) == 0 {
		return RuleSet{}
	}
	top := Chain{Table: "mangle", Name: ChainFirewall}
	for _, o := range p.owners {
		// -g: the first matching source decides; a RETURN from the link's
		// chain leaves the firewall instead of trying the next source.
		top.Rules = append(top.Rules, []string{"-s", o.prefix.String(), "-g", FirewallChain(o.link.Link)})
	}
	chains := []Chain{top}
	for _, lp := range p.Links {
		c := Chain{Table: "mangle", Name: FirewallChain(lp.Link)}
		if pr := lp.Probe; pr.IsValid() {
			local, port := hostPrefix(pr.Addr()).String(), fmt.Sprint(pr.Port())
			c.Rules = append(c.Rules,
				[]string{"-d", local, "-p", "udp", "-m", "udp", "--dport", port, "-j", "RETURN"},
				[]string{"-d", local, "-p", "udp", "-m", "udp", "--sport", port, "--dport", fmt.Sprint(lp.ProbeReplyPort), "-j", "RETURN"})
		}
		for _, d := range lp.Transit {
			c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "RETURN"})
		}
		for _, d := range lp.Deny {
			c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "DROP"})
		}
		for _, a := range lp.Allow {
			c.Rules = append(c.Rules, []string{"-d", a.String(), "-j", "RETURN"})
		}
		c.Rules = append(c.Rules, []string{"-j", "DROP"})
		chains = append(chains, c)
	}
	return RuleSet{
		Hooks:  []Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-i", device, "-m", "comment", "--comment", "kubelink firewall rules", "-j", ChainFirewall}}},
		Chains: chains,
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

// FirewallChain is the mangle chain holding the ingress rules of a link.
func FirewallChain(link string) string { return chainName("FW", link) }
