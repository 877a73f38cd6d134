package broker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
)

// AnnotationAutoConnected marks a KubeLink that --auto-connect proposed; its
// value is the peer certificate's identities.
const AnnotationAutoConnected = v1alpha1.AnnotationAutoConnected

// AutoLink is the KubeLink that --auto-connect creates for an authenticated
// peer without a link, from its HELLO: spec.clusterAddress and spec.cidr as
// announced, the endpoint from the address the peer connected from and the
// port it advertised (its --advertised-port, else its --bridge-port; for a
// peer that announces none, our bridgePort); no spec.dns, so that the DNS
// information the peer advertises reaches the mesh DNS through the
// status (status.advertised) and follows the peer's changes; the name from the identity
// kubelink://<mesh>/<cluster> its certificate carries for the mesh of local
// (a peer without one is refused), so that the link pins that identity. It refuses a peer
// outside the mesh, an existing name, a cluster address another link has,
// and anything the mesh model would not accept next to existing.
func AutoLink(local *mesh.Mesh, p bridge.UnknownPeer, bridgePort, largestCIDR int, existing []v1alpha1.KubeLink, reserved []netip.Prefix) (*v1alpha1.KubeLink, error) {
	h := p.Hello
	ca := h.ClusterAddress
	if ca.Bits() != local.Local.Address.Bits() || ca.Masked() != local.CIDR() {
		return nil, fmt.Errorf("cluster address %s is not in the mesh %s", ca, local.CIDR())
	}
	if ca.Addr() == local.Local.IP() {
		return nil, fmt.Errorf("cluster address %s is this cluster's", ca)
	}
	if !p.Remote.IsValid() {
		return nil, fmt.Errorf("no remote address")
	}
	port := int(h.Port)
	if port == 0 {
		port = bridgePort
	}
	// The name comes from the identity the peer's certificate carries for
	// this mesh, as a URI SAN (a common name or DNS name is no identity):
	// the link then pins exactly that identity. A peer without one cannot
	// be pinned and gets no link.
	cluster := ""
	prefix := mesh.Identity(local.Name, "")
	for _, id := range p.URIs {
		if c, ok := strings.CutPrefix(id, prefix); ok && len(validation.IsDNS1123Label(c)) == 0 && !strings.Contains(c, "--") {
			cluster = c
			break
		}
	}
	if cluster == "" {
		return nil, fmt.Errorf("its certificate has no identity %s<cluster> for mesh %q as a URI SAN (names %v)", prefix, mesh.MeshDisplayName(local.Name), p.Identities)
	}
	identity := mesh.Identity(local.Name, cluster)
	for _, kl := range existing {
		if kl.Name != local.Local.Name.String() {
			continue
		}
		for _, d := range strings.Split(kl.Annotations[v1alpha1.AnnotationAutoConnectDeny], ",") {
			if strings.TrimSpace(d) == identity {
				return nil, fmt.Errorf("%s is on the deny list of LocalLink %s (annotation %s)", identity, kl.Name, v1alpha1.AnnotationAutoConnectDeny)
			}
		}
	}
	// What the HELLO claims must not take over local networks: the node,
	// pod and service networks, link-local (cloud metadata), loopback.
	// Nor may it claim more than a service network's size: a proposal
	// routes its CIDR once approved, and a /8 would take in much more than
	// one cluster's services.
	if sc := h.ServiceCIDR; sc.IsValid() && largestCIDR > 0 && sc.Bits() < largestCIDR {
		return nil, fmt.Errorf("its service CIDR %s is larger than /%d (--auto-connect-largest-cidr): write its KubeLink yourself if that is right", sc, largestCIDR)
	}
	if sc := h.ServiceCIDR; sc.IsValid() {
		for _, r := range reserved {
			if r.IsValid() && r.Overlaps(sc) {
				return nil, fmt.Errorf("its service CIDR %s overlaps the local network %s", sc, r)
			}
		}
	}
	name := mesh.LinkName{Mesh: local.Name, Cluster: cluster}.String()
	var ids []string // CN and SAN often repeat each other
	for _, id := range p.Identities {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	kl := &v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{AnnotationAutoConnected: strings.Join(ids, ",")}},
		Spec: v1alpha1.KubeLinkSpec{
			ClusterAddress: ca.String(),
			Endpoint:       net.JoinHostPort(p.Remote.Addr().String(), strconv.Itoa(port)),
		},
	}
	if h.ServiceCIDR.IsValid() {
		kl.Spec.CIDR = h.ServiceCIDR.String()
	}
	for i := range existing {
		e := &existing[i]
		if e.Name == name {
			return nil, fmt.Errorf("KubeLink %s exists (its endpoint host does not match the certificate %v); not overwritten", name, p.Identities)
		}
		if mesh.ParseLinkName(e.Name).Mesh == local.Name && strings.EqualFold(strings.SplitN(e.Spec.ClusterAddress, "/", 2)[0], ca.Addr().String()) {
			return nil, fmt.Errorf("KubeLink %s has cluster address %s (its endpoint host does not match the certificate %v); not overwritten", e.Name, ca.Addr(), p.Identities)
		}
	}
	// The model check as if approved: would the link be accepted next to
	// the existing ones?
	check := kl.DeepCopy()
	check.Annotations[v1alpha1.AnnotationApproved] = "true"
	m := mesh.Build(append(append([]v1alpha1.KubeLink(nil), existing...), *check), mesh.ParseOptions{DefaultPort: uint16(bridgePort)})
	if _, ok := m.Link(name); !ok {
		v := m.Verdicts[name]
		return nil, fmt.Errorf("the link built from its HELLO would be %s: %s", v.State, v.Message)
	}
	return kl, nil
}

// autoConnect creates the KubeLink for an unknown peer (--auto-connect);
// the next sync connects it.
func (b *Broker) autoConnect(local *mesh.Mesh, p bridge.UnknownPeer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.KubeLinkList
	if err := b.kube.List(ctx, &list); err != nil {
		return fmt.Errorf("listing KubeLinks: %w", err)
	}
	// What an applied link may not claim either (mesh.ReservedNetworks,
	// the model makes such a link Stale), and the local service CIDR.
	var reserved []netip.Prefix
	for _, r := range mesh.ReservedNetworks(b.cfg.NodeCIDR, b.cfg.PodCIDR) {
		reserved = append(reserved, r.Prefix)
	}
	if b.cfg.ServiceCIDR.IsValid() {
		reserved = append(reserved, b.cfg.ServiceCIDR)
	}
	kl, err := AutoLink(local, p, b.cfg.BridgePort, b.cfg.AutoConnectLargestCIDR, list.Items, reserved)
	if err != nil {
		b.log.Warn("auto-connect: not creating a link", "peer", p.Identities, "remote", p.Remote, "err", err)
		return err
	}
	if err := b.kube.Create(ctx, kl); err != nil {
		return fmt.Errorf("creating KubeLink %s: %w", kl.Name, err)
	}
	b.log.Info("auto-connect: proposed a KubeLink from the peer's HELLO; it waits for approval (annotation "+v1alpha1.AnnotationApproved+"=true)", "link", kl.Name, "endpoint", kl.Spec.Endpoint,
		"clusterAddress", kl.Spec.ClusterAddress, "cidr", kl.Spec.CIDR, "peer", p.Identities)
	b.kick()
	return nil
}
