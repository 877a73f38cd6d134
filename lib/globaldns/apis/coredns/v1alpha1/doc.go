// Package v1alpha1 contains the CoreDNSEntry API (group
// coredns.mandelsoft.org, version v1alpha1), compatible with the original
// kubelink's CoreDNSEntry: DNS records for mesh-global names
// <name>.svc.global.<mesh-domain>, served by the kubelinkglobal CoreDNS
// plugin (lib/globaldns).
//
// +kubebuilder:object:generate=true
// +groupName=coredns.mandelsoft.org
package v1alpha1
