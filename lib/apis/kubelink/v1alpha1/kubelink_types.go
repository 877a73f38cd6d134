package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubeLink describes one member of a mesh. A link whose endpoint is
// "LocalLink" defines the local cluster's own membership (address and CIDR of
// the mesh); every other link describes a remote cluster. The object name is
// "<mesh>--<cluster>"; without "--" the link belongs to the default mesh.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,path=kubelinks,singular=kubelink,shortName=klink,categories=kubelink-all
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.clusterAddress`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.spec.endpoint`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.status.gateway`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="RTT",type=string,JSONPath=`.status.health.rtt.last`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec.gatewayLink) || self.spec.gatewayLink != self.metadata.name",message="spec.gatewayLink: a link cannot be its own gateway link"
type KubeLink struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec KubeLinkSpec `json:"spec"`
	// +optional
	Status KubeLinkStatus `json:"status,omitempty"`
}

// KubeLinkSpec is the desired link. Field names are those of the original API.
//
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || self.endpoint != 'LocalLink' || !has(self.egress) || size(self.egress) == 0",message="egress is not allowed on a LocalLink (it describes the local cluster)"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || self.endpoint != 'LocalLink' || !has(self.gatewayLink)",message="gatewayLink is not allowed on a LocalLink"
// +kubebuilder:validation:XValidation:rule="has(self.endpoint) || has(self.gatewayLink)",message="endpoint is required (a host[:port], LocalLink or Inbound) unless gatewayLink is set"
// +kubebuilder:validation:XValidation:rule="!has(self.presharedKey) || has(self.publicKey)",message="presharedKey needs publicKey"
// +kubebuilder:validation:XValidation:rule="!has(self.presharedKeySecret) || has(self.publicKey)",message="presharedKeySecret needs publicKey"
// +kubebuilder:validation:XValidation:rule="!has(self.presharedKey) || !has(self.presharedKeySecret)",message="set presharedKeySecret or the deprecated presharedKey, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || self.endpoint != 'LocalLink' || (!has(self.publicKey) && !has(self.presharedKey) && !has(self.presharedKeySecret))",message="publicKey and presharedKey are not allowed on a LocalLink (the local key comes from the broker's secret)"
type KubeLinkSpec struct {
	// CIDR is the service CIDR of the remote cluster (on a LocalLink: of the
	// local cluster). It is routed through the link.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",message="cidr must be a network in CIDR notation with no host bits set, e.g. 100.64.16.0/20"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",message="cidr must be IPv4 (dual stack is not supported yet)"
	CIDR string `json:"cidr,omitempty"`

	// ClusterAddress is the address of the cluster in the mesh, with the mesh's
	// prefix length (e.g. 192.168.0.12/24); the network part is the mesh CIDR.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="clusterAddress must be an IP address with the mesh prefix length, e.g. 192.168.0.12/24"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).prefixLength() >= (cidr(self).ip().family() == 4 ? 31 : 127) || !(cidr(self) == cidr(self).masked())",message="clusterAddress must be a host address, not the network address of the mesh"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",message="clusterAddress must be IPv4 (dual stack is not supported yet)"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() != 4 || (cidr(self).prefixLength() >= 16 && cidr(self).prefixLength() <= 31)",message="clusterAddress: the mesh prefix length must be /16 to /31, e.g. 192.168.0.12/24"
	ClusterAddress string `json:"clusterAddress"`

	// GatewayLink names another link that carries this link's traffic (transit).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	GatewayLink string `json:"gatewayLink,omitempty"`

	// Ingress is the firewall for traffic coming from this peer: plain entries
	// are allowed destinations (IP or CIDR), entries starting with "!" are denied
	// destinations. On a LocalLink it applies to the whole mesh.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self.startsWith('!') ? self.substring(1) : self) || (isCIDR(self.startsWith('!') ? self.substring(1) : self) && cidr(self.startsWith('!') ? self.substring(1) : self) == cidr(self.startsWith('!') ? self.substring(1) : self).masked())",message="ingress entries must be an IP or a network CIDR (no host bits), optionally prefixed with '!' to deny it"
	// +kubebuilder:validation:items:XValidation:rule="!self.contains(':')",message="ingress entries must be IPv4 (dual stack is not supported yet)"
	Ingress []string `json:"ingress,omitempty"`

	// Egress lists extra destinations (IP or CIDR) reachable through this peer.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || (isCIDR(self) && cidr(self) == cidr(self).masked())",message="egress entries must be an IP or a network CIDR with no host bits set, e.g. 10.10.0.0/16"
	// +kubebuilder:validation:items:XValidation:rule="!self.contains(':')",message="egress entries must be IPv4 (dual stack is not supported yet)"
	Egress []string `json:"egress,omitempty"`

	// Endpoint is host[:port] of the remote broker (DNS name, IPv4 address or
	// bracketed IPv6 address), or one of the special values LocalLink and Inbound.
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:XValidation:rule=`self == 'LocalLink' || self == 'Inbound' || (self.startsWith('[') ? (self.matches('^[[][0-9a-fA-F:.]+[]](:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$') && isIP(self.substring(1, self.indexOf(']'))) && ip(self.substring(1, self.indexOf(']'))).family() == 6) : (self.matches('^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?[.])*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?[.]?(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$') && (!self.matches('^[0-9.]+(:[0-9]+)?$') || isIP(self.split(':')[0]))))`,message="endpoint must be host[:port] (a DNS name, an IPv4 address or a bracketed IPv6 address, port 1-65535), LocalLink or Inbound"
	Endpoint string `json:"endpoint,omitempty"`

	// PublicKey is the peer's WireGuard public key (base64, 32 bytes).
	// +optional
	// +kubebuilder:validation:MaxLength=44
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$')`,message="publicKey must be a WireGuard key: 32 bytes in base64 (44 characters ending in '=')"
	PublicKey string `json:"publicKey,omitempty"`

	// PresharedKey is an optional WireGuard preshared key (base64, 32 bytes).
	// Links that share a public key must use the same preshared key.
	// +optional
	// +kubebuilder:validation:MaxLength=44
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$')`,message="presharedKey must be a WireGuard key: 32 bytes in base64 (44 characters ending in '=')"
	PresharedKey string `json:"presharedKey,omitempty"`

	// PresharedKeySecret names the key of the broker's key Secret (the one
	// holding its WireGuard private key, "wireguard" by default) that holds
	// this link's WireGuard preshared key (base64, 32 bytes). It replaces
	// PresharedKey, which puts the key where everyone who may read
	// KubeLinks reads it; PresharedKey is still read, with a warning Event.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!(self.key in ['WireguardPrivateKey', 'WireGuardPrivateKey', 'WireguardPublicKey'])",message="presharedKeySecret.key names the broker's own WireGuard key, not a preshared key; store the preshared key under another key (e.g. psk-<link>)"
	PresharedKeySecret *SecretKeySelector `json:"presharedKeySecret,omitempty"`

	// APIAccess names a Secret (keys "token" and "certificate-authority-data")
	// used to reach the remote API server for DNS propagation in kubernetes mode.
	// +optional
	APIAccess *SecretReference `json:"apiAccess,omitempty"`

	// DNS configures DNS propagation for this link or, on a LocalLink, the mesh.
	// +optional
	DNS *KubeLinkDNS `json:"dns,omitempty"`
}

