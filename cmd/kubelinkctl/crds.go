package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// ensureCRDs brings the CRDs of the chart's crds/ directory into the
// cluster before helm runs: helm installs them only when they are missing
// and never touches them on an upgrade, so an older CRD (an upgrade, or an
// install after `uninstall --keep-crds` or a plain `helm uninstall`) would
// stay, and the API server would prune a new field (e.g.
// spec.presharedKeySecret) as unknown. kubelink's own CRDs are created or
// replaced by the chart's (unless equal); another API's (the Multi-Cluster
// Services CRDs, which another implementation may own) is only created
// when missing and otherwise left as it is, with a warning where it does
// not serve the version kubelink uses.
func ensureCRDs(ctx context.Context, g *globals, c *cluster, ch chartType) error {
	for _, f := range ch.CRDObjects() {
		var want apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(f.File.Data, &want); err != nil {
			return fmt.Errorf("the chart's %s: %w", f.Name, err)
		}
		if err := ensureCRD(ctx, g, c, &want); err != nil {
			return err
		}
	}
	return nil
}

func ensureCRD(ctx context.Context, g *globals, c *cluster, want *apiextensionsv1.CustomResourceDefinition) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur apiextensionsv1.CustomResourceDefinition
		err := c.c.Get(ctx, client.ObjectKey{Name: want.Name}, &cur)
		switch {
		case apierrors.IsNotFound(err):
			if err := c.c.Create(ctx, want.DeepCopy()); err != nil {
				return fmt.Errorf("creating CRD %s: %w", want.Name, err)
			}
			g.progress("created CRD %s", want.Name)
			return nil
		case err != nil:
			return fmt.Errorf("reading CRD %s: %w", want.Name, err)
		case !ownCRD(want.Spec.Group):
			if !servesAll(&cur, want) {
				g.progress("warning: CRD %s exists and does not serve every version of the chart's (%v): left as it is (not kubelink's own API), but kubelink's controller for it may not start", want.Name, versionNames(want))
			}
			return nil
		case equality.Semantic.DeepEqual(cur.Spec, want.Spec):
			return nil
		}
		// A version the cluster has stored objects in must stay in the
		// spec, or the API server refuses the update.
		for _, v := range cur.Status.StoredVersions {
			if !slices.Contains(versionNames(want), v) {
				return fmt.Errorf("CRD %s has objects stored as %s, which the chart's CRD no longer has (%v): migrate them first (docs/install.md)", want.Name, v, versionNames(want))
			}
		}
		cur.Spec = want.Spec
		for k, v := range want.Annotations {
			if cur.Annotations == nil {
				cur.Annotations = map[string]string{}
			}
			cur.Annotations[k] = v
		}
		if err := c.c.Update(ctx, &cur); err != nil {
			if apierrors.IsConflict(err) {
				return err // retried
			}
			return fmt.Errorf("updating CRD %s to the chart's: %w", want.Name, err)
		}
		g.progress("updated CRD %s to the chart's", want.Name)
		return nil
	})
}

// ownCRD tells kubelink's API groups from others'.
func ownCRD(group string) bool {
	return group == v1alpha1.GroupName || strings.HasSuffix(group, "."+v1alpha1.GroupName)
}

func versionNames(crd *apiextensionsv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range crd.Spec.Versions {
		out = append(out, v.Name)
	}
	return out
}

// servesAll reports whether cur serves every version want has.
func servesAll(cur, want *apiextensionsv1.CustomResourceDefinition) bool {
	for _, w := range want.Spec.Versions {
		if !slices.ContainsFunc(cur.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == w.Name && v.Served }) {
			return false
		}
	}
	return true
}
