package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

type benchmarkOptions struct {
	contexts []string
	meshCIDR string
	image    string
	seconds  time.Duration
	count    int
}

func newBenchmark(g *globals) *cobra.Command {
	o := &benchmarkOptions{}
	cmd := &cobra.Command{
		Use:   "benchmark throughput|latency --context A --context B",
		Short: "Measure throughput or request/response latency between pods of two clusters through the mesh",
		Long: `benchmark starts verify's agent in both clusters (a namespace
kubelink-verify-<random> of its own, removed afterwards) and measures, in both directions, from the pod on the
gateway node to the other cluster's Service through the mesh:
  throughput  one TCP stream uploading for --seconds: the rate the server
              received, and the path MTU of the connection;
  latency     --count small HTTP requests, one after the other on one
              connection: min, median, mean, 99th percentile and max.`,
		Example: fmt.Sprintf(`  %[1]s benchmark throughput --context eu --context us
  %[1]s benchmark latency --context eu --context us --count 1000 -o json`, commandName()),
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"throughput", "latency"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "throughput" && args[0] != "latency" {
				return usagef(cmd, "benchmark %q: must be throughput or latency", args[0])
			}
			if len(dedupe(o.contexts)) != 2 {
				return usagef(cmd, "benchmark needs the contexts of exactly two clusters (--context A --context B)")
			}
			if o.seconds < time.Second || o.seconds > 5*time.Minute || o.count < 1 || o.count > 100000 {
				return usagef(cmd, "--seconds must be 1s to 5m and --count 1 to 100000")
			}
			return o.run(cmd.Context(), g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of one of the two clusters (give it twice)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh, where a cluster is in several")
	f.StringVar(&o.image, "image", "", "the agent's image (default: images.verifier of each cluster's release)")
	f.DurationVar(&o.seconds, "seconds", 10*time.Second, "throughput: how long each direction uploads")
	f.IntVar(&o.count, "count", 1000, "latency: requests per direction")
	f.StringVarP(&g.output, "output", "o", "", "print the results as json or yaml")
	return cmd
}

// benchResult is one direction's figures.
type benchResult struct {
	From       string  `json:"from"`
	To         string  `json:"to"`
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
	Mbps       float64 `json:"mbps,omitempty"`
	Bytes      int64   `json:"bytes,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
	PathMTU    int     `json:"pathMTU,omitempty"`
	Count      int     `json:"count,omitempty"`
	MinMs      float64 `json:"minMs,omitempty"`
	P50Ms      float64 `json:"p50Ms,omitempty"`
	AvgMs      float64 `json:"avgMs,omitempty"`
	P99Ms      float64 `json:"p99Ms,omitempty"`
	MaxMs      float64 `json:"maxMs,omitempty"`
	ErrorCount int     `json:"errors,omitempty"`
}

func (o *benchmarkOptions) run(ctx context.Context, g *globals, what string) error {
	// Both directions fit, with time for the agents to start.
	ctx, cancel := context.WithTimeout(ctx, max(g.timeout, 2*o.seconds+3*time.Minute))
	defer cancel()
	vcs, cleanup, err := startAgentsIn(ctx, g, o.contexts, o.meshCIDR, o.image, false)
	defer cleanup()
	if err != nil {
		return err
	}
	var res []benchResult
	failed := 0
	for _, pair := range [][2]*verifyCluster{{vcs[0], vcs[1]}, {vcs[1], vcs[0]}} {
		from, to := pair[0], pair[1]
		url := fmt.Sprintf("http://%s/", to.serviceIP)
		args := []string{"/usr/local/bin/app", "--throughput", url, "--seconds", o.seconds.String()}
		if what == "latency" {
			args = []string{"/usr/local/bin/app", "--latency", url, "--count", strconv.Itoa(o.count)}
		}
		g.progress("%s: %s from %s (%s) to %s's Service %s", what, what, from.name, from.agents[0].node, to.name, to.serviceIP)
		out, err := execIn(ctx, from, from.agents[0].pod, args...)
		r := benchResult{From: from.name, To: to.name}
		if err == nil {
			err = json.Unmarshal(bytes.TrimSpace(out), &r)
			r.From, r.To = from.name, to.name
		}
		if err != nil {
			r.Error = err.Error()
		}
		if !r.OK {
			failed++
		}
		res = append(res, r)
	}
	if err := printObject(g, res, func() {
		w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		if what == "throughput" {
			fmt.Fprintln(w, "FROM\tTO\tMBIT/S\tBYTES\tSECONDS\tPATH MTU\tERROR")
			for _, r := range res {
				fmt.Fprintf(w, "%s\t%s\t%.0f\t%d\t%.1f\t%d\t%s\n", r.From, r.To, r.Mbps, r.Bytes, r.Seconds, r.PathMTU, r.Error)
			}
		} else {
			fmt.Fprintln(w, "FROM\tTO\tREQUESTS\tMIN ms\tMEDIAN ms\tMEAN ms\tP99 ms\tMAX ms\tERROR")
			for _, r := range res {
				fmt.Fprintf(w, "%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\n", r.From, r.To, r.Count, r.MinMs, r.P50Ms, r.AvgMs, r.P99Ms, r.MaxMs, r.Error)
			}
		}
		w.Flush()
	}); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of 2 directions failed (`%s verify` checks the connectivity)", failed, commandName())
	}
	return nil
}
