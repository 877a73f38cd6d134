package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

type showOptions struct {
	contexts []string
	meshCIDR string
}

func newShow(g *globals) *cobra.Command {
	o := &showOptions{}
	cmd := &cobra.Command{
		Use:   "show [links|gateways|all]",
		Short: "Show the links and gateways of one or more clusters",
		Long: `show prints, for every given cluster, its links to the other members (state,
round-trip time, data plane, last handshake, bytes, endpoint) and its
gateways (the broker pods, which one is active, their node and version).
For a link that is not Up it prints the line of its status that says why.`,
		Example: fmt.Sprintf(`  # the links of the current context's cluster
  %[1]s show

  # links and gateways of two clusters
  %[1]s show all --context eu --context us -o yaml`, commandName()),
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"links", "gateways", "all"},
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "links"
			if len(args) == 1 {
				what = args[0]
			}
			if !contains([]string{"links", "gateways", "all"}, what) {
				return usagef(cmd, "show %q: must be links, gateways or all", what)
			}
			return o.run(cmd.Context(), g, what)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster to show (repeat it; default: the current context)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh to show, where a cluster is in several")
	f.StringVarP(&g.output, "output", "o", "", "print as json or yaml")
	return cmd
}

// linkRow is one KubeLink as join and show print it.
type linkRow struct {
	Cluster       string       `json:"cluster"`
	Context       string       `json:"context"`
	Peer          string       `json:"peer"`
	Action        string       `json:"action,omitempty"`
	State         string       `json:"state"`
	Message       string       `json:"message,omitempty"`
	DataPlane     string       `json:"dataPlane,omitempty"`
	Endpoint      string       `json:"endpoint,omitempty"`
	RTT           string       `json:"rtt,omitempty"`
	LastHandshake *metav1.Time `json:"lastHandshake,omitempty"`
	RxBytes       int64        `json:"rxBytes,omitempty"`
	TxBytes       int64        `json:"txBytes,omitempty"`
	Gateway       string       `json:"gateway,omitempty"`
}

// gatewayRow is one broker pod of a cluster.
type gatewayRow struct {
	Cluster   string `json:"cluster"`
	Context   string `json:"context"`
	Pod       string `json:"pod"`
	Node      string `json:"node,omitempty"`
	Active    bool   `json:"active"`
	Ready     bool   `json:"ready"`
	Phase     string `json:"phase"`
	Version   string `json:"version,omitempty"` // the broker image's tag
	Release   string `json:"release,omitempty"` // chart and revision
	DataPlane string `json:"dataPlane,omitempty"`
	Gateway   string `json:"gateway,omitempty"`  // the address the cluster's links route through
	Endpoint  string `json:"endpoint,omitempty"` // host:port the peers reach the active broker at
}

type showResult struct {
	Links    []linkRow    `json:"links,omitempty"`
	Gateways []gatewayRow `json:"gateways,omitempty"`
}

func (o *showOptions) run(ctx context.Context, g *globals, what string) error {
	if g.output != "" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("-o %q: must be json or yaml", g.output)
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	contexts := dedupe(o.contexts)
	if len(contexts) == 0 {
		contexts = []string{*g.kube.Context} // "" is the current context
	}
	var ms []*member
	for _, name := range contexts {
		m, err := g.loadMember(ctx, name, o.meshCIDR)
		if err != nil {
			return err
		}
		ms = append(ms, m)
	}
	var res showResult
	var err error
	if what != "gateways" {
		if res.Links, err = linkRows(ctx, ms, nil); err != nil {
			return err
		}
	}
	if what != "links" {
		if res.Gateways, err = gatewayRows(ctx, ms); err != nil {
			return err
		}
	}
	return printObject(g, res, func() {
		if what != "gateways" {
			printLinkRows(g.out, res.Links, true)
		}
		if what == "all" {
			fmt.Fprintln(g.out)
		}
		if what != "links" {
			printGatewayRows(g.out, res.Gateways)
		}
	})
}

