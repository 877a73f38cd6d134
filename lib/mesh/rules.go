package mesh

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
)

// ChainPrefix marks every iptables chain kubelink owns; nothing else is touched.
const ChainPrefix = "KUBELINK-"

// Chain is a desired iptables chain of ours with its rules in order, each in
// go-iptables argument form.
type Chain struct {
	Table string
	Name  string
	Rules [][]string
}

// Hook is a rule in a built-in chain that jumps into one of ours.
type Hook struct {
	Table string
	Chain string
	Rule  []string
}

// RuleSet is the desired content of our chains and their hooks. An empty
// RuleSet means: remove our chains and hooks for this concern.
type RuleSet struct {
	Hooks  []Hook
	Chains []Chain
}

// chainName builds "KUBELINK-<kind>-<hash>" within iptables' 28-character
// limit; the hash keeps names stable and unique per key.
func chainName(kind, key string) string {
	sum := sha256.Sum256([]byte(key))
	h := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
	n := ChainPrefix + kind + "-"
	return n + h[:28-len(n)]
}

// Fixed chain names.
const (
	ChainNAT      = ChainPrefix + "NAT"
	ChainFirewall = ChainPrefix + "FIREWALL"
	ChainServices = ChainPrefix + "SERVICES"
)

// NATOptions describe the broker's network namespace.
type NATOptions struct {
	// Device is the mesh device (WireGuard or tun).
	Device string
	// PodInterface is set in pod mode: traffic from the mesh into the cluster
	// leaves the pod there and is masqueraded to the pod IP so replies return.
	PodInterface string
}

// SNATRules make traffic into the mesh come from the local cluster address of
// the mesh it goes to, so that peers need routes only for mesh addresses.
// Traffic that already has a mesh source (transit through us) keeps it. With
// several meshes, the destination selects the mesh (and so the address).
func (m *Model) SNATRules(o NATOptions) RuleSet {
	var meshChains []Chain
	for _, sc := range m.SNATScopes() {
		c := Chain{Table: "nat", Name: chainName("NT", sc.Mesh.String())}
		src := sc.Source.String()
		c.Rules = append(c.Rules, []string{"-s", sc.Mesh.String(), "-j", "RETURN"})
		for _, d := range sc.Destinations {
			c.Rules = append(c.Rules, []string{"-d", d.String(), "-j", "SNAT", "--to-source", src})
		}
		meshChains = append(meshChains, c)
	}
	if len(meshChains) == 0 && o.PodInterface == "" {
		return RuleSet{}
	}
	top := Chain{Table: "nat", Name: ChainNAT}
	if o.PodInterface != "" {
		top.Rules = append(top.Rules, []string{"-o", o.PodInterface, "-j", "MASQUERADE"})
	}
	top.Rules = append(top.Rules, []string{"!", "-o", o.Device, "-j", "RETURN"})
	for _, c := range meshChains {
		top.Rules = append(top.Rules, []string{"-j", c.Name})
	}
	return RuleSet{
		Hooks:  []Hook{{Table: "nat", Chain: "POSTROUTING", Rule: []string{"-m", "comment", "--comment", "kubelink snat rules", "-j", ChainNAT}}},
		Chains: append([]Chain{top}, meshChains...),
	}
}

// SNATScope is what the SNAT rules of one mesh rewrite: traffic to
// Destinations from a source outside Mesh leaves with Source, the local
// cluster address.
type SNATScope struct {
	Mesh         netip.Prefix
	Source       netip.Addr
	Destinations []netip.Prefix
}

// Covers reports whether a flow from src to dst is one the scope's rules
// rewrite.
func (s SNATScope) Covers(src, dst netip.Addr) bool {
	if s.Mesh.Contains(src) {
		return false
	}
	for _, d := range s.Destinations {
		if d.Contains(dst) {
			return true
		}
	}
	return false
}

// SNATScopes are the scopes of SNATRules, one per mesh with members.
func (m *Model) SNATScopes() []SNATScope {
	var out []SNATScope
	for _, ms := range m.Meshes {
		if len(ms.Members) == 0 {
			continue
		}
		out = append(out, SNATScope{Mesh: ms.CIDR(), Source: ms.Local.IP(), Destinations: m.meshDestinations(ms)})
	}
	return out
}

// meshDestinations: the mesh CIDR and every network reached through a member.
func (m *Model) meshDestinations(ms *Mesh) []netip.Prefix {
	d := []netip.Prefix{ms.CIDR()}
	for _, l := range ms.Members {
		d = append(d, l.Destinations()...)
	}
	return mergePrefixes(d)
}
