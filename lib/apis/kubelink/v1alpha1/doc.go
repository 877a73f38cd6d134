// Package v1alpha1 holds the kubelink API: the cluster-scoped KubeLink and the
// namespaced MeshService, wire compatible with the original
// kubelink.mandelsoft.org/v1alpha1 resources. Everything added since then is an
// optional field.
//
// +kubebuilder:object:generate=true
// +groupName=kubelink.mandelsoft.org
package v1alpha1
