package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common/util"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// member is one cluster of a mesh, as join and show see it: its LocalLink,
// its other KubeLinks and its kubelink release.
type member struct {
	*cluster
	ns        string
	local     v1alpha1.KubeLink   // the LocalLink
	links     []v1alpha1.KubeLink // its other KubeLinks
	release   *releasev1.Release  // nil when kubelink was not installed with helm
	values    map[string]any      // the release's values, the chart's defaults included
	name      string              // the cluster's name in the mesh (the LocalLink's)
	address   netip.Prefix        // its mesh address, with the mesh's prefix length
	svc       netip.Prefix        // its service CIDR
	endpoint  string              // host:port peers reach its broker at
	dataPlane string              // wireguard or bridge
}

// loadMember reads the cluster of a context as a mesh member. meshCIDR
// picks the LocalLink when the cluster is in several meshes.
func (g *globals) loadMember(ctx context.Context, contextName, meshCIDR string) (*member, error) {
	c, err := g.connectContext(ctx, contextName)
	if err != nil {
		return nil, err
	}
	m := &member{cluster: c, ns: *g.kube.Namespace}
	var list v1alpha1.KubeLinkList
	if err := c.c.List(ctx, &list); err != nil {
		if isNoKind(err) {
			return nil, fmt.Errorf("context %q: kubelink is not installed there (no KubeLink resource): run `%s install --context %s` first", c.context, commandName(), c.context)
		}
		return nil, fmt.Errorf("context %q: listing KubeLinks: %w", c.context, err)
	}
	var locals []v1alpha1.KubeLink
	for _, l := range list.Items {
		if l.Spec.Endpoint == v1alpha1.EndpointLocalLink {
			locals = append(locals, l)
		} else {
			m.links = append(m.links, l)
		}
	}
	sort.Slice(m.links, func(i, j int) bool { return m.links[i].Name < m.links[j].Name })
	if meshCIDR != "" {
		want, err := netip.ParsePrefix(meshCIDR)
		if err != nil {
			return nil, fmt.Errorf("--mesh-cidr %q: %v", meshCIDR, err)
		}
		locals = selectMesh(locals, want.Masked())
	}
	switch {
	case len(locals) == 0 && meshCIDR != "":
		return nil, fmt.Errorf("context %q: no LocalLink in mesh %s: run `%s install --context %s --mesh-cidr %s` first", c.context, meshCIDR, commandName(), c.context, meshCIDR)
	case len(locals) == 0:
		return nil, fmt.Errorf("context %q: no LocalLink (this cluster is in no mesh): run `%s install --context %s` first", c.context, commandName(), c.context)
	case len(locals) > 1:
		var names []string
		for _, l := range locals {
			names = append(names, l.Name+" ("+l.Spec.ClusterAddress+")")
		}
		return nil, fmt.Errorf("context %q is in %d meshes (LocalLinks %s): say which with --mesh-cidr", c.context, len(locals), strings.Join(names, ", "))
	}
	m.local = locals[0]
	m.name = m.local.Name
	if m.address, err = netip.ParsePrefix(m.local.Spec.ClusterAddress); err != nil {
		return nil, fmt.Errorf("context %q: LocalLink %s: spec.clusterAddress %q: %v", c.context, m.name, m.local.Spec.ClusterAddress, err)
	}
	if m.svc, err = netip.ParsePrefix(m.local.Spec.CIDR); err != nil {
		return nil, fmt.Errorf("context %q: LocalLink %s: spec.cidr %q: %v", c.context, m.name, m.local.Spec.CIDR, err)
	}
	m.endpoint = m.local.Annotations[EndpointAnnotation]

	cfg := action.NewConfiguration()
	if err := cfg.Init(c.flags, m.ns, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	rel, err := action.NewGet(cfg).Run(releaseName)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
	case err != nil:
		return nil, fmt.Errorf("context %q: reading the kubelink release in namespace %s: %w", c.context, m.ns, err)
	default:
		m.release, _ = rel.(*releasev1.Release)
	}
	if err := m.loadValues(); err != nil {
		return nil, fmt.Errorf("context %q: %w", c.context, err)
	}
	// The data plane the broker runs, else the one installed.
	switch dp := m.local.Status.DataPlane; {
	case strings.HasPrefix(dp, "wireguard"):
		m.dataPlane = "wireguard"
	case dp != "":
		m.dataPlane = dp
	default:
		m.dataPlane = m.value("dataPlane")
	}
	return m, nil
}

