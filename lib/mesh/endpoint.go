package mesh

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// EndpointKind says how a peer is reached.
type EndpointKind int

const (
	// EndpointNone: no endpoint (traffic goes through a gatewayLink).
	EndpointNone EndpointKind = iota
	// EndpointHost: dial Host:Port.
	EndpointHost
	// EndpointLocal: the link is a LocalLink.
	EndpointLocal
	// EndpointInbound: the peer dials us.
	EndpointInbound
)

// Endpoint is a parsed spec.endpoint.
type Endpoint struct {
	Kind EndpointKind
	// Host is a DNS name or an IP literal (without brackets).
	Host string
	// Port is the given port or the default port of the run mode.
	Port uint16
}

// String renders host:port with IPv6 literals bracketed.
func (e Endpoint) String() string {
	switch e.Kind {
	case EndpointLocal:
		return v1alpha1.EndpointLocalLink
	case EndpointInbound:
		return v1alpha1.EndpointInbound
	case EndpointNone:
		return ""
	}
	if a, err := netip.ParseAddr(e.Host); err == nil {
		return netip.AddrPortFrom(a, e.Port).String()
	}
	return e.Host + ":" + strconv.Itoa(int(e.Port))
}

// Addr returns the endpoint as an address when Host is an IP literal.
func (e Endpoint) Addr() (netip.AddrPort, bool) {
	a, err := netip.ParseAddr(e.Host)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, e.Port), true
}

var dnsNameRE = regexp.MustCompile(`^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?\.?$`)

// ParseEndpoint parses "host[:port]", "[v6]:port", LocalLink or Inbound.
// defaultPort is used when no port is given. It accepts IPv6 literals, which
// the original split on ':' and so could not handle.
func ParseEndpoint(s string, defaultPort uint16) (Endpoint, error) {
	switch s {
	case "":
		return Endpoint{Kind: EndpointNone}, nil
	case v1alpha1.EndpointLocalLink:
		return Endpoint{Kind: EndpointLocal}, nil
	case v1alpha1.EndpointInbound:
		return Endpoint{Kind: EndpointInbound}, nil
	}
	host, port := s, defaultPort
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return Endpoint{}, fmt.Errorf("%q: missing ']' after IPv6 address", s)
		}
		host = s[1:end]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return Endpoint{}, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
		}
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return Endpoint{}, fmt.Errorf("%q: expected ':<port>' after ']'", s)
			}
			p, err := parsePort(rest[1:])
			if err != nil {
				return Endpoint{}, fmt.Errorf("%q: %w", s, err)
			}
			port = p
		}
		return Endpoint{Kind: EndpointHost, Host: host, Port: port}, nil
	}
	if strings.Count(s, ":") > 1 {
		return Endpoint{}, fmt.Errorf("%q: IPv6 addresses must be written in brackets, e.g. [2001:db8::1]:8777", s)
	}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		p, err := parsePort(s[i+1:])
		if err != nil {
			return Endpoint{}, fmt.Errorf("%q: %w", s, err)
		}
		host, port = s[:i], p
	}
	if isDigitsAndDots(host) {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is4() {
			return Endpoint{}, fmt.Errorf("%q: %q is not a valid IPv4 address", s, host)
		}
		return Endpoint{Kind: EndpointHost, Host: host, Port: port}, nil
	}
	if len(host) > 253 || !dnsNameRE.MatchString(host) {
		return Endpoint{}, fmt.Errorf("%q: %q is neither a DNS name nor an IP address", s, host)
	}
	return Endpoint{Kind: EndpointHost, Host: strings.TrimSuffix(host, "."), Port: port}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q must be a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

func isDigitsAndDots(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return s != ""
}
