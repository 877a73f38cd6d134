package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Default DNS values of the original.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultMeshDomain    = "kubelink"
	// DNSServiceOffset is added to a service CIDR to get its cluster DNS IP.
	DNSServiceOffset = 10
)

// Mesh prefix lengths a clusterAddress may have: a shorter one would make
// the mesh cover the node, pod and service networks of its members (a /0
// mesh routes everything into the tunnel), a /32 leaves no room for a
// second member.
const (
	MinMeshBits = 16
	MaxMeshBits = 31
)

// Link is a validated KubeLink.
type Link struct {
	Name    LinkName
	Created time.Time
	// Address is the cluster address with the mesh prefix length;
	// Address.Masked() is the mesh CIDR.
	Address netip.Prefix
	// ServiceCIDR is spec.cidr (may be invalid/zero when unset).
	ServiceCIDR netip.Prefix
	Endpoint    Endpoint
	GatewayLink string
	// Egress is spec.egress merged, without the service CIDR.
	Egress  []netip.Prefix
	Ingress Ingress
	// PublicKey and PresharedKey are zero when unset.
	PublicKey    Key
	PresharedKey Key
	APIAccess    *v1alpha1.SecretReference
	DNS          LinkDNS

	// dests caches Destinations for a parsed link; Egress and ServiceCIDR
	// do not change after parsing.
	dests []netip.Prefix
}

// Ingress is the firewall of a link: traffic from the peer to Deny is dropped;
// when Allow is non-empty, traffic to anything outside Allow is dropped too.
type Ingress struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// IsSet reports whether the link restricts anything.
func (i Ingress) IsSet() bool { return len(i.Allow) > 0 || len(i.Deny) > 0 }

// LinkDNS is the effective DNS configuration of a link.
type LinkDNS struct {
	// Propagate is false when dns.omitDNSPropagation is true.
	Propagate bool
	// IP: foreign link: the cluster DNS of the peer; LocalLink: the mesh-global DNS.
	IP netip.Addr
	// Domain: foreign link: the peer's cluster domain; LocalLink: the mesh domain.
	Domain string
	// IPSet and DomainSet tell that IP and Domain come from the spec
	// (dnsIP, baseDomain), not from a default: a value the peer advertises
	// may replace a default, never what the user set.
	IPSet, DomainSet bool
}

// IsLocal reports whether the link is a LocalLink.
func (l *Link) IsLocal() bool { return l.Endpoint.Kind == EndpointLocal }

// IP is the cluster address without prefix.
func (l *Link) IP() netip.Addr { return l.Address.Addr() }

// MeshCIDR is the network of the link's cluster address.
func (l *Link) MeshCIDR() netip.Prefix { return l.Address.Masked() }

// Destinations are the networks reached through the link: its service CIDR and
// egress, merged.
// They are merged once, when the link is parsed (the model's conflict checks
// read them for every pair of links); a Link built by hand merges on every
// call. Callers must not modify the result.
func (l *Link) Destinations() []netip.Prefix {
	if l.dests != nil {
		return l.dests
	}
	return l.mergeDestinations()
}

func (l *Link) mergeDestinations() []netip.Prefix {
	d := append([]netip.Prefix(nil), l.Egress...)
	if l.ServiceCIDR.IsValid() {
		d = append(d, l.ServiceCIDR)
	}
	return mergePrefixes(d)
}

// ParseOptions carry what parsing needs from the run mode.
type ParseOptions struct {
	// DefaultPort is used for endpoints without a port (WireGuard 8777).
	DefaultPort uint16
	// Reserved are the local cluster's own networks (ReservedNetworks): a
	// foreign link whose cidr or egress overlaps one is Stale, or its routes
	// would send the cluster's own traffic into the tunnel.
	Reserved []NamedPrefix
	// SecretKey reads the key a link's presharedKeySecret names (the
	// broker: from its key Secret); its error says what is wrong and how
	// to fix it. Nil leaves the preshared key of such links unset: the
	// router and meshdns have no use for it.
	SecretKey func(ref v1alpha1.SecretKeySelector) (string, error)
}

// NamedPrefix is a network with what it is, for messages.
type NamedPrefix struct {
	Name   string
	Prefix netip.Prefix
}

// ReservedNetworks are the networks no peer may claim: the local node and
// pod networks (those given; a zero prefix is left out), and the loopback
// and link-local networks (instance metadata at 169.254.169.254).
func ReservedNetworks(nodeCIDR, podCIDR netip.Prefix) []NamedPrefix {
	var r []NamedPrefix
	if nodeCIDR.IsValid() {
		r = append(r, NamedPrefix{"the node network", nodeCIDR})
	}
	if podCIDR.IsValid() {
		r = append(r, NamedPrefix{"the pod network", podCIDR})
	}
	return append(r, NamedPrefix{"the loopback network", netip.MustParsePrefix("127.0.0.0/8")},
		NamedPrefix{"the link-local network", netip.MustParsePrefix("169.254.0.0/16")})
}

