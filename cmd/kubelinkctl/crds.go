package main

import (
	"context"
	"fmt"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// upgradeCRDs brings the CRDs of the chart's crds/ directory into the
// cluster before an upgrade: helm installs them with a release but never
// touches them on an upgrade, so a new field (e.g. spec.presharedKeySecret)
// would be pruned by the API server as unknown. kubelink's own CRDs are
// created or replaced by the chart's; another API's (the Multi-Cluster
// Services CRDs, which another implementation may own) is only created
// when missing and otherwise left as it is.
func upgradeCRDs(ctx context.Context, g *globals, c *cluster, ch chartType) error {
	for _, f := range ch.CRDObjects() {
		var want apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(f.File.Data, &want); err != nil {
			return fmt.Errorf("the chart's %s: %w", f.Name, err)
		}
		var cur apiextensionsv1.CustomResourceDefinition
		err := c.c.Get(ctx, client.ObjectKey{Name: want.Name}, &cur)
		switch {
		case apierrors.IsNotFound(err):
			if err := c.c.Create(ctx, &want); err != nil {
				return fmt.Errorf("creating CRD %s: %w", want.Name, err)
			}
			g.progress("created CRD %s", want.Name)
		case err != nil:
			return fmt.Errorf("reading CRD %s: %w", want.Name, err)
		case !ownCRD(want.Spec.Group):
			g.progress("CRD %s exists: left as it is (not kubelink's own API)", want.Name)
		default:
			cur.Spec = want.Spec
			for k, v := range want.Annotations {
				if cur.Annotations == nil {
					cur.Annotations = map[string]string{}
				}
				cur.Annotations[k] = v
			}
			if err := c.c.Update(ctx, &cur); err != nil {
				return fmt.Errorf("updating CRD %s to the chart's: %w", want.Name, err)
			}
			g.progress("updated CRD %s to the chart's", want.Name)
		}
	}
	return nil
}

// ownCRD tells kubelink's API groups from others'.
func ownCRD(group string) bool {
	return group == v1alpha1.GroupName || strings.HasSuffix(group, "."+v1alpha1.GroupName)
}
