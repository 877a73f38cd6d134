package meshdns

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// Credentials reach a remote API server (from a link's apiAccess Secret).
type Credentials struct {
	Token string
	// CA is the PEM bundle of the remote API server's CA (empty: system roots).
	CA []byte
}

// ParseCredentials reads an apiAccess Secret's data (keys token and
// certificate-authority-data). The CA may be PEM or base64-encoded PEM, as
// kubeconfig files carry it.
func ParseCredentials(data map[string][]byte) (Credentials, error) {
	c := Credentials{Token: strings.TrimSpace(string(data[v1alpha1.SecretKeyToken]))}
	if c.Token == "" {
		return c, fmt.Errorf("no key %q", v1alpha1.SecretKeyToken)
	}
	ca := bytes.TrimSpace(data[v1alpha1.SecretKeyCAData])
	if len(ca) > 0 && !bytes.HasPrefix(ca, []byte("-----BEGIN")) {
		dec, err := base64.StdEncoding.DecodeString(string(ca))
		if err != nil || !bytes.HasPrefix(bytes.TrimSpace(dec), []byte("-----BEGIN")) {
			return c, fmt.Errorf("key %q is neither PEM nor base64-encoded PEM", v1alpha1.SecretKeyCAData)
		}
		ca = bytes.TrimSpace(dec)
	}
	if len(ca) > 0 {
		c.CA = append(ca, '\n')
	}
	return c, nil
}

// InputOptions are the flags BuildInput needs.
type InputOptions struct {
	// Mode is ModeDNS or ModeKubernetes.
	Mode string
	// ClusterName names the local cluster in every mesh; "" takes the
	// cluster part of each mesh's LocalLink name.
	ClusterName string
	// ClusterDomain is the local cluster domain ("": cluster.local).
	ClusterDomain string
	// DNS is the local cluster DNS IP (invalid: the LocalLink's service CIDR
	// + 10).
	DNS netip.Addr
	// Credentials of apiAccess Secrets by link name (kubernetes mode).
	Credentials map[string]Credentials
	// CredentialErrors explain why a link's apiAccess Secret is unusable.
	CredentialErrors map[string]error
	// LinkGate (dns mode): every accepted link gets its block whatever its
	// state, behind the kubelinkgate plugin, which answers NXDOMAIN while
	// the link is not Up. Health changes then change no Corefile and restart
	// no CoreDNS, and a link that leaves Up is gone from DNS within the
	// plugin's reaction (the informer) and its 1 s TTL cap.
	LinkGate bool
	// ClusterSetZone is Input.ClusterSetZone ("": none).
	ClusterSetZone string
}

// BuildInput derives the Render input from the mesh model and the KubeLink
// objects. Only accepted links take part (the model reports invalid DNS
// fields as Invalid), and of those only links whose status is Up: a cluster
// that is not connected disappears from DNS. Links left out for a reason the
// user can fix are explained in the returned warnings.
func BuildInput(m *mesh.Model, links []v1alpha1.KubeLink, o InputOptions) (Input, []string) {
	byName := map[string]*v1alpha1.KubeLink{}
	for i := range links {
		byName[links[i].Name] = &links[i]
	}
	in := Input{Mode: o.Mode, ClusterDomain: strings.ToLower(o.ClusterDomain), ClusterSetZone: o.ClusterSetZone}
	if in.ClusterDomain == "" {
		in.ClusterDomain = mesh.DefaultClusterDomain
	}
	var warnings []string
	for _, ms := range m.Meshes {
		mi := MeshInput{
			Name:      ms.Name,
			Domain:    strings.ToLower(ms.Local.DNS.Domain),
			Omit:      !ms.Local.DNS.Propagate,
			GlobalDNS: ms.Local.DNS.IP,
		}
		if mi.Omit {
			in.Meshes = append(in.Meshes, mi)
			continue
		}
		mi.LocalCluster = o.ClusterName
		if mi.LocalCluster == "" {
			mi.LocalCluster = ms.Local.Name.Cluster
		}
		if w := setLocalDNS(&in, &mi, ms, o); w != "" {
			warnings = append(warnings, w)
		}
		for _, l := range ms.Members {
			kl := byName[l.Name.String()]
			gated := o.LinkGate && o.Mode == ModeDNS
			if !l.DNS.Propagate || kl == nil || (kl.Status.State != v1alpha1.StateUp && !gated) {
				continue
			}
			c, err := remoteCluster(l, kl, o)
			if err == nil {
				err = c.validate(o.Mode, ms.Name)
			}
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("link %s left out of DNS: %v", l.Name, err))
				continue
			}
			c.Gated = gated
			mi.Clusters = append(mi.Clusters, c)
		}
		in.Meshes = append(in.Meshes, mi)
	}
	return in, warnings
}

