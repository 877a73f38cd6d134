package broker

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// Served selects the meshes a broker serves (--served-links): mesh names
// ("default" for the default mesh) or mesh CIDRs. Empty serves all. Several
// brokers in one cluster can so split the meshes among them; each writes the
// status of its own links only, so there is still one writer per link.
type Served struct {
	names map[string]bool
	cidrs []netip.Prefix
}

// ParseServed parses the flag value ("all", "" or a comma list).
func ParseServed(v string) (Served, error) {
	s := Served{names: map[string]bool{}}
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "" || e == "all":
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return s, fmt.Errorf("--served-links: %q is not a CIDR", e)
			}
			s.cidrs = append(s.cidrs, p.Masked())
		default:
			s.names[e] = true
		}
	}
	return s, nil
}

// All reports whether every mesh is served.
func (s Served) All() bool { return len(s.names) == 0 && len(s.cidrs) == 0 }

// Mesh reports whether a mesh (by name and network) is served.
func (s Served) Mesh(name string, cidr netip.Prefix) bool {
	if s.All() || s.names[mesh.MeshDisplayName(name)] {
		return true
	}
	for _, c := range s.cidrs {
		if c == cidr {
			return true
		}
	}
	return false
}

// Links keeps the KubeLinks of served meshes. A link's mesh network is its
// address's network; a link whose address does not parse is kept when its
// mesh is served by name (so it is reported Invalid by someone).
func (s Served) Links(all []v1alpha1.KubeLink) []v1alpha1.KubeLink {
	if s.All() {
		return all
	}
	var out []v1alpha1.KubeLink
	for _, kl := range all {
		name := mesh.ParseLinkName(kl.Name).Mesh
		p, _ := netip.ParsePrefix(kl.Spec.ClusterAddress)
		if s.Mesh(name, p.Masked()) {
			out = append(out, kl)
		}
	}
	return out
}
