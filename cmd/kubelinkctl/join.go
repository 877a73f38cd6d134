package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// tokenWait bounds the wait for the token controller to fill a member's
// token Secret at the authority.
const tokenWait = 60 * time.Second

type joinOptions struct {
	token           string
	contexts        []string
	meshCIDR        string
	authorityServer string
	wait            bool
}

func newJoin(g *globals) *cobra.Command {
	o := &joinOptions{}
	cmd := &cobra.Command{
		Use:   "join --context A --context B [--context C ...]",
		Short: "Join clusters into one mesh: the KubeLinks between every pair, and wait until they are Up",
		Long: `join connects clusters that kubelink is installed in (kubelinkctl install) into a
full mesh. For every pair of clusters that lacks one, it creates the KubeLink
on each side from the other's LocalLink: its mesh address, service CIDR,
endpoint and (WireGuard) public key. With the bridge data plane it first
registers each member at the mesh authority (the cluster installed with
--mesh-authority): a ServiceAccount there that may have exactly the member's
identity signed, and its token as the member's Secret kubelink-authority;
the CA key stays at the authority (in WireGuard mode too, where one of the
clusters is the authority). Then it waits until every link is Up and
prints them with their round-trip time.

Before any change it checks that the clusters can form one mesh: distinct
names and mesh addresses, one mesh CIDR, one data plane, and service CIDRs
that do not overlap. It is idempotent: run again, it changes nothing. A
cluster joins a running mesh without touching the links between the others
(give the new cluster's context and those of the members).`,
		Example: fmt.Sprintf(`  # two clusters, each installed with kubelinkctl install
  %[1]s join --context eu --context us

  # a third cluster joins the running mesh; the eu-us links stay as they are
  %[1]s join --context eu --context us --context ap

  # with a token from another team (kubelinkctl token create in their cluster)
  %[1]s join --token ap.token --context ap

  # clusters from separate kubeconfig files
  %[1]s join --kubeconfig eu.yaml:us.yaml --context eu-admin --context us-admin`, commandName()),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.token != "" {
				if len(dedupe(o.contexts)) != 1 {
					return usagef(cmd, "join --token needs the context of the one new cluster (--context NEW), got %d", len(dedupe(o.contexts)))
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
				defer cancel()
				return joinWithToken(ctx, g, o.token, o.contexts[0], o.wait)
			}
			if len(dedupe(o.contexts)) < 2 {
				return usagef(cmd, "join needs the contexts of at least two clusters (--context A --context B), got %d", len(dedupe(o.contexts)))
			}
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	// Its own --context: several, where the other commands take one.
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster to join (repeat it, at least twice)")
	f.StringVar(&o.meshCIDR, "mesh-cidr", "", "the mesh to join, where a cluster is in several (default: each cluster's only LocalLink)")
	f.StringVar(&o.authorityServer, "authority-server", "", "bridge: the https:// URL the members' pods reach the mesh authority's API server at (default: its kubeconfig's server, or the address it advertises when that is a loopback address)")
	f.StringVar(&o.token, "token", "", "join the one cluster of --context to the mesh of the token's issuer (kubelinkctl token create there), without its kubeconfig")
	f.BoolVar(&o.wait, "wait", true, "wait until every link is Up (false: create the links and return)")
	f.StringVarP(&g.output, "output", "o", "", "print the links as json or yaml")
	return cmd
}

func dedupe(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" && !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// linkAction is what join did to one KubeLink.
type linkAction struct {
	from, to *member
	action   string // created, updated (with what), unchanged
}

func (o *joinOptions) run(ctx context.Context, g *globals) error {
	if g.output != "" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("-o %q: must be json or yaml", g.output)
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	start := time.Now()
	var ms []*member
	for _, name := range dedupe(o.contexts) {
		m, err := g.loadMember(ctx, name, o.meshCIDR)
		if err != nil {
			return err
		}
		g.progress("%s: mesh address %s, services %s, %s data plane, reached at %s", m, m.address, m.svc, dash(m.dataPlane), dash(m.endpoint))
		ms = append(ms, m)
	}
	if err := checkMembers(ms); err != nil {
		return err
	}
	// The bridge needs the mesh authority: the peers' certificates must
	// come from one CA. WireGuard does not, but where the clusters have
	// one authority its members are registered too, so that their
	// certificates are the mesh's in both data planes.
	if auth, err := findAuthority(ms); err == nil {
		r, err := authorityServer(ctx, auth, o.authorityServer)
		if err != nil {
			return err
		}
		if r.serverNote != "" {
			g.progress("%s", r.serverNote)
		}
		for _, m := range ms {
			if m == auth {
				continue
			}
			changed, err := r.register(ctx, g, m)
			if err != nil {
				return err
			}
			if changed {
				g.progress("%s: registered at the mesh authority %s (identity %s)", m, auth, m.value("bridge.identities"))
			}
		}
	} else if ms[0].dataPlane == "bridge" {
		return err
	}
	var actions []linkAction
	for _, from := range ms {
		for _, to := range ms {
			if from == to {
				continue
			}
			a, err := applyLink(ctx, from, to)
			if err != nil {
				return err
			}
			if a.action != "unchanged" {
				g.progress("%s: KubeLink %s %s", from, to.name, a.action)
			}
			actions = append(actions, a)
		}
	}
	if o.wait {
		if err := waitLinksUp(ctx, g, actions, start); err != nil {
			return err
		}
	}
	rows, err := linkRows(ctx, ms, func(from *member, l *v1alpha1.KubeLink) bool { return isMember(ms, l.Name) })
	if err != nil {
		return err
	}
	for i := range rows {
		for _, a := range actions {
			if a.from.context == rows[i].Context && a.to.name == rows[i].Peer {
				rows[i].Action = a.action
			}
		}
	}
	return printObject(g, rows, func() {
		printLinkRows(g.out, rows, false)
		n := 0
		for _, a := range actions {
			if a.action != "unchanged" {
				n++
			}
		}
		fmt.Fprintf(g.out, "\n%d clusters in mesh %s, %d links (%d changed) in %s.\n", len(ms), ms[0].address.Masked(), len(actions), n, time.Since(start).Round(time.Second))
	})
}

func isMember(ms []*member, name string) bool {
	for _, m := range ms {
		if m.name == name {
			return true
		}
	}
	return false
}

// wantSpec is the KubeLink from's side needs for to.
func wantSpec(from, to *member) v1alpha1.KubeLinkSpec {
	s := v1alpha1.KubeLinkSpec{
		ClusterAddress: to.address.String(),
		CIDR:           to.svc.String(),
		Endpoint:       to.endpoint,
	}
	if to.dataPlane == "wireguard" {
		s.PublicKey = to.local.Status.PublicKey
	}
	return s
}

// applyLink creates from's KubeLink for to, or brings the fields join owns
// (address, CIDR, endpoint, key) up to date; the others (ingress, egress,
// DNS, ...) stay as the admin set them.
func applyLink(ctx context.Context, from, to *member) (linkAction, error) {
	a := linkAction{from: from, to: to}
	want := wantSpec(from, to)
	cur := from.link(to.name)
	if cur == nil {
		kl := &v1alpha1.KubeLink{Spec: want}
		kl.Name = to.name
		kl.Labels = map[string]string{managedByLabel: managedBy}
		if err := from.c.Create(ctx, kl); err != nil {
			return a, fmt.Errorf("%s: creating KubeLink %s: %w", from, to.name, err)
		}
		from.links = append(from.links, *kl)
		a.action = "created"
		return a, nil
	}
	// The brokers write the status meanwhile: each try reads afresh.
	var diffs []string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		kl := &v1alpha1.KubeLink{}
		if err := from.c.Get(ctx, client.ObjectKey{Name: to.name}, kl); err != nil {
			return err
		}
		diffs = nil
		diff := func(field string, have *string, want string) {
			if *have != want {
				diffs = append(diffs, fmt.Sprintf("%s %s → %s", field, dash(*have), dash(want)))
				*have = want
			}
		}
		diff("clusterAddress", &kl.Spec.ClusterAddress, want.ClusterAddress)
		diff("cidr", &kl.Spec.CIDR, want.CIDR)
		diff("endpoint", &kl.Spec.Endpoint, want.Endpoint)
		diff("publicKey", &kl.Spec.PublicKey, want.PublicKey)
		if kl.Labels[managedByLabel] != managedBy {
			// A link of the peer's address made by hand: join takes it over.
			if kl.Labels == nil {
				kl.Labels = map[string]string{}
			}
			kl.Labels[managedByLabel] = managedBy
			diffs = append(diffs, "label "+managedByLabel+"="+managedBy)
		}
		if len(diffs) == 0 {
			return nil
		}
		if err := from.c.Update(ctx, kl); err != nil {
			return err
		}
		*cur = *kl
		return nil
	})
	if err != nil {
		return a, fmt.Errorf("%s: updating KubeLink %s (%s): %w", from, to.name, strings.Join(diffs, ", "), err)
	}
	if len(diffs) == 0 {
		a.action = "unchanged"
		return a, nil
	}
	a.action = "updated (" + strings.Join(diffs, ", ") + ")"
	return a, nil
}

// waitLinksUp waits until every link of actions is Up, printing which are
// not whenever that changes.
func waitLinksUp(ctx context.Context, g *globals, actions []linkAction, start time.Time) error {
	last := ""
	for {
		var notUp []string
		for _, a := range actions {
			var kl v1alpha1.KubeLink
			state := ""
			if err := a.from.c.Get(ctx, client.ObjectKey{Name: a.to.name}, &kl); err != nil {
				state = err.Error()
			} else if kl.Status.State != v1alpha1.StateUp || kl.Status.ObservedGeneration < kl.Generation {
				// An Up of the spec before join's change does not count.
				state = dash(kl.Status.State)
				if kl.Status.State != "" && kl.Status.ObservedGeneration < kl.Generation {
					state += " (of an earlier spec)"
				}
				if kl.Status.Message != "" {
					state += ": " + kl.Status.Message
				}
			}
			if state != "" {
				notUp = append(notUp, fmt.Sprintf("%s→%s %s", a.from.name, a.to.name, state))
			}
		}
		if len(notUp) == 0 {
			g.progress("all %d links Up after %s", len(actions), time.Since(start).Round(time.Second))
			return nil
		}
		sort.Strings(notUp)
		now := strings.Join(notUp, "; ")
		if now != last {
			g.progress("waiting for %d of %d links to be Up: %s", len(notUp), len(actions), now)
			last = now
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %d of %d links to be Up: %s (--timeout sets the limit; `%s show` shows every link, the brokers' logs say more)",
				time.Since(start).Round(time.Second), len(notUp), len(actions), now, commandName())
		case <-time.After(time.Second):
		}
	}
}
