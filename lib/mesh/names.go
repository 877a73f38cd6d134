package mesh

import "strings"

// DefaultMesh is the name of the mesh of links whose name has no "<mesh>--"
// prefix. It never appears in object names.
const DefaultMesh = ""

// LinkName is a KubeLink name split into its mesh and cluster parts.
type LinkName struct {
	Mesh    string
	Cluster string
}

// ParseLinkName splits "<mesh>--<cluster>" at the first "--" that is not at
// the start of the name; a name without one belongs to the default mesh.
func ParseLinkName(name string) LinkName {
	if i := strings.Index(name, "--"); i > 0 {
		return LinkName{Mesh: name[:i], Cluster: name[i+2:]}
	}
	return LinkName{Mesh: DefaultMesh, Cluster: name}
}

// String returns the object name the LinkName came from.
func (n LinkName) String() string {
	if n.Mesh == DefaultMesh {
		return n.Cluster
	}
	return n.Mesh + "--" + n.Cluster
}

// ReservedMeshName may not name a mesh: the default mesh's identities use
// it (Identity), so that links of a mesh "default" would accept the default
// mesh's members as their own.
const ReservedMeshName = "default"

// MeshDisplayName names a mesh in messages ("default" for the default mesh).
func MeshDisplayName(mesh string) string {
	if mesh == DefaultMesh {
		return "default"
	}
	return mesh
}

// IdentityScheme is the URI scheme of a member's identity in its bridge
// certificate.
const IdentityScheme = "kubelink"

// Identity is the URI SAN naming cluster as a member of mesh in its bridge
// certificate: kubelink://<mesh>/<cluster>, "default" for the default mesh.
// The peer of a link must present exactly the identity of the link's name,
// so that a member with a certificate of the same CA cannot pose as another
// (the CN and host names are no identity).
func Identity(mesh, cluster string) string {
	return IdentityScheme + "://" + MeshDisplayName(mesh) + "/" + cluster
}

// PeerIdentity is the identity the peer of l must present.
func (l *Link) PeerIdentity() string { return Identity(l.Name.Mesh, l.Name.Cluster) }
