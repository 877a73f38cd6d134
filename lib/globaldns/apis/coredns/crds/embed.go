// Package crds carries the generated CustomResourceDefinition of the
// CoreDNSEntry API (coredns.mandelsoft.org/v1alpha1) inside the binary, so
// that tests, the lab and installers use exactly the checked-in manifest
// instead of locating YAML files relative to a checkout.
package crds

// Regenerate (deepcopy and CRD) after changing ../v1alpha1, from lib/:
//
//	controller-gen object:headerFile="" paths=./globaldns/apis/... \
//	  crd:crdVersions=v1,maxDescLen=400 output:crd:dir=./globaldns/apis/coredns/crds
//
// (The types live outside lib/apis so that `make generate`, whose single CRD
// output directory is lib/apis/kubelink/crds, does not pick them up.)

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
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

// CRDs parses every embedded manifest. Each call returns fresh objects, so
// callers may modify them (envtest, for example, fills in defaults).
// The result is sorted by file name, which keeps installation order stable.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no CRD manifests embedded")
	}
	result := make([]*apiextensionsv1.CustomResourceDefinition, 0, len(names))
	for _, name := range names {
		data, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		// UnmarshalStrict catches manifests that were hand-edited into fields
		// the CRD type does not know; they would silently vanish otherwise.
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
			return nil, fmt.Errorf("%s: not a named CustomResourceDefinition (kind %q)", name, crd.Kind)
		}
		result = append(result, crd)
	}
	return result, nil
}