// SecretReference names a Secret. The namespace defaults to the namespace of
// the kubelink components.
type SecretReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// SecretKeySelector names a key of a Secret in the namespace of the kubelink
// components.
type SecretKeySelector struct {
	// Name of the Secret: the broker reads preshared keys only from its own
	// key Secret, so it may be left out; another name makes the link
	// Invalid.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`
	// Key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// KubeLinkDNS is the DNS part of a link.
type KubeLinkDNS struct {
	// OmitDNSPropagation: true means this link (on a LocalLink: the whole mesh)
	// takes no part in DNS propagation.
	// +optional
	OmitDNSPropagation *bool `json:"omitDNSPropagation,omitempty"`

	// DNSIP is, on a foreign link, the IP of that cluster's DNS service (default:
	// its service CIDR + 10); on a LocalLink, the IP of the mesh-global DNS.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="dns.dnsIP must be an IP address"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).family() == 4",message="dns.dnsIP must be IPv4: it is reached through the mesh"
	DNSIP string `json:"dnsIP,omitempty"`

	// BaseDomain is, on a foreign link, that cluster's domain (default
	// cluster.local); on a LocalLink, the mesh domain (default kubelink).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?[.])*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$`
	BaseDomain string `json:"baseDomain,omitempty"`
}

// KubeLinkStatus is written by the broker (the one writer of link status).
type KubeLinkStatus struct {
	// State is one of Invalid, Stale, Error, Idle, Up, Down, Deleting.
	// +optional
	State string `json:"state,omitempty"`
	// Message explains the state in words a user can act on.
	// +optional
	Message string `json:"message,omitempty"`
	// Gateway is the node IP of the serving broker.
	// +optional
	Gateway string `json:"gateway,omitempty"`
	// GatewayPod is the pod IP of the serving broker when it runs in pod
	// mode: the router of the gateway node routes the mesh to it.
	// +optional
	GatewayPod string `json:"gatewayPod,omitempty"`
	// PublicKey is, on a LocalLink in WireGuard mode, the local public key to
	// hand to the peers.
	// +optional
	PublicKey string `json:"publicKey,omitempty"`
	// DataPlane names what carries the link: wireguard-kernel,
	// wireguard-userspace, bridge or none.
	// +optional
	DataPlane string `json:"dataPlane,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Valid, Connected, Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Health holds figures measured through the tunnel.
	// +optional
	Health *LinkHealth `json:"health,omitempty"`
	// Advertised is what the peer announced about itself in its bridge
	// handshake (bridge mode), present while the link is connected. The
	// mesh DNS uses it where spec.dns does not say otherwise.
	// +optional
	Advertised *AdvertisedInfo `json:"advertised,omitempty"`
}

// AdvertisedInfo is what a peer announced in its bridge handshake (HELLO).
type AdvertisedInfo struct {
	// ClusterDomain is the peer's cluster domain, e.g. cluster.local (sent
	// with DNS advertisement on).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// DNSIP is the IP of the peer's cluster DNS Service (sent with DNS
	// advertisement on).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="advertised dnsIP must be an IP address"
	DNSIP string `json:"dnsIP,omitempty"`
	// Port is the port the peer's bridge is reachable on from other members
	// (its --advertised-port).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
}

// LinkHealth holds figures measured through the tunnel.
type LinkHealth struct {
	// RTT of the health probe between the cluster addresses.
	// +optional
	RTT *RTTStats `json:"rtt,omitempty"`
	// LastHandshake is the last WireGuard handshake or bridge hello.
	// +optional
	LastHandshake *metav1.Time `json:"lastHandshake,omitempty"`
	// RxBytes and TxBytes count the bytes through the tunnel.
	// +optional
	RxBytes int64 `json:"rxBytes,omitempty"`
	// +optional
	TxBytes int64 `json:"txBytes,omitempty"`
}

// RTTStats summarises probe round-trip times.
type RTTStats struct {
	// +optional
	Last *metav1.Duration `json:"last,omitempty"`
	// +optional
	Min *metav1.Duration `json:"min,omitempty"`
	// +optional
	Avg *metav1.Duration `json:"avg,omitempty"`
	// +optional
	Max *metav1.Duration `json:"max,omitempty"`
}

// KubeLinkList is a list of KubeLinks.
//
// +kubebuilder:object:root=true
type KubeLinkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubeLink `json:"items"`
}
