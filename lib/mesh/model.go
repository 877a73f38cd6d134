package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Mesh is one mesh the local cluster is a member of, defined by its oldest
// LocalLink.
type Mesh struct {
	Name  string
	Local *Link
	// Members are the accepted foreign links of the mesh, sorted by name.
	Members []*Link
}

// CIDR is the mesh network.
func (m *Mesh) CIDR() netip.Prefix { return m.Local.MeshCIDR() }

// Verdict is the model's judgement of one KubeLink.
type Verdict struct {
	// State is "" for an accepted link, otherwise Invalid or Stale.
	State   string
	Message string
}

// Accepted reports whether the link takes part in the mesh.
func (v Verdict) Accepted() bool { return v.State == "" }

// Model is an immutable view of all KubeLinks: the meshes, and a verdict for
// every link. Build it anew whenever a link changes.
type Model struct {
	Meshes   []*Mesh
	Verdicts map[string]Verdict
	links    map[string]*Link
	reserved []NamedPrefix
}

// Build validates links and groups them into meshes. Conflicts are decided in
// favour of the older object (creation time, then name), so the verdict of a
// link never depends on the order of the input.
func Build(kls []v1alpha1.KubeLink, opts ParseOptions) *Model {
	m := &Model{Verdicts: map[string]Verdict{}, links: map[string]*Link{}, reserved: opts.Reserved}
	var locals, foreign []*Link
	for i := range kls {
		if msg := pendingApproval(&kls[i]); msg != "" {
			m.Verdicts[kls[i].Name] = Verdict{State: v1alpha1.StateStale, Message: msg}
			continue
		}
		l, err := ParseLink(&kls[i], opts)
		if err != nil {
			m.Verdicts[kls[i].Name] = Verdict{State: v1alpha1.StateInvalid, Message: err.Error()}
			continue
		}
		if l.IsLocal() {
			locals = append(locals, l)
		} else {
			foreign = append(foreign, l)
		}
	}
	sortOldestFirst(locals)
	sortOldestFirst(foreign)
	meshes := map[string]*Mesh{}
	for _, l := range locals {
		m.addLocal(meshes, l)
	}
	for _, l := range foreign {
		m.addForeign(meshes, l)
	}
	m.checkGatewayLinks(meshes)
	for _, ms := range sortedMeshes(meshes) {
		slices.SortFunc(ms.Members, func(a, b *Link) int { return cmp.Compare(a.Name.String(), b.Name.String()) })
		m.Meshes = append(m.Meshes, ms)
	}
	return m
}

// pendingApproval explains why a link --auto-connect proposed does not take
// part yet, "" when it is not such a link or is approved. A peer's HELLO may
// propose a link, never force one: until an admin approves it, it is neither
// routed nor in the data plane.
func pendingApproval(kl *v1alpha1.KubeLink) string {
	ids, proposed := kl.Annotations[v1alpha1.AnnotationAutoConnected]
	if !proposed || kl.Annotations[v1alpha1.AnnotationApproved] == "true" {
		return ""
	}
	return fmt.Sprintf("proposed by --auto-connect for the peer %s and not approved: check its cidr and endpoint, then approve with "+
		"kubectl annotate kubelink %s %s=true (or delete it and add the peer's identity to the LocalLink annotation %s)",
		ids, kl.Name, v1alpha1.AnnotationApproved, v1alpha1.AnnotationAutoConnectDeny)
}

func sortOldestFirst(ls []*Link) {
	slices.SortFunc(ls, func(a, b *Link) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Name.String(), b.Name.String())
	})
}

func (m *Model) stale(l *Link, format string, a ...any) {
	m.Verdicts[l.Name.String()] = Verdict{State: v1alpha1.StateStale, Message: fmt.Sprintf(format, a...)}
}

func (m *Model) accept(l *Link) {
	m.Verdicts[l.Name.String()] = Verdict{}
	m.links[l.Name.String()] = l
}

