package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// printObject prints v as -o json or yaml, else calls human.
func printObject(g *globals, v any, human func()) error {
	switch g.output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(g.out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = g.out.Write(b)
		return err
	case "":
		human()
		return nil
	}
	return fmt.Errorf("-o %q: must be json or yaml", g.output)
}

// printLinks prints KubeLinks the way `kubectl get kubelinks -o wide` does.
func printLinks(out io.Writer, links []v1alpha1.KubeLink) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tENDPOINT\tCLUSTER ADDRESS\tCIDR\tSTATE\tGATEWAY\tDATA PLANE\tAGE")
	for _, l := range links {
		age := "-"
		if !l.CreationTimestamp.IsZero() {
			age = time.Since(l.CreationTimestamp.Time).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, l.Spec.Endpoint, l.Spec.ClusterAddress, l.Spec.CIDR,
			dash(l.Status.State), dash(l.Status.Gateway), dash(l.Status.DataPlane), age)
	}
	w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
