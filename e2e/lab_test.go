//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/e2e-framework/klient/k8s"
	"sigs.k8s.io/e2e-framework/klient/k8s/resources"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Lab is the running lab of lab/scripts/lab-up.sh: two clusters, or three
// with LAB_CLUSTERS=3.
type Lab struct {
	Dir  string
	Mode string // wireguard or bridge
	A, B *Cluster
	C    *Cluster // nil unless the lab has a third cluster
}

// Cluster is one kind cluster of the lab.
type Cluster struct {
	Name       string // a, b or c
	Kubeconfig string
	// KubeProxy is the kube-proxy mode lab-up gave this cluster: nftables
	// in a and iptables in b, unless LAB_KUBE_PROXY forced one for both.
	KubeProxy string
	Res       *resources.Resources // all namespaces; see In
	rest      *rest.Config
}

// In returns a Resources scoped to namespace ns. (resources.WithNamespace
// changes its receiver, so the shared Res must never be scoped.)
func (c *Cluster) In(ns string) *resources.Resources {
	r, err := newResources(c.rest)
	if err != nil {
		panic(err) // the same config worked in OpenLab
	}
	return r.WithNamespace(ns)
}

func newResources(rc *rest.Config) (*resources.Resources, error) {
	res, err := resources.New(rc)
	if err != nil {
		return nil, err
	}
	return res, errors.Join(v1alpha1.AddToScheme(res.GetScheme()), apiextensionsv1.AddToScheme(res.GetScheme()), mcsv1beta1.Install(res.GetScheme()))
}

// OpenLab connects to both clusters and checks they answer.
func OpenLab(dir string) (*Lab, error) {
	mode, err := os.ReadFile(filepath.Join(dir, "mode"))
	if err != nil {
		return nil, fmt.Errorf("no running lab in %s: %w", dir, err)
	}
	proxy, err := os.ReadFile(filepath.Join(dir, "kube-proxy"))
	if err != nil {
		return nil, fmt.Errorf("lab in %s predates LAB_KUBE_PROXY: run make lab-up again: %w", dir, err)
	}
	proxyOf, err := parseKubeProxy(string(proxy))
	if err != nil {
		return nil, fmt.Errorf("%s: %w (run make lab-up again)", filepath.Join(dir, "kube-proxy"), err)
	}
	l := &Lab{Dir: dir, Mode: strings.TrimSpace(string(mode))}
	for _, name := range []string{"a", "b", "c"} {
		kc := filepath.Join(dir, name, "kubeconfig")
		if _, err := os.Stat(kc); name == "c" && err != nil {
			continue // a lab of two clusters
		}
		rc, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		res, err := newResources(rc)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var nodes corev1.NodeList
		err = res.List(ctx, &nodes)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("cluster %s does not answer: %w", name, err)
		}
		c := &Cluster{Name: name, Kubeconfig: kc, Res: res, rest: rc, KubeProxy: proxyOf[name]}
		switch name {
		case "a":
			l.A = c
		case "b":
			l.B = c
		default:
			l.C = c
		}
	}
	return l, nil
}

// parseKubeProxy reads lab-up's record of each cluster's kube-proxy mode:
// lines "<cluster> <mode>" for a and b.
func parseKubeProxy(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || (f[1] != "iptables" && f[1] != "nftables") {
			return nil, fmt.Errorf("line %q: want \"<cluster> iptables|nftables\"", l)
		}
		m[f[0]] = f[1]
	}
	if m["a"] == "" || m["b"] == "" {
		return nil, fmt.Errorf("no kube-proxy mode for cluster a and b in %q", s)
	}
	return m, nil
}

