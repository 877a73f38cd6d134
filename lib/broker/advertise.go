package broker

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
)

// clusterDomainRE is a lower-case DNS name without a trailing dot, the form
// the mesh DNS renders into the Corefile and the CRD accepts in
// status.advertised.clusterDomain.
var clusterDomainRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// CheckClusterDomain accepts a lower-case DNS name (e.g. cluster.local).
func CheckClusterDomain(d string) error {
	if len(d) > 253 || !clusterDomainRE.MatchString(d) {
		return fmt.Errorf("%q is not a lower-case DNS name", d)
	}
	return nil
}

// LocalHello is what the bridge of this cluster announces in mesh ms: its
// cluster address, its service CIDR (the LocalLink's, else
// --service-cidr), the advertised port (--advertised-port, else
// --bridge-port) and, with --dns-advertisement, the DNS extension: the
// cluster domain and the DNS Service IP (--dns-service-ip, else the
// service CIDR + 10; absent when neither is known).
func LocalHello(cfg *Config, ms *mesh.Mesh) bridge.Hello {
	h := bridge.Hello{MinVersion: bridge.Version, MaxVersion: bridge.Version, ClusterAddress: ms.Local.Address}
	switch {
	case ms.Local.ServiceCIDR.IsValid():
		h.ServiceCIDR = ms.Local.ServiceCIDR.Masked()
	case cfg.ServiceCIDR.IsValid():
		h.ServiceCIDR = cfg.ServiceCIDR.Masked()
	}
	h.Port = uint16(cfg.BridgePort)
	if cfg.AdvertisedPort != 0 {
		h.Port = uint16(cfg.AdvertisedPort)
	}
	if cfg.DNSAdvertisement {
		d := &bridge.DNSInfo{ClusterDomain: cfg.ClusterDomain, DNSIP: cfg.DNSServiceIP}
		if !d.DNSIP.IsValid() && h.ServiceCIDR.IsValid() {
			d.DNSIP = mesh.DNSServiceIP(h.ServiceCIDR)
		}
		h.DNS = d
	}
	return h
}

// Advertised is the status.advertised of a link from its peer's HELLO:
// the advertised port and the DNS extension. A cluster domain that is not
// a DNS name, and a DNS IP that is unspecified, multicast or
// link-local, are left out (they come from the peer and end up in the
// Corefile); the domain is lower-cased without a trailing dot. nil when
// nothing usable was announced.
func Advertised(h bridge.Hello) *v1alpha1.AdvertisedInfo {
	a := &v1alpha1.AdvertisedInfo{Port: int32(h.Port)}
	if d := h.DNS; d != nil {
		if dom := strings.ToLower(strings.TrimSuffix(d.ClusterDomain, ".")); CheckClusterDomain(dom) == nil {
			a.ClusterDomain = dom
		}
		if usableDNSIP(d.DNSIP) {
			a.DNSIP = d.DNSIP.String()
		}
	}
	if *a == (v1alpha1.AdvertisedInfo{}) {
		return nil
	}
	return a
}

func usableDNSIP(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLinkLocalUnicast() && !ip.Is4In6() && ip.Zone() == ""
}
