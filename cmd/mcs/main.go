// Command kubelink-mcs is kubelink's side of the Multi-Cluster Services API
// (KEP-1645, multicluster.x-k8s.io): it keeps the conditions of every
// ServiceExport of the cluster true to its Service and writes the record of
// the valid exports, what this cluster offers the others of its meshes; and
// from the records of the clusters (the broker's imports) it makes the
// ServiceImports, each with a selector-less Service and an EndpointSlice per
// exporting cluster (docs/mcs.md).
package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/kubeflags"
	"github.com/kubelink/kubelink/lib/mcs"
)

func main() {
	cmd := cli.New("kubelink-mcs", "keeps the cluster's ServiceExports (Multi-Cluster Services API) and their record, and makes the ServiceImports of every cluster's exports")
	c := mcs.Defaults()
	var common kubeflags.Common
	f := cmd.Flags
	common.Register(f)
	f.StringVar(&c.Namespace, "namespace", kubeflags.DefaultNamespace(c.Namespace), "namespace of the export record (ConfigMap "+mcs.RecordConfigMap+")")
	f.DurationVar(&c.Resync, "resync", c.Resync, "period of the full pass (also runs on every change of a ServiceExport or a Service)")
	f.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "address serving /healthz, /readyz and /metrics (empty: off)")

	cmd.Main(func() error {
		if err := c.Validate(); err != nil {
			return err
		}
		return common.Serve(func(ctx context.Context, rest *rest.Config, log *slog.Logger) error {
			ctrl, err := mcs.New(c, rest, log)
			if err != nil {
				return err
			}
			return ctrl.Run(ctx)
		})
	})
}
