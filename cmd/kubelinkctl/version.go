package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"

	"github.com/kubelink/kubelink/lib/buildinfo"
)

type versionInfo struct {
	Client    string `json:"client"`
	Commit    string `json:"commit,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	Installed string `json:"installed,omitempty"`
	Chart     string `json:"chart,omitempty"`
	Revision  int    `json:"revision,omitempty"`
	Error     string `json:"error,omitempty"`
}

func newVersion(g *globals) *cobra.Command {
	client := false
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the client version and the version installed in the cluster",
		Example: fmt.Sprintf("  %[1]s version --context prod-eu\n  %[1]s version --client -o json", commandName()),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Client: buildinfo.Version, Commit: buildinfo.Commit}
			var err error
			if !client {
				err = installedVersion(cmd.Context(), g, &v)
				if err != nil {
					v.Error = err.Error()
				}
			}
			if perr := printObject(g, v, func() {
				fmt.Fprintf(g.out, "client:    %s\n", v.Client)
				switch {
				case client:
				case err != nil:
				case v.Installed == "":
					fmt.Fprintf(g.out, "installed: none in namespace %s of %q\n", *g.kube.Namespace, v.Cluster)
				default:
					fmt.Fprintf(g.out, "installed: %s (chart %s, revision %d) in %q\n", v.Installed, v.Chart, v.Revision, v.Cluster)
				}
			}); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&client, "client", false, "print only the client version (no cluster needed)")
	cmd.Flags().StringVarP(&g.output, "output", "o", "", "json or yaml")
	return cmd
}

// installedVersion reads the kubelink release: the image tag it runs and
// its chart.
func installedVersion(ctx context.Context, g *globals, v *versionInfo) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	c, err := g.connect(ctx)
	if err != nil {
		return err
	}
	v.Cluster = c.context
	cfg := action.NewConfiguration()
	if err := cfg.Init(c.flags, *g.kube.Namespace, "secret"); err != nil {
		return err
	}
	rel, err := action.NewGet(cfg).Run(releaseName)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the kubelink release: %w", err)
	}
	r, ok := rel.(*releasev1.Release)
	if !ok || r.Chart == nil || r.Chart.Metadata == nil {
		return fmt.Errorf("the kubelink release has an unexpected form (%T)", rel)
	}
	v.Installed = r.Chart.Metadata.AppVersion
	if img, ok := r.Config["image"].(map[string]any); ok {
		if tag, ok := img["tag"].(string); ok && tag != "" {
			v.Installed = tag
		}
	}
	v.Chart = r.Chart.Metadata.Name + "-" + r.Chart.Metadata.Version
	v.Revision = r.Version
	return nil
}
