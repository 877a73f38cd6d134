// Package crds carries the generated CustomResourceDefinition of the
// CoreDNSEntry API (coredns.mandelsoft.org/v1alpha1) inside the binary, so
// that tests, the lab and installers use exactly the checked-in manifest
// instead of locating YAML files relative to a checkout.
package crds

// `make generate` regenerates it (deepcopy and CRD) from ../v1alpha1. The
// types live outside lib/apis because that run writes every CRD under
// lib/apis into lib/apis/kubelink/crds.

import (
	"embed"
	"io/fs"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	kubelinkcrds "github.com/kubelink/kubelink/lib/apis/kubelink/crds"
)

// files holds the controller-gen output of this directory. The pattern only
// matches *.yaml so that this Go file is not part of the manifests.
//
//go:embed *.yaml
var files embed.FS

// FS returns the raw manifests (one CRD per *.yaml file at the root).
func FS() fs.FS {
	return files
}

// CRDs parses the embedded manifest; each call returns fresh objects.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) { return kubelinkcrds.Parse(files) }