func (m *Model) addLocal(meshes map[string]*Mesh, l *Link) {
	if old, ok := meshes[l.Name.Mesh]; ok {
		m.stale(l, "mesh %q is already defined by the older LocalLink %s; delete one of them",
			MeshDisplayName(l.Name.Mesh), old.Local.Name)
		return
	}
	for _, other := range sortedMeshes(meshes) {
		if overlaps(other.CIDR(), l.MeshCIDR()) {
			m.stale(l, "mesh network %s overlaps %s of mesh %q (LocalLink %s); meshes need disjoint networks",
				l.MeshCIDR(), other.CIDR(), MeshDisplayName(other.Name), other.Local.Name)
			return
		}
	}
	for _, other := range sortedMeshes(meshes) {
		if lc := l.ServiceCIDR; lc.IsValid() && overlaps(other.CIDR(), lc) {
			m.stale(l, "cidr %s overlaps the network %s of mesh %q (LocalLink %s); the service CIDR must lie outside every mesh network",
				lc, other.CIDR(), MeshDisplayName(other.Name), other.Local.Name)
			return
		}
		if oc := other.Local.ServiceCIDR; oc.IsValid() && overlaps(l.MeshCIDR(), oc) {
			m.stale(l, "mesh network %s overlaps the service CIDR %s (LocalLink %s); the mesh network must lie outside the cluster's networks",
				l.MeshCIDR(), oc, other.Local.Name)
			return
		}
	}
	if lc := l.ServiceCIDR; lc.IsValid() && overlaps(l.MeshCIDR(), lc) {
		m.stale(l, "cidr %s overlaps the mesh network %s; the service CIDR must lie outside the mesh network", lc, l.MeshCIDR())
		return
	}
	meshes[l.Name.Mesh] = &Mesh{Name: l.Name.Mesh, Local: l}
	m.accept(l)
}

func (m *Model) addForeign(meshes map[string]*Mesh, l *Link) {
	ms, ok := meshes[l.Name.Mesh]
	if !ok {
		m.stale(l, "no LocalLink for mesh %q: create a KubeLink %s with endpoint LocalLink and this cluster's address",
			MeshDisplayName(l.Name.Mesh), LinkName{Mesh: l.Name.Mesh, Cluster: "<this-cluster>"})
		return
	}
	if l.MeshCIDR() != ms.CIDR() {
		m.stale(l, "clusterAddress %s is not in the network %s of mesh %q (LocalLink %s)",
			l.Address, ms.CIDR(), MeshDisplayName(ms.Name), ms.Local.Name)
		return
	}
	if l.IP() == ms.Local.IP() {
		m.stale(l, "clusterAddress %s is the local cluster's own address (LocalLink %s)", l.Address, ms.Local.Name)
		return
	}
	for _, other := range ms.Members {
		if other.IP() == l.IP() {
			m.stale(l, "clusterAddress %s is already used by link %s", l.Address, other.Name)
			return
		}
		for _, od := range other.Destinations() {
			if od.Contains(l.IP()) {
				m.stale(l, "clusterAddress %s is inside %s, which link %s claims (egress)", l.Address, od, other.Name)
				return
			}
		}
	}
	if c := m.destinationConflict(meshes, l); c != "" {
		m.stale(l, "%s", c)
		return
	}
	ms.Members = append(ms.Members, l)
	m.accept(l)
}

// destinationConflict finds a network of l that another accepted link (or the
// local cluster) already claims. The same peer in several meshes (same public
// key) may repeat its networks.
func (m *Model) destinationConflict(meshes map[string]*Mesh, l *Link) string {
	for _, d := range l.Destinations() {
		for _, r := range m.reserved {
			if overlaps(r.Prefix, d) {
				return fmt.Sprintf("%s overlaps %s %s of this cluster; cidr and egress must lie outside the cluster's own networks, or its own traffic would go into the tunnel", d, r.Name, r.Prefix)
			}
		}
		for _, ms := range sortedMeshes(meshes) {
			if c := meshNetworkConflict(ms, l, d); c != "" {
				return c
			}
			if lc := ms.Local.ServiceCIDR; lc.IsValid() && overlaps(lc, d) {
				return fmt.Sprintf("%s overlaps the local service CIDR %s (LocalLink %s); service networks must be disjoint", d, lc, ms.Local.Name)
			}
			for _, other := range ms.Members {
				if samePeer(l, other) {
					continue
				}
				for _, od := range other.Destinations() {
					if overlaps(od, d) {
						return fmt.Sprintf("%s overlaps %s of link %s; a network can be reached through one peer only", d, od, other.Name)
					}
				}
			}
		}
	}
	return ""
}