// ParseLink validates a KubeLink on its own (without looking at other links)
// and returns every problem found, each phrased so the user knows what to fix.
// The result is Invalid when err != nil.
func ParseLink(kl *v1alpha1.KubeLink, opts ParseOptions) (*Link, error) {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("spec.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	s := &kl.Spec
	l := &Link{Name: ParseLinkName(kl.Name), Created: kl.CreationTimestamp.Time, GatewayLink: s.GatewayLink, APIAccess: s.APIAccess}
	if l.Name.Cluster == "" {
		errs = append(errs, fmt.Errorf("metadata.name: %q has no cluster name after \"--\"", kl.Name))
	}
	if l.Name.Mesh == ReservedMeshName {
		// kubelink://default/<cluster> is the identity of <cluster> in the
		// default mesh: a mesh of that name would accept those members'
		// certificates as its own.
		errs = append(errs, fmt.Errorf("metadata.name: the mesh name %q is reserved (the default mesh's identities are kubelink://%s/<cluster>): name the link %q for the default mesh, or use another mesh name",
			ReservedMeshName, ReservedMeshName, l.Name.Cluster))
	}

	if s.ClusterAddress == "" {
		add("clusterAddress", "is required: the peer's address in the mesh with the mesh prefix length, e.g. 192.168.0.12/24")
	} else if p, err := netip.ParsePrefix(s.ClusterAddress); err != nil {
		add("clusterAddress", "%q must be an IP address with the mesh prefix length, e.g. 192.168.0.12/24", s.ClusterAddress)
	} else if !p.Addr().Is4() {
		add("clusterAddress", "%q is not IPv4; mesh addresses are IPv4 only (dual stack is not supported yet)", s.ClusterAddress)
	} else if p.Bits() < MinMeshBits || p.Bits() > MaxMeshBits {
		add("clusterAddress", "%q: the mesh prefix length must be /%d to /%d (a larger mesh would cover the networks of its members, a /32 has room for one member only)", s.ClusterAddress, MinMeshBits, MaxMeshBits)
	} else if p.Bits() < p.Addr().BitLen()-1 && p == p.Masked() {
		add("clusterAddress", "%q is the network address of the mesh; use a host address inside it", s.ClusterAddress)
	} else {
		l.Address = p
	}

	if s.CIDR != "" {
		p, err := netip.ParsePrefix(s.CIDR)
		switch {
		case err != nil:
			add("cidr", "%q is not a CIDR, e.g. 100.64.16.0/20", s.CIDR)
		case !p.Addr().Is4():
			add("cidr", "%q is not IPv4; service networks are IPv4 only (dual stack is not supported yet)", s.CIDR)
		case p != p.Masked():
			add("cidr", "%q has host bits set; did you mean %s?", s.CIDR, p.Masked())
		default:
			l.ServiceCIDR = p
		}
	}

	ep, err := ParseEndpoint(s.Endpoint, opts.DefaultPort)
	if err != nil {
		add("endpoint", "%v", err)
	}
	l.Endpoint = ep
	if ep.Kind == EndpointNone && s.GatewayLink == "" && err == nil {
		add("endpoint", "is required (host[:port], LocalLink or Inbound) unless gatewayLink is set")
	}

	for _, e := range s.Egress {
		p, err := parsePrefixOrAddr(e)
		if err != nil {
			add("egress", "%v", err)
			continue
		}
		if !p.Addr().Is4() {
			add("egress", "%q is not IPv4; egress networks are IPv4 only (dual stack is not supported yet)", e)
			continue
		}
		l.Egress = append(l.Egress, p)
	}
	l.Egress = mergePrefixes(l.Egress)
	l.Ingress, errs = parseIngress(s.Ingress, errs)

	if s.PublicKey != "" {
		if l.PublicKey, err = ParseKey(s.PublicKey); err != nil {
			add("publicKey", "%v", err)
		}
	}
	if s.PresharedKey != "" {
		if l.PresharedKey, err = ParseKey(s.PresharedKey); err != nil {
			add("presharedKey", "%v", err)
		}
		if s.PublicKey == "" {
			add("presharedKey", "needs publicKey")
		}
	}
	if ref := s.PresharedKeySecret; ref != nil {
		switch {
		case s.PresharedKey != "":
			add("presharedKeySecret", "set presharedKeySecret or the deprecated presharedKey, not both")
		case s.PublicKey == "":
			add("presharedKeySecret", "needs publicKey")
		case ref.Key == "":
			add("presharedKeySecret.key", "is required: the key of the broker's key Secret that holds the preshared key")
		case opts.SecretKey != nil:
			v, err := opts.SecretKey(*ref)
			if err == nil {
				l.PresharedKey, err = ParseKey(strings.TrimSpace(v))
			}
			if err != nil {
				add("presharedKeySecret", "%v", err)
			}
		}
	}

	if l.IsLocal() {
		if len(s.Egress) > 0 {
			add("egress", "is not allowed on a LocalLink (it describes the local cluster)")
		}
		if s.GatewayLink != "" {
			add("gatewayLink", "is not allowed on a LocalLink")
		}
		if s.PublicKey != "" || s.PresharedKey != "" || s.PresharedKeySecret != nil {
			add("publicKey", "publicKey and presharedKey are not allowed on a LocalLink (the local key comes from the broker's secret)")
		}
	}
	if s.GatewayLink != "" && s.GatewayLink == kl.Name {
		add("gatewayLink", "a link cannot be its own gateway link")
	}
	l.DNS, errs = parseDNS(l, s.DNS, errs)
	l.dests = l.mergeDestinations()
	return l, errors.Join(errs...)
}

func parseIngress(entries []string, errs []error) (Ingress, []error) {
	var in Ingress
	for _, e := range entries {
		deny := len(e) > 0 && e[0] == '!'
		v := e
		if deny {
			v = e[1:]
		}
		p, err := parsePrefixOrAddr(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.ingress: %v (entries are IPs or CIDRs, '!' denies)", err))
			continue
		}
		if !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("spec.ingress: %q is not IPv4; ingress entries are IPv4 only (dual stack is not supported yet)", e))
			continue
		}
		if deny {
			in.Deny = append(in.Deny, p)
		} else {
			in.Allow = append(in.Allow, p)
		}
	}
	in.Allow, in.Deny = mergePrefixes(in.Allow), mergePrefixes(in.Deny)
	return in, errs
}

