package mcs

import (
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/mcs-api/config/crd"
	"sigs.k8s.io/yaml"
)

// CRDs are the upstream ServiceExport and ServiceImport CRDs of the
// mcs-api module kubelink is built with (v1beta1 stored, v1alpha1 served
// too): the ones the chart installs (make generate copies them) and tests
// use. Each call returns fresh objects.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for i, data := range [][]byte{crd.ServiceExportCRD, crd.ServiceImportCRD} {
		c := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, c); err != nil {
			return nil, fmt.Errorf("the mcs-api CRD %d (ServiceExport, ServiceImport): %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