// linkRows reads the KubeLinks of every member again (their status now),
// those keep accepts (nil: all but the LocalLink).
func linkRows(ctx context.Context, ms []*member, keep func(*member, *v1alpha1.KubeLink) bool) ([]linkRow, error) {
	var rows []linkRow
	for _, m := range ms {
		var list v1alpha1.KubeLinkList
		if err := m.c.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("%s: listing KubeLinks: %w", m, err)
		}
		for i := range list.Items {
			l := &list.Items[i]
			if l.Spec.Endpoint == v1alpha1.EndpointLocalLink || (keep != nil && !keep(m, l)) {
				continue
			}
			r := linkRow{Cluster: m.name, Context: m.context, Peer: l.Name, State: l.Status.State, Message: l.Status.Message,
				DataPlane: l.Status.DataPlane, Endpoint: l.Spec.Endpoint, Gateway: l.Status.Gateway}
			if h := l.Status.Health; h != nil {
				r.LastHandshake, r.RxBytes, r.TxBytes = h.LastHandshake, h.RxBytes, h.TxBytes
				if h.RTT != nil {
					switch {
					case h.RTT.Avg != nil:
						r.RTT = roundRTT(h.RTT.Avg.Duration)
					case h.RTT.Last != nil:
						r.RTT = roundRTT(h.RTT.Last.Duration)
					}
				}
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func roundRTT(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// printLinkRows prints the links as a table; below it, for each link
// that is not Up, the line of its status that says why.
func printLinkRows(out io.Writer, rows []linkRow, details bool) {
	if len(rows) == 0 {
		fmt.Fprintln(out, "no links")
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "CLUSTER\tPEER\tSTATE\tRTT\tDATA PLANE\tENDPOINT"
	if details {
		head += "\tHANDSHAKE\tRX\tTX\tGATEWAY"
	}
	if rows[0].Action != "" {
		head += "\tJOIN"
	}
	fmt.Fprintln(w, head)
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", r.Cluster, r.Peer, dash(r.State), dash(r.RTT), dash(r.DataPlane), r.Endpoint)
		if details {
			hs := "-"
			if r.LastHandshake != nil {
				hs = time.Since(r.LastHandshake.Time).Round(time.Second).String() + " ago"
			}
			line += fmt.Sprintf("\t%s\t%s\t%s\t%s", hs, bytesOf(r.RxBytes), bytesOf(r.TxBytes), dash(r.Gateway))
		}
		if r.Action != "" {
			line += "\t" + strings.SplitN(r.Action, " ", 2)[0]
		}
		fmt.Fprintln(w, line)
	}
	w.Flush()
	for _, r := range rows {
		if r.State != v1alpha1.StateUp {
			why := r.Message
			if why == "" {
				why = "no state yet: is the broker of " + r.Cluster + " running?"
			}
			fmt.Fprintf(out, "  %s → %s %s: %s\n", r.Cluster, r.Peer, dash(r.State), why)
		}
	}
}

func bytesOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// gatewayRows lists the broker pods of every member.
func gatewayRows(ctx context.Context, ms []*member) ([]gatewayRow, error) {
	var rows []gatewayRow
	for _, m := range ms {
		pods, err := m.cs.CoreV1().Pods(m.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kubelink-broker"})
		if err != nil {
			return nil, fmt.Errorf("%s: listing the broker pods: %w", m, err)
		}
		release := ""
		if m.release != nil && m.release.Chart != nil && m.release.Chart.Metadata != nil {
			release = fmt.Sprintf("%s-%s (revision %d)", m.release.Chart.Metadata.Name, m.release.Chart.Metadata.Version, m.release.Version)
		}
		// The active broker holds the Lease (and the Service's EndpointSlice
		// points at it); every healthy replica is Ready.
		holder := ""
		if l, err := m.cs.CoordinationV1().Leases(m.ns).Get(ctx, "kubelink-broker", metav1.GetOptions{}); err == nil && l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		if len(pods.Items) == 0 {
			rows = append(rows, gatewayRow{Cluster: m.name, Context: m.context, Pod: "-", Phase: "no broker pod", Release: release, DataPlane: m.local.Status.DataPlane})
		}
		for _, p := range pods.Items {
			r := gatewayRow{Cluster: m.name, Context: m.context, Pod: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase),
				Active: p.Name == holder, Release: release, DataPlane: m.local.Status.DataPlane}
			if r.Active {
				r.Gateway, r.Endpoint = m.local.Status.Gateway, m.endpoint
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					r.Ready = c.Status == corev1.ConditionTrue
				}
			}
			for _, c := range p.Spec.Containers {
				if c.Name == "broker" {
					if i := strings.LastIndex(c.Image, ":"); i > strings.LastIndex(c.Image, "/") {
						r.Version = c.Image[i+1:]
					}
				}
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func printGatewayRows(out io.Writer, rows []gatewayRow) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tBROKER POD\tNODE\tACTIVE\tREADY\tPHASE\tGATEWAY\tENDPOINT\tDATA PLANE\tVERSION\tRELEASE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%v\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Cluster, r.Pod, dash(r.Node), r.Active, r.Ready, r.Phase,
			dash(r.Gateway), dash(r.Endpoint), dash(r.DataPlane), dash(r.Version), dash(r.Release))
	}
	w.Flush()
}