// Exec runs cmd in the first container of a pod of the default namespace.
func (c *Cluster) Exec(ctx context.Context, pod string, cmd ...string) (string, error) {
	var out, errb bytes.Buffer
	err := c.Res.ExecInPod(ctx, "default", pod, "", cmd, &out, &errb)
	if err != nil {
		return out.String(), fmt.Errorf("%s in %s/%s: %w (stderr: %s)", strings.Join(cmd, " "), c.Name, pod, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// CreateFresh creates obj for the test, replacing one an interrupted
// earlier run left, and deletes it when the test ends.
func (c *Cluster) CreateFresh(ctx context.Context, t *testing.T, obj k8s.Object) {
	t.Helper()
	if err := c.Res.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		return c.Res.Create(ctx, obj.DeepCopyObject().(k8s.Object)) // the old one may still be going
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Res.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %T %s in %s: %v", obj, obj.GetName(), c.Name, err)
		}
	})
}

// Wget fetches url from a pod with a bounded timeout.
func (c *Cluster) Wget(ctx context.Context, pod, url string) (string, error) {
	// (busybox 1.35's wget -T crashes: coreutils timeout bounds it instead)
	return c.Exec(ctx, pod, "timeout", "3", "busybox", "wget", "-q", "-O", "-", url)
}

// Clients maps node name → the lab client pod on that node.
func (c *Cluster) Clients(ctx context.Context) (map[string]string, error) {
	var pods corev1.PodList
	if err := c.Res.List(ctx, &pods, resources.WithLabelSelector("app=client")); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, p := range pods.Items {
		if p.Namespace == "default" && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			m[p.Spec.NodeName] = p.Name
		}
	}
	return m, nil
}

// ServiceIP is the ClusterIP of a Service of the default namespace.
func (c *Cluster) ServiceIP(ctx context.Context, name string) (string, error) {
	var svc corev1.Service
	if err := c.Res.Get(ctx, name, "default", &svc); err != nil {
		return "", err
	}
	return svc.Spec.ClusterIP, nil
}

// Link reads a KubeLink.
func (c *Cluster) Link(ctx context.Context, name string) (*v1alpha1.KubeLink, error) {
	var l v1alpha1.KubeLink
	return &l, c.Res.Get(ctx, name, "", &l)
}

// UpdateLink changes the spec of a KubeLink with edit, read afresh on every
// try: the brokers write the object too (status), so a conflict is retried.
func (c *Cluster) UpdateLink(ctx context.Context, name string, edit func(*v1alpha1.KubeLinkSpec)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := c.Link(ctx, name)
		if err != nil {
			return err
		}
		edit(&l.Spec)
		return c.Res.Update(ctx, l)
	})
}

// NodeName maps a node IP to its name.
func (c *Cluster) NodeName(ctx context.Context, ip string) (string, error) {
	var nodes corev1.NodeList
	if err := c.Res.List(ctx, &nodes); err != nil {
		return "", err
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && a.Address == ip {
				return n.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no node of cluster %s has IP %s", c.Name, ip)
}

// BrokerPods lists the broker pods that are not being deleted.
func (c *Cluster) BrokerPods(ctx context.Context) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.In("kubelink").List(ctx, &pods, resources.WithLabelSelector("app.kubernetes.io/name=kubelink-broker")); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Eventually polls f every interval until it returns nil or timeout passes;
// it returns how long it took, or the last error.
func Eventually(ctx context.Context, timeout, interval time.Duration, f func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := f(ctx)
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(interval):
		}
	}
}

// NodeRoutes lists the routes with protocol proto in a kind node's main table.
func NodeRoutes(ctx context.Context, node string, proto int) ([]string, error) {
	out, err := exec.CommandContext(ctx, "/usr/bin/docker", "exec", node, "ip", "route", "show", "proto", fmt.Sprint(proto)).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w: %s", node, err, out)
	}
	var routes []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			routes = append(routes, strings.TrimSpace(l))
		}
	}
	return routes, nil
}

func resourcesLabel(sel string) resources.ListOption { return resources.WithLabelSelector(sel) }

func deleteNow() resources.DeleteOption { return resources.WithGracePeriod(0) }

// Members are the lab's clusters: a, b, and c when the lab has it.
func (l *Lab) Members() []*Cluster {
	if l.C != nil {
		return []*Cluster{l.A, l.B, l.C}
	}
	return []*Cluster{l.A, l.B}
}
