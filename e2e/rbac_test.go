//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

const tokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// In both clusters the broker pod holds two identities: the broker
// container authenticates as kubelink-broker, certwatch as
// kubelink-certwatch (from its token Secret, mounted into certwatch only),
// and each account may touch only its own Secrets (the chart's RBAC).
func TestComponentIdentities(t *testing.T) {
	f := features.New("component identities").
		Assess("broker and certwatch run as their own ServiceAccounts", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, c := range []*Cluster{lab.A, lab.B} {
				cs, err := kubernetes.NewForConfig(c.rest)
				if err != nil {
					t.Fatal(err)
				}
				whoami := func(token string) string {
					tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx,
						&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
					if err != nil {
						t.Fatalf("%s: TokenReview: %v", c.Name, err)
					}
					if !tr.Status.Authenticated {
						return "(not authenticated: " + tr.Status.Error + ")"
					}
					return tr.Status.User.Username
				}
				pods, err := c.BrokerPods(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pods {
					if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
						t.Errorf("%s: pod %s mounts its account's token into every container", c.Name, p.Name)
					}
					// Which volume each container mounts at the token path.
					mounts := map[string]string{}
					for _, ct := range p.Spec.Containers {
						for _, m := range ct.VolumeMounts {
							if m.MountPath == tokenDir {
								mounts[ct.Name] = m.Name
							}
						}
					}
					if mounts["broker"] != "broker-token" || mounts["certwatch"] != "certwatch-token" {
						t.Errorf("%s: pod %s token mounts %v, want broker: broker-token, certwatch: certwatch-token", c.Name, p.Name, mounts)
					}
					var out, errb bytes.Buffer
					if err := c.Res.ExecInPod(ctx, "kubelink", p.Name, "broker", []string{"cat", tokenDir + "/token"}, &out, &errb); err != nil {
						t.Errorf("%s: reading the broker container's token in %s: %v (%s)", c.Name, p.Name, err, errb.String())
						continue
					}
					if got := whoami(strings.TrimSpace(out.String())); got != "system:serviceaccount:kubelink:kubelink-broker" {
						t.Errorf("%s: the broker container of %s authenticates as %s", c.Name, p.Name, got)
					}
				}
				// certwatch's image has no shell: its token is the Secret the
				// pod mounts into certwatch only.
				s, err := cs.CoreV1().Secrets("kubelink").Get(ctx, "kubelink-certwatch-token", metav1.GetOptions{})
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				if got := whoami(string(s.Data["token"])); got != "system:serviceaccount:kubelink:kubelink-certwatch" {
					t.Errorf("%s: certwatch's token authenticates as %s", c.Name, got)
				}
			}
			return ctx
		}).
		Assess("each account reaches only its own Secrets", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			type check struct {
				who, verb, name string
				want            bool
				// member: allowed only in a member of another cluster's
				// mesh authority (its certwatch reads the authority's
				// kubeconfig), refused elsewhere.
				member bool
			}
			checks := []check{
				{"broker", "get", "wireguard", true, false},
				{"broker", "get", "kubelink-tls", false, false},
				{"broker", "list", "", false, false},
				{"broker", "create", "", false, false},
				{"certwatch", "update", "kubelink-tls", true, false},
				{"certwatch", "get", "kubelink-certwatch-token", false, false},
				{"certwatch", "get", "kubelink-authority", false, true},
				{"certwatch", "watch", "kubelink-authority", false, true},
				{"certwatch", "update", "kubelink-authority", false, false},
				{"certwatch", "list", "", false, false},
				{"meshdns", "update", "kubelink-coredns", true, false},
				{"meshdns", "get", "kubelink-tls", false, false},
				{"meshdns", "list", "", false, false},
				{"router", "get", "wireguard", false, false},
			}
			for _, c := range []*Cluster{lab.A, lab.B} {
				cs, err := kubernetes.NewForConfig(c.rest)
				if err != nil {
					t.Fatal(err)
				}
				dep, err := cs.AppsV1().Deployments("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				member := false
				for _, ctr := range dep.Spec.Template.Spec.Containers {
					if ctr.Name == "certwatch" && slices.Contains(ctr.Args, "--authority-secret=kubelink-authority") {
						member = true
					}
				}
				if member != (c == lab.B) {
					t.Errorf("%s: a member of the mesh authority: %v; the lab makes b one, a the authority", c.Name, member)
				}
				for _, ch := range checks {
					if ch.member && member {
						ch.want = true
					}
					user := "system:serviceaccount:kubelink:kubelink-" + ch.who
					sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
						User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kubelink", "system:authenticated"},
						ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "kubelink", Verb: ch.verb, Resource: "secrets", Name: ch.name},
					}}, metav1.CreateOptions{})
					if err != nil {
						t.Fatalf("%s: SubjectAccessReview: %v", c.Name, err)
					}
					if sar.Status.Allowed != ch.want {
						t.Errorf("%s: %s %s secret %q: allowed %v, want %v", c.Name, user, ch.verb, ch.name, sar.Status.Allowed, ch.want)
					}
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
