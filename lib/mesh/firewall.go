package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// FirewallRules render the ingress Policy of every foreign link as kernel
// rules for traffic arriving from the mesh device, in mangle PREROUTING
// (before any DNAT, so rules see the addresses the peer used). WireGuard
// itself drops sources outside the peer's AllowedIPs, which is the
// ownership check of Policy.Decide. Every link gets a chain: without
// spec.ingress the secure default applies (see LinkPolicy.Default), not
// "everything" as in the original. The chains (see Policy.FirewallRules)
// grow linearly with the links.
func (m *Model) FirewallRules(device string, probePort int) RuleSet {
	return m.Policy(probePort).FirewallRules(device)
}

// FirewallRules renders the policy as iptables chains, deciding as
// LinkPolicy.Allows does for the link that owns the source:
//
//   - the top chain (jumped to from PREROUTING) first sends a link's traffic
//     to its own networks to the link's chain (never transit); then, by
//     destination, traffic to a member's networks to the transit chain of
//     that member's mesh (or meshes: the same peer in several); then
//     everything to the sources chain;
//   - a transit chain lets through (RETURN) the sources owned by links of
//     its meshes, and sends the rest to the sources chain;
//   - the sources chain sends each source, longest prefix first, to the chain
//     of the link owning it;
//   - a link's chain holds its probe exemption, denies and allow list, and
//     ends in DROP.
//
// Every step is a goto (-g): a RETURN anywhere leaves the firewall, and the
// first match decides. Transit used to be a list of every other member's
// networks in every link's chain: links × links rules, which made each of
// the broker's passes (writing and listing mangle) cost seconds at 250
// links (issue #33). Now every network appears a bounded number of times.
func (p *Policy) FirewallRules(device string) RuleSet {
	if len(p.Links) == 0 {
		return RuleSet{}
	}
	top := Chain{Table: "mangle", Name: ChainFirewall}
	sources := Chain{Table: "mangle", Name: chainName("FW", "sources:")}
	// Per source network: its owner (the first in model order where the
	// same peer repeats a network in several meshes), the meshes of the
	// links that have it, and how many links have it; longest first, as the
	// owners are sorted.
	var owned []sourceOwner
	meshesOf := map[netip.Prefix][]string{}
	holders := map[netip.Prefix]int{}
	for _, o := range p.owners {
		if holders[o.prefix] == 0 {
			owned = append(owned, o)
		}
		holders[o.prefix]++
		if !slices.Contains(meshesOf[o.prefix], o.link.Mesh) {
			meshesOf[o.prefix] = append(meshesOf[o.prefix], o.link.Mesh)
		}
	}
	for _, o := range owned {
		sources.Rules = append(sources.Rules, []string{"-s", o.prefix.String(), "-g", FirewallChain(o.link.Link)})
		for _, d := range o.link.Sources {
			top.Rules = append(top.Rules, []string{"-s", o.prefix.String(), "-d", d.String(), "-g", FirewallChain(o.link.Link)})
		}
	}
	// Transit. A network no other link of its meshes could send to needs
	// no rule (a mesh of one member).
	linksIn := map[string]int{}
	for _, lp := range p.Links {
		linksIn[lp.Mesh]++
	}
	var transit []Chain
	byKey := map[string]int{}
	for _, o := range owned {
		d := o.prefix
		others := -holders[d]
		for _, m := range meshesOf[d] {
			others += linksIn[m]
		}
		if others <= 0 {
			continue
		}
		ms := slices.Clone(meshesOf[d])
		slices.Sort(ms)
		key := "transit:" + strings.Join(ms, ",")
		i, ok := byKey[key]
		if !ok {
			c := Chain{Table: "mangle", Name: chainName("FW", key)}
			for _, src := range owned {
				if slices.Contains(ms, src.link.Mesh) {
					c.Rules = append(c.Rules, []string{"-s", src.prefix.String(), "-j", "RETURN"})
				}
			}
			c.Rules = append(c.Rules, []string{"-g", sources.Name})
			i = len(transit)
			byKey[key] = i
			transit = append(transit, c)
		}
		top.Rules = append(top.Rules, []string{"-d", d.String(), "-g", transit[i].Name})
	}
	top.Rules = append(top.Rules, []string{"-g", sources.Name})

	chains := append([]Chain{top, sources}, transit...)
	for _, lp := range p.Links {
		c := Chain{Table: "mangle", Name: FirewallChain(lp.Link)}
		if pr := lp.Probe; pr.IsValid() {
			local, port := hostPrefix(pr.Addr()).String(), fmt.Sprint(pr.Port())
			c.Rules = append(c.Rules,
				[]string{"-d", local, "-p", "udp", "-m", "udp", "--dport", port, "-j", "RETURN"},
				[]string{"-d", local, "-p", "udp", "-m", "udp", "--sport", port, "--dport", fmt.Sprint(lp.ProbeReplyPort), "-j", "RETURN"})
		}
		for _, d := range lp.Deny {
			c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "DROP"})
		}
		if lp.Local.IsValid() {
			// The cluster address has its own rule (KUBELINK-LOCAL).
			c.Rules = append(c.Rules, []string{"-d", hostPrefix(lp.Local).String(), "-j", "RETURN"})
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
