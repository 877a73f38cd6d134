// Package crds carries the generated CustomResourceDefinitions of the kubelink
// API inside the binary, so that tests, the lab and installers use exactly the
// checked-in manifests instead of locating YAML files relative to a checkout.
package crds

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
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) { return Parse(files) }

// Parse reads every *.yaml at the root of fsys as one CRD, sorted by file
// name, which keeps installation order stable. Other embedded CRD sets
// (e.g. CoreDNSEntry) use it too.
func Parse(fsys fs.FS) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no CRD manifests embedded")
	}
	result := make([]*apiextensionsv1.CustomResourceDefinition, 0, len(names))
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
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
