package main

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// chartdata holds the chart archive `make kubelinkctl` packages from
// deploy/chart/kubelink (chartdata/README.md).
//
//go:embed all:chartdata
var chartdata embed.FS

// loadChart loads the chart from --chart (a directory or an archive), or
// the one embedded in the binary.
func loadChart(from string) (*chart.Chart, string, error) {
	if from != "" {
		if _, err := os.Stat(from); err != nil {
			return nil, "", fmt.Errorf("--chart %s: %w", from, err)
		}
		ch, err := loader.Load(from)
		if err != nil {
			return nil, "", fmt.Errorf("loading the chart from %s: %w", from, err)
		}
		return ch, from, nil
	}
	archives, _ := fs.Glob(chartdata, "chartdata/*.tgz")
	if len(archives) != 1 {
		return nil, "", fmt.Errorf("this kubelinkctl was built without its chart (build it with make kubelinkctl): give the chart with --chart deploy/chart/kubelink")
	}
	data, err := chartdata.ReadFile(archives[0])
	if err != nil {
		return nil, "", err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("the embedded chart %s: %w", path.Base(archives[0]), err)
	}
	return ch, "embedded " + path.Base(archives[0]), nil
}

// chartType is the chart the Helm actions take.
type chartType = *chart.Chart