// checkEndpoint accepts host:port with a port of 1–65535.
func checkEndpoint(ep string) error {
	if ep == v1alpha1.EndpointLocalLink || ep == v1alpha1.EndpointInbound {
		return fmt.Errorf("must be the host:port peers reach the broker at")
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
		return fmt.Errorf("must be host:port with a port of 1–65535")
	}
	return nil
}

// isWireGuardKey: 32 bytes in standard base64.
func isWireGuardKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == 32
}

// coalesce is the release's values over its chart's defaults.
func coalesce(rel *releasev1.Release) (map[string]any, error) {
	return util.CoalesceValues(rel.Chart, rel.Config)
}

// selectMesh keeps the LocalLinks whose address is in mesh.
func selectMesh(locals []v1alpha1.KubeLink, mesh netip.Prefix) []v1alpha1.KubeLink {
	var out []v1alpha1.KubeLink
	for _, l := range locals {
		if p, err := netip.ParsePrefix(l.Spec.ClusterAddress); err == nil && p.Masked() == mesh {
			out = append(out, l)
		}
	}
	return out
}

// value is a string value of the release ("a.b.c"), "" when unset.
func (m *member) value(path string) string { return valueAt(m.values, path) }

// valueAt is a string (or bool) value of a values tree ("a.b.c"), "" when
// unset.
func valueAt(values map[string]any, path string) string {
	var cur any = values
	for _, k := range strings.Split(path, ".") {
		mv, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mv[k]
	}
	switch v := cur.(type) {
	case string:
		return v
	case bool:
		return fmt.Sprint(v)
	}
	return ""
}

// releaseImage is the image the release names under images.<component>
// (else kubelink/<component>), from its registry, with its tag (else the
// chart's appVersion).
func (m *member) releaseImage(component string) string {
	repo := m.value("images." + component)
	if repo == "" {
		repo = "kubelink/" + component
	}
	tag := m.value("image.tag")
	if tag == "" && m.release != nil && m.release.Chart != nil && m.release.Chart.Metadata != nil {
		tag = m.release.Chart.Metadata.AppVersion
	}
	return imageRef(m.value("image.registry"), repo, tag)
}

// authority: this cluster holds the mesh CA (bridge).
func (m *member) authority() bool { return m.value("meshAuthority.enabled") == "true" }

// link is the member's KubeLink named name, nil when it has none.
func (m *member) link(name string) *v1alpha1.KubeLink {
	for i := range m.links {
		if m.links[i].Name == name {
			return &m.links[i]
		}
	}
	return nil
}

func (m *member) String() string {
	if m.cluster == nil { // a member known only by name (a token's)
		return fmt.Sprintf("%q", m.name)
	}
	return fmt.Sprintf("%q (context %s)", m.name, m.context)
}

// checkMembers refuses a set of clusters that cannot form one mesh, naming
// the clusters at fault and the fix. It changes nothing.
func checkMembers(ms []*member) error {
	if errs := memberProblems(ms); len(errs) > 0 {
		return fmt.Errorf("these clusters cannot form one mesh; nothing was changed:\n  - %s", strings.Join(errs, "\n  - "))
	}
	return nil
}