// meshNetworkConflict checks a destination d of link l against mesh ms: a
// network around a mesh would swallow it, one in another mesh belongs to
// that mesh's members, and one inside l's own mesh (an egress for MeshService
// addresses of the peer) must not take the address of the local cluster or
// of another member: whoever claims a destination may send from it.
func meshNetworkConflict(ms *Mesh, l *Link, d netip.Prefix) string {
	name := MeshDisplayName(ms.Name)
	switch {
	case !overlaps(ms.CIDR(), d):
		return ""
	case !contains(ms.CIDR(), d):
		return fmt.Sprintf("%s covers the network %s of mesh %q; cidr and egress must lie outside it (or, for MeshService addresses of the peer, inside its own mesh)", d, ms.CIDR(), name)
	case ms.Name != l.Name.Mesh:
		return fmt.Sprintf("%s is inside the network %s of mesh %q, but the link belongs to mesh %q", d, ms.CIDR(), name, MeshDisplayName(l.Name.Mesh))
	case d.Contains(ms.Local.IP()):
		return fmt.Sprintf("%s contains the local cluster address %s (LocalLink %s)", d, ms.Local.IP(), ms.Local.Name)
	}
	for _, other := range ms.Members {
		if other != l && d.Contains(other.IP()) {
			return fmt.Sprintf("%s contains the cluster address %s of link %s", d, other.IP(), other.Name)
		}
	}
	return ""
}

// sortedMeshes iterates meshes by name so that messages are deterministic.
func sortedMeshes(meshes map[string]*Mesh) []*Mesh {
	out := make([]*Mesh, 0, len(meshes))
	for _, ms := range meshes {
		out = append(out, ms)
	}
	slices.SortFunc(out, func(a, b *Mesh) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func samePeer(a, b *Link) bool { return !a.PublicKey.IsZero() && a.PublicKey == b.PublicKey }

// checkGatewayLinks rejects transit links whose gateway is unusable. Links
// are re-checked until nothing changes, as rejecting one can break another.
func (m *Model) checkGatewayLinks(meshes map[string]*Mesh) {
	for changed := true; changed; {
		changed = false
		for _, ms := range sortedMeshes(meshes) {
			kept := ms.Members[:0]
			for _, l := range ms.Members {
				if msg := m.gatewayProblem(l); msg != "" {
					m.stale(l, "%s", msg)
					delete(m.links, l.Name.String())
					changed = true
					continue
				}
				kept = append(kept, l)
			}
			ms.Members = kept
		}
	}
}

func (m *Model) gatewayProblem(l *Link) string {
	if l.GatewayLink == "" {
		return ""
	}
	gw, ok := m.links[l.GatewayLink]
	switch {
	case !ok:
		if v, known := m.Verdicts[l.GatewayLink]; known {
			return fmt.Sprintf("gatewayLink %s is not usable (%s: %s)", l.GatewayLink, v.State, v.Message)
		}
		return fmt.Sprintf("gatewayLink %s does not exist", l.GatewayLink)
	case gw.IsLocal():
		return fmt.Sprintf("gatewayLink %s is a LocalLink; name the link of the peer that forwards the traffic", l.GatewayLink)
	case gw.Name.Mesh != l.Name.Mesh:
		return fmt.Sprintf("gatewayLink %s belongs to mesh %q, not %q", l.GatewayLink, MeshDisplayName(gw.Name.Mesh), MeshDisplayName(l.Name.Mesh))
	case gw.GatewayLink != "":
		return fmt.Sprintf("gatewayLink %s itself uses gatewayLink %s; only one transit hop is supported", l.GatewayLink, gw.GatewayLink)
	}
	return ""
}

// Link returns an accepted link by object name.
func (m *Model) Link(name string) (*Link, bool) {
	l, ok := m.links[name]
	return l, ok
}

// Mesh returns a mesh by name.
func (m *Model) Mesh(name string) (*Mesh, bool) {
	for _, ms := range m.Meshes {
		if ms.Name == name {
			return ms, true
		}
	}
	return nil, false
}

// MeshForAddress returns the mesh whose network contains a peer's cluster
// address. (The original looked the mesh up by the peer's service CIDR.)
func (m *Model) MeshForAddress(a netip.Addr) (*Mesh, bool) {
	for _, ms := range m.Meshes {
		if ms.CIDR().Contains(a) {
			return ms, true
		}
	}
	return nil, false
}

// claimedBy returns the member whose networks contain a, or nil.
func (ms *Mesh) claimedBy(a netip.Addr) *Link {
	for _, l := range ms.Members {
		for _, d := range l.Destinations() {
			if d.Contains(a) {
				return l
			}
		}
	}
	return nil
}

// LinkForAddress returns the accepted foreign link with cluster address a.
func (m *Model) LinkForAddress(a netip.Addr) (*Link, bool) {
	if ms, ok := m.MeshForAddress(a); ok {
		for _, l := range ms.Members {
			if l.IP() == a {
				return l, true
			}
		}
	}
	return nil, false
}