// setLocalDNS finds the local cluster DNS for the local block (dns mode);
// without one the local block is left out.
func setLocalDNS(in *Input, mi *MeshInput, ms *mesh.Mesh, o InputOptions) string {
	if err := checkName("local cluster name", mi.LocalCluster); err != nil {
		mi.LocalCluster = ""
		return fmt.Sprintf("mesh %s: no block for the local cluster: %v (set --cluster-name)", mesh.MeshDisplayName(ms.Name), err)
	}
	if o.Mode != ModeDNS || in.DNS.IsValid() {
		return ""
	}
	ip := o.DNS
	if !ip.IsValid() && ms.Local.ServiceCIDR.IsValid() {
		ip = mesh.DNSServiceIP(ms.Local.ServiceCIDR)
	}
	if !ip.IsValid() {
		mi.LocalCluster = ""
		return fmt.Sprintf("mesh %s: no block for the local cluster: its DNS IP is unknown (set --dns-service-ip, --service-cidr or the LocalLink's cidr)",
			mesh.MeshDisplayName(ms.Name))
	}
	in.DNS = netip.AddrPortFrom(ip, 53)
	return ""
}

// RemoteDNS is where the DNS of a remote cluster comes from, in this order:
// spec.dns (dnsIP, baseDomain), then what the peer advertised in its bridge
// handshake (status.advertised, written by the broker while the link is
// connected), then the defaults (spec.cidr + 10, cluster.local). Each
// field is taken on its own: a link with only spec.dns.baseDomain still
// gets the advertised DNS IP. dns.omitDNSPropagation is checked before
// and wins over both. An advertised value that does not parse is an
// error (the link is left out), not a silent fallback to the default.
func RemoteDNS(l *mesh.Link, kl *v1alpha1.KubeLink) (ip netip.Addr, domain string, err error) {
	ip, domain = l.DNS.IP, strings.ToLower(l.DNS.Domain)
	adv := kl.Status.Advertised
	if adv == nil {
		return ip, domain, nil
	}
	if !l.DNS.IPSet && adv.DNSIP != "" {
		a, perr := netip.ParseAddr(adv.DNSIP)
		if perr != nil || a.Zone() != "" {
			return ip, domain, fmt.Errorf("the advertised DNS IP %q is not a plain IP address", adv.DNSIP)
		}
		a = a.Unmap()
		// The peer says where its DNS is: only inside what the link
		// routes to it (its service CIDR, its egress) or at its cluster
		// address, so that a peer cannot have this cluster's queries for
		// its zone sent to an address elsewhere (a local service, the node
		// network, the instance metadata).
		if !inLinkNetworks(l, a) {
			return ip, domain, fmt.Errorf("the advertised DNS IP %s is outside the link's networks (%s): not forwarded there; set spec.dns.dnsIP if the peer's DNS really is elsewhere",
				a, linkNetworks(l))
		}
		ip = a
	}
	if !l.DNS.DomainSet && adv.ClusterDomain != "" {
		domain = strings.ToLower(strings.TrimSuffix(adv.ClusterDomain, "."))
	}
	return ip, domain, nil
}

// inLinkNetworks reports whether a is the link's cluster address or inside
// a network the link routes (service CIDR, egress): its AllowedIPs.
func inLinkNetworks(l *mesh.Link, a netip.Addr) bool {
	return slices.ContainsFunc(l.AllowedIPs(), func(p netip.Prefix) bool { return p.Contains(a) })
}

// linkNetworks lists the link's cluster address and routed networks for
// messages.
func linkNetworks(l *mesh.Link) string {
	parts := []string{"cluster address " + l.IP().String()}
	for _, p := range l.Destinations() {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, ", ")
}

func remoteCluster(l *mesh.Link, kl *v1alpha1.KubeLink, o InputOptions) (Cluster, error) {
	c := Cluster{Name: l.Name.Cluster, Domain: strings.ToLower(l.DNS.Domain), Context: l.Name.String()}
	if o.Mode == ModeDNS {
		ip, domain, err := RemoteDNS(l, kl)
		if err != nil {
			return c, err
		}
		if !ip.IsValid() {
			return c, fmt.Errorf("its DNS IP is unknown (set spec.dns.dnsIP or spec.cidr, or let the peer advertise it)")
		}
		c.Domain, c.DNS = domain, netip.AddrPortFrom(ip, 53)
		return c, nil
	}
	if l.APIAccess == nil {
		return c, fmt.Errorf("kubernetes mode needs spec.apiAccess (a Secret with %s and %s)", v1alpha1.SecretKeyToken, v1alpha1.SecretKeyCAData)
	}
	if err := o.CredentialErrors[l.Name.String()]; err != nil {
		return c, fmt.Errorf("apiAccess: %w", err)
	}
	cred, ok := o.Credentials[l.Name.String()]
	if !ok {
		return c, fmt.Errorf("apiAccess Secret %s not found", l.APIAccess.Name)
	}
	if !l.ServiceCIDR.IsValid() {
		return c, fmt.Errorf("kubernetes mode needs spec.cidr (the remote API server is reached at its service CIDR + 1)")
	}
	// The kubernetes Service of the remote cluster, routed through the mesh.
	c.APIServer = "https://" + mesh.ServiceIP(l.ServiceCIDR, 1).String()
	c.Token, c.CA = cred.Token, cred.CA
	return c, nil
}

// KubelinkDNSOffset is added to the local service CIDR to get the default
// ClusterIP of the kubelink DNS Service.
const KubelinkDNSOffset = 11

// DefaultKubelinkDNS is the service CIDR + 11 (invalid without a CIDR).
func DefaultKubelinkDNS(serviceCIDR netip.Prefix) netip.Addr {
	return mesh.ServiceIP(serviceCIDR, KubelinkDNSOffset)
}
