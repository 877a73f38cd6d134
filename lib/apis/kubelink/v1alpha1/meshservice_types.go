package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// MeshService makes a local Service (or explicit endpoint addresses) reachable
// from the mesh: either on a dedicated virtual mesh address (meshAddress) or on
// ports of the local cluster address of a mesh (ports + port mappings).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,path=meshservices,singular=meshservice,shortName=msvc,categories=kubelink-all
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.meshAddress`
// +kubebuilder:printcolumn:name="Mesh",type=string,JSONPath=`.spec.mesh`,priority=1
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.spec.ports[*].port`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Endpoints",type=string,JSONPath=`.spec.endpoints[*].address`
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.status.targets`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshServiceSpec `json:"spec"`
	// +optional
	Status MeshServiceStatus `json:"status,omitempty"`
}

// MeshServiceSpec is the desired binding.
//
// +kubebuilder:validation:XValidation:rule="has(self.meshAddress) || (has(self.ports) && size(self.ports) > 0)",message="ports are required when meshAddress is not set: they say which ports of the shared cluster address are bound"
// +kubebuilder:validation:XValidation:rule="!has(self.meshAddress) || !has(self.mesh)",message="mesh selects the cluster address to bind and is only used without meshAddress"
// +kubebuilder:validation:XValidation:rule="has(self.service) || (has(self.endpoints) && size(self.endpoints) > 0)",message="either service or endpoints (with addresses) is required"
// +kubebuilder:validation:XValidation:rule="!has(self.service) || !has(self.endpoints) || (size(self.endpoints) <= 1 && self.endpoints.all(e, !has(e.address)))",message="with service, at most one endpoint without address is allowed (it only holds port mappings)"
// +kubebuilder:validation:XValidation:rule="has(self.service) || !has(self.endpoints) || self.endpoints.all(e, has(e.address))",message="without service, every endpoint needs an address"
// +kubebuilder:validation:XValidation:rule="has(self.service) || !has(self.endpoints) || self.endpoints.all(e, !has(e.portMappings) || e.portMappings.all(m, type(m.port) == int && type(m.targetPort) == int))",message="without service, port mappings must use port numbers (there are no port names to resolve)"
// +kubebuilder:validation:XValidation:rule="has(self.meshAddress) || !has(self.service) || (has(self.endpoints) && self.endpoints.exists(e, has(e.portMappings) && size(e.portMappings) > 0))",message="with service and without meshAddress, portMappings are required (they map the bound ports to Service ports)"
type MeshServiceSpec struct {
	// MeshAddress is a dedicated virtual mesh IP for the service.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="meshAddress must be an IP address"
	MeshAddress string `json:"meshAddress,omitempty"`

	// Mesh names the mesh whose local cluster address is bound when meshAddress
	// is empty (default: the default mesh).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Mesh string `json:"mesh,omitempty"`

	// Ports are the served ports.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Ports []ServicePort `json:"ports,omitempty"`

	// Service is a Service in the same namespace; its ClusterIP is the target.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service,omitempty"`

	// Endpoints are the targets: with a service, one entry without address that
	// only holds port mappings; without, one or more addresses (spread evenly).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Endpoints []ServiceEndpoint `json:"endpoints,omitempty"`
}

// ServicePort is a served port.
type ServicePort struct {
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`
	// Protocol is TCP (default) or UDP, case-insensitive.
	// +optional
	// +kubebuilder:validation:Pattern=`^([tT][cC][pP]|[uU][dD][pP])$`
	Protocol string `json:"protocol,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// ServiceEndpoint is one target of a MeshService.
type ServiceEndpoint struct {
	// Address of the endpoint (endpoint mode only).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="endpoint address must be an IP address"
	Address string `json:"address,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	PortMappings []PortMapping `json:"portMappings,omitempty"`
}

// PortMapping maps a served port to a target port.
type PortMapping struct {
	// +optional
	// +kubebuilder:validation:Pattern=`^([tT][cC][pP]|[uU][dD][pP])$`
	Protocol string `json:"protocol,omitempty"`
	// Port is a served port, by number or name.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$')",message="port must be 1-65535 or a port name"
	Port intstr.IntOrString `json:"port"`
	// TargetPort is the target, by number or (service mode) Service port name.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$')",message="targetPort must be 1-65535 or a port name"
	TargetPort intstr.IntOrString `json:"targetPort"`
}

// MeshServiceStatus is written by the broker.
type MeshServiceStatus struct {
	// State is Ok, Invalid, Stale (its address and port are bound by an
	// older MeshService) or Unsupported.
	// +optional
	State string `json:"state,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Targets lists where the bound address and ports lead, e.g.
	// "192.168.0.100:80/tcp -> 100.64.16.20:80" (written by the broker).
	// +optional
	Targets string `json:"targets,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MeshServiceList is a list of MeshServices.
//
// +kubebuilder:object:root=true
type MeshServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshService `json:"items"`
}