// parseDNS applies the DNS defaults. Unlike the original, a missing DNS IP or
// base domain is not an error: the link simply does not take part in DNS
// propagation (see DNSPropagated), so links work with DNS switched off.
func parseDNS(l *Link, d *v1alpha1.KubeLinkDNS, errs []error) (LinkDNS, []error) {
	out := LinkDNS{Propagate: true}
	if d == nil {
		d = &v1alpha1.KubeLinkDNS{}
	}
	if d.OmitDNSPropagation != nil && *d.OmitDNSPropagation {
		out.Propagate = false
	}
	if d.DNSIP != "" {
		a, err := netip.ParseAddr(d.DNSIP)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.dns.dnsIP: %q is not an IP address", d.DNSIP))
		} else if !a.Is4() {
			errs = append(errs, fmt.Errorf("spec.dns.dnsIP: %q is not IPv4; it is reached through the mesh, which is IPv4 only", d.DNSIP))
		}
		out.IP, out.IPSet = a, true
	} else if !l.IsLocal() && l.ServiceCIDR.IsValid() {
		out.IP = DNSServiceIP(l.ServiceCIDR)
	}
	out.Domain, out.DomainSet = d.BaseDomain, d.BaseDomain != ""
	if d.BaseDomain != "" && (len(d.BaseDomain) > 253 || !dnsNameRE.MatchString(d.BaseDomain)) {
		errs = append(errs, fmt.Errorf("spec.dns.baseDomain: %q is not a DNS domain", d.BaseDomain))
	}
	if out.Domain == "" {
		out.Domain = DefaultClusterDomain
		if l.IsLocal() {
			out.Domain = DefaultMeshDomain
		}
	}
	return out, errs
}

// ServiceIP is the n-th address of a service CIDR (the network address is
// the 0th; invalid without a CIDR): + 1 the kubernetes Service, + 10 the
// cluster DNS (DNSServiceIP), + 11 the kubelink DNS. The one definition of
// "service CIDR + N" for the broker, meshdns and the model.
func ServiceIP(cidr netip.Prefix, n int) netip.Addr {
	if !cidr.IsValid() {
		return netip.Addr{}
	}
	a := cidr.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// DNSServiceIP is the cluster DNS IP of a service CIDR (+ DNSServiceOffset).
func DNSServiceIP(cidr netip.Prefix) netip.Addr { return ServiceIP(cidr, DNSServiceOffset) }

// DNSPropagated reports whether the link can take part in DNS propagation: it
// is not opted out and knows the peer's DNS IP.
func (l *Link) DNSPropagated() bool { return l.DNS.Propagate && (l.IsLocal() || l.DNS.IP.IsValid()) }