// memberProblems is every reason the clusters cannot form one mesh, each
// naming the clusters at fault and the fix.
func memberProblems(ms []*member) []string {
	var errs []string
	for i, a := range ms {
		if a.endpoint == "" {
			errs = append(errs, fmt.Sprintf("%s: its LocalLink has no annotation %s (the host:port peers reach its broker at): run `%s install --context %s` again, or annotate it",
				a, EndpointAnnotation, commandName(), a.context))
		}
		if a.dataPlane == "" {
			errs = append(errs, fmt.Sprintf("%s: its data plane is unknown (no broker has published it in the LocalLink's status, and no kubelink release says it): check `kubectl --context %s -n %s get pods`", a, a.context, a.ns))
		}
		if a.endpoint != "" {
			if err := checkEndpoint(a.endpoint); err != nil {
				errs = append(errs, fmt.Sprintf("%s: its LocalLink's annotation %s %q: %v: run `%s install --context %s` again", a, EndpointAnnotation, a.endpoint, err, commandName(), a.context))
			}
		}
		switch k := a.local.Status.PublicKey; {
		case a.dataPlane == "wireguard" && k == "":
			errs = append(errs, fmt.Sprintf("%s: its LocalLink has no status.publicKey yet: its broker is not running (`kubectl --context %s -n %s get pods`)", a, a.context, a.ns))
		case a.dataPlane == "wireguard" && !isWireGuardKey(k):
			errs = append(errs, fmt.Sprintf("%s: its LocalLink's status.publicKey %q is not a WireGuard key (32 bytes, base64)", a, k))
		}
		for _, b := range ms[i+1:] {
			switch {
			case a.name == b.name:
				errs = append(errs, fmt.Sprintf("%s and %s have the same name: each cluster of a mesh needs its own (reinstall one with another --name)", a, b))
			case a.address.Masked() != b.address.Masked():
				errs = append(errs, fmt.Sprintf("%s is in mesh %s and %s in mesh %s: install both with the same --mesh-cidr", a, a.address.Masked(), b, b.address.Masked()))
			case a.address.Addr() == b.address.Addr():
				errs = append(errs, fmt.Sprintf("%s and %s have the same mesh address %s: reinstall one with another --address", a, b, a.address.Addr()))
			}
			if a.svc.Overlaps(b.svc) {
				errs = append(errs, fmt.Sprintf("the service CIDR %s of %s overlaps the service CIDR %s of %s: kubelink routes each cluster's services by CIDR, so they must be disjoint",
					a.svc, a, b.svc, b))
			}
			if a.dataPlane != "" && b.dataPlane != "" && a.dataPlane != b.dataPlane {
				errs = append(errs, fmt.Sprintf("%s runs the %s data plane and %s the %s data plane: install both with the same --data-plane", a, a.dataPlane, b, b.dataPlane))
			}
		}
		// A KubeLink of another name that already claims a member's address
		// or service CIDR would make two links for one peer; one of the
		// peer's name not made by join, for another address, is someone
		// else's.
		for _, b := range ms {
			if a == b {
				continue
			}
			for _, l := range a.links {
				if l.Name == b.name {
					if l.Labels[managedByLabel] != managedBy && l.Spec.ClusterAddress != b.address.String() {
						errs = append(errs, fmt.Sprintf("%s has KubeLink %s, not made by join, for the address %s, not %s's %s: rename or delete it (`kubectl --context %s delete kubelink %s`)",
							a, l.Name, l.Spec.ClusterAddress, b.name, b.address, a.context, l.Name))
					}
					continue
				}
				if p, err := netip.ParsePrefix(l.Spec.ClusterAddress); err == nil && p.Addr() == b.address.Addr() {
					errs = append(errs, fmt.Sprintf("%s has KubeLink %s with the mesh address %s of %s: delete it (`kubectl --context %s delete kubelink %s`), join names each link after its peer",
						a, l.Name, b.address.Addr(), b, a.context, l.Name))
				}
			}
		}
	}
	return errs
}
