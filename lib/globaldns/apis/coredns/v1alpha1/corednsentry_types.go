package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// States of a CoreDNSEntry as set by the kubelinkglobal plugin.
const (
	StateOk      = "Ok"
	StateInvalid = "Invalid"
)

// CoreDNSEntry declares DNS records for one or more names, served by the
// kubelinkglobal CoreDNS plugin (mesh-global names
// <name>.svc.global.<mesh-domain>). Compatible with the original kubelink's
// CoreDNSEntry.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=cdnse,path=corednsentries,singular=corednsentry
// +kubebuilder:printcolumn:name="DNSNames",type=string,JSONPath=".spec.dnsNames"
// +kubebuilder:printcolumn:name="A",type=string,JSONPath=".spec.A"
// +kubebuilder:printcolumn:name="CNAME",type=string,JSONPath=".spec.CNAME"
// +kubebuilder:printcolumn:name="SRV",type=string,JSONPath=".spec.SRV.service"
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=".status.state"
type CoreDNSEntry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec CoreDNSEntrySpec `json:"spec"`
	// +optional
	Status CoreDNSEntryStatus `json:"status,omitempty"`
}

// CoreDNSEntrySpec holds the records of the entry's names.
type CoreDNSEntrySpec struct {
	// DNSNames are the fully qualified names the records are served for.
	// +kubebuilder:validation:MinItems=1
	DNSNames []string `json:"dnsNames"`
	// A records (IPv4 addresses).
	// +optional
	A []string `json:"A,omitempty"`
	// AAAA records (IPv6 addresses).
	// +optional
	AAAA []string `json:"AAAA,omitempty"`
	// CNAME is the canonical name the names are an alias of.
	// +optional
	CNAME string `json:"CNAME,omitempty"`
	// TXT records.
	// +optional
	TXT []string `json:"TXT,omitempty"`
	// SRV records of a service.
	// +optional
	SRV *SRVRecords `json:"SRV,omitempty"`
}

// SRVRecords are the SRV records of one service.
type SRVRecords struct {
	// Service is the service label, e.g. _http._tcp (informational; the
	// records are served for the entry's names).
	// +optional
	Service string `json:"service,omitempty"`
	// Records are the targets.
	Records []SRVRecord `json:"records"`
}

// SRVRecord is one SRV target.
type SRVRecord struct {
	// Host is the target host name.
	Host string `json:"host"`
	// Port is the target port.
	Port int32 `json:"port"`
	// Protocol is the transport protocol, e.g. tcp or udp.
	// +optional
	Protocol string `json:"protocol,omitempty"`
	// Priority of the target (default 0).
	// +optional
	Priority *int32 `json:"priority,omitempty"`
	// Weight of the target (default 0).
	// +optional
	Weight *int32 `json:"weight,omitempty"`
}

// CoreDNSEntryStatus is set by the serving plugin.
type CoreDNSEntryStatus struct {
	// State is Ok or Invalid.
	// +optional
	State string `json:"state,omitempty"`
	// Message explains an Invalid state.
	// +optional
	Message string `json:"message,omitempty"`
}

// CoreDNSEntryList is a list of CoreDNSEntry.
//
// +kubebuilder:object:root=true
type CoreDNSEntryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CoreDNSEntry `json:"items"`
}
