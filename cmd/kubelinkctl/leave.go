package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

type leaveOptions struct {
	contexts []string
	meshCIDR string
}

func newLeave(g *globals) *cobra.Command {
	o := &leaveOptions{}
	cmd := &cobra.Command{
		Use:   "leave NAME --context A --context B [...]",
		Short: "Take one cluster out of the mesh on every side",
		Long: `leave takes the cluster NAME (its name in the mesh, the LocalLink's) out of
the mesh: in every given cluster it deletes the KubeLink to NAME; in NAME's
own cluster (when given) it deletes its KubeLinks to the others; at the
mesh authority (when given) it removes NAME's registration (ServiceAccount
member-NAME, its token and bindings), so that the authority signs nothing
more for it and revokes the certificates it holds: within a minute (the
members' certwatch --resync) every bridge of the mesh refuses them. NAME keeps kubelink installed and its LocalLink (join brings
it back; uninstall removes it). The mesh authority itself cannot leave: the
others' certificates come from it.`,
		Example: fmt.Sprintf(`  # us leaves the mesh of eu, us and ap
  %[1]s leave us --context eu --context us --context ap`, commandName()),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(dedupe(o.contexts)) == 0 {
				return usagef(cmd, "leave needs the contexts of the clusters to take %s out of (--context A --context B ...)", args[0])
			}
			return o.run(cmd.Context(), g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster of the mesh (repeat it: every member, and the leaving one)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh, where a cluster is in several")
	f.StringVarP(&g.output, "output", "o", "", "print what was removed as json or yaml")
	return cmd
}

// removal is one object leave deleted.
type removal struct {
	Cluster string `json:"cluster"`
	Object  string `json:"object"`
}

func (o *leaveOptions) run(ctx context.Context, g *globals, name string) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	var ms []*member
	var leaving *member
	for _, c := range dedupe(o.contexts) {
		m, err := g.loadMember(ctx, c, o.meshCIDR)
		if err != nil {
			return err
		}
		if m.name == name {
			leaving = m
		}
		ms = append(ms, m)
	}
	if leaving != nil && leaving.authority() {
		return fmt.Errorf("%s is the mesh authority: the other members' certificates come from its CA, so it cannot leave; take the others out first, or uninstall the whole mesh", leaving)
	}
	var removed []removal
	del := func(m *member, what string, f func() error) error {
		err := f()
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("%s: deleting %s: %w", m, what, err)
		}
		removed = append(removed, removal{Cluster: m.name, Object: what})
		g.progress("%s: deleted %s", m, what)
		return nil
	}
	for _, m := range ms {
		var doomed []v1alpha1.KubeLink
		if m == leaving {
			for _, p := range ms {
				if l := m.link(p.name); l != nil && p != m {
					doomed = append(doomed, *l)
				}
			}
		} else if l := m.link(name); l != nil {
			doomed = append(doomed, *l)
		}
		for i := range doomed {
			l := &doomed[i]
			if err := del(m, "KubeLink "+l.Name, func() error { return m.c.Delete(ctx, l) }); err != nil {
				return err
			}
		}
		if m.authority() {
			sa, binding := "member-"+name, "kubelink-member-"+name
			for _, step := range []struct {
				what string
				f    func() error
			}{
				{"ClusterRoleBinding " + binding, func() error {
					return m.cs.RbacV1().ClusterRoleBindings().Delete(ctx, binding, metav1.DeleteOptions{})
				}},
				{"RoleBinding " + m.ns + "/" + binding, func() error {
					return m.cs.RbacV1().RoleBindings(m.ns).Delete(ctx, binding, metav1.DeleteOptions{})
				}},
				{"Secret " + m.ns + "/" + sa + "-token", func() error {
					return m.cs.CoreV1().Secrets(m.ns).Delete(ctx, sa+"-token", metav1.DeleteOptions{})
				}},
				{"ServiceAccount " + m.ns + "/" + sa, func() error {
					return m.cs.CoreV1().ServiceAccounts(m.ns).Delete(ctx, sa, metav1.DeleteOptions{})
				}},
			} {
				if err := del(m, step.what, step.f); err != nil {
					return err
				}
			}
		}
	}
	return printObject(g, removed, func() {
		if len(removed) == 0 {
			fmt.Fprintf(g.out, "%s is in the mesh of none of these clusters: nothing to remove.\n", name)
			return
		}
		fmt.Fprintf(g.out, "%s left the mesh: %d objects removed in %d clusters.\n", name, len(removed), len(ms))
	})
}
