package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// routeProtocol is the protocol of the router's routes (lib/router's
// RouteProtocol; not imported, it would bring netlink into kubelinkctl).
const routeProtocol = 77

// The CRDs the chart installs.
var kubelinkCRDs = []string{"kubelinks.kubelink.mandelsoft.org", "meshservices.kubelink.mandelsoft.org"}

// nodeCleanupScript runs on every node (host network) after the chart is
// gone: the router's own clean-up, the route datafile, then a report of
// what kubelink state is left, one "left: ..." line each, and "clean"
// when none is. Chains are kubelink's by their prefix KUBELINK- (kube-proxy's
// chains for the Services of the kubelink namespace carry its name too,
// and go with the Services).
const nodeCleanupScript = `set -u
left=0
/usr/local/bin/app --cleanup || { echo "left: the router's clean-up failed"; left=1; }
rm -rf /host-var-lib/kubelink || { echo "left: /var/lib/kubelink"; left=1; }
r=$(ip -4 route show table all proto 77; ip -6 route show table all proto 77)
[ -z "$r" ] || { echo "left: routes of protocol 77: $r"; left=1; }
d=$(ip -o link show | grep -E ': (kubelink[^:@]*)[:@]' || true)
[ -z "$d" ] || { echo "left: devices: $d"; left=1; }
c=$( (iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) | grep KUBELINK- || true)
[ -z "$c" ] || { echo "left: iptables: $c"; left=1; }
n=$(nft list ruleset 2>/dev/null | grep KUBELINK- || true)
[ -z "$n" ] || { echo "left: nftables: $n"; left=1; }
[ "$left" = 0 ] && echo clean
exit 0
`

// cleanLine is the clean-up pod's last line when nothing is left.
const cleanLine = "clean"

type uninstallOptions struct {
	contexts    []string
	keepCRDs    bool
	nodeCleanup bool
	routerImage string
}

func newUninstall(g *globals) *cobra.Command {
	o := &uninstallOptions{}
	cmd := &cobra.Command{
		Use:   "uninstall --context A [--context B ...]",
		Short: "Remove kubelink from clusters: links, chart, node state, DNS hook, CRDs",
		Long: `uninstall removes kubelink from every given cluster, and then checks that
nothing is left:
  1. every KubeLink and MeshService, while the brokers still run and take
     their tunnels down;
  2. the chart's release (helm uninstall), waited for until its pods are gone;
  3. on every node, a pod of the router's image (host network) runs the
     router's clean-up (its routes, rule and tunnel devices) and removes its
     route file, then reports any kubelink route, device, iptables or
     nftables rule left (a node that is not Ready is reported, not cleaned);
  4. the kubelink zone from the cluster DNS, the member registrations a mesh
     authority holds, the CRDs, and the namespace when install created it
     (else only kubelink's objects in it).
It touches nothing else. To take one cluster out of a mesh that stays, run
leave first, with the other members' contexts.`,
		Example: fmt.Sprintf(`  %[1]s uninstall --context eu --context us`, commandName()),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.contexts, "context", nil, "the kubeconfig context of a cluster to remove kubelink from (repeat it; default: the current context)")
	f.BoolVar(&o.keepCRDs, "keep-crds", false, "keep the CRDs (another kubelink install in the cluster uses them)")
	f.BoolVar(&o.nodeCleanup, "node-cleanup", true, "run the clean-up pod on every node (false: only the API objects; the nodes keep the router's routes until they reboot)")
	f.StringVar(&o.routerImage, "router-image", "", "the image of the node clean-up pods (default: the router image of the release; needed when the release is gone)")
	return cmd
}

func (o *uninstallOptions) run(ctx context.Context, g *globals) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	contexts := dedupe(o.contexts)
	if len(contexts) == 0 {
		contexts = []string{*g.kube.Context}
	}
	var cs []*cluster
	for _, name := range contexts {
		c, err := g.connectContext(ctx, name)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	var failed []string
	for _, c := range cs {
		left, err := o.uninstall(ctx, g, c)
		switch {
		case err != nil:
			failed = append(failed, fmt.Sprintf("%q: %v", c.context, err))
		case len(left) > 0:
			failed = append(failed, fmt.Sprintf("%q: left behind: %s", c.context, strings.Join(left, "; ")))
		case o.nodeCleanup:
			fmt.Fprintf(g.out, "kubelink removed from %q: no kubelink object, route, rule, chain or device left.\n", c.context)
		default:
			fmt.Fprintf(g.out, "kubelink's API objects removed from %q; its nodes were not cleaned or checked (--node-cleanup=false).\n", c.context)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("uninstall did not finish:\n  - %s", strings.Join(failed, "\n  - "))
	}
	return nil
}

// uninstall removes kubelink from one cluster and returns what is left.
func (o *uninstallOptions) uninstall(ctx context.Context, g *globals, c *cluster) ([]string, error) {
	ns := *g.kube.Namespace
	cfg := action.NewConfiguration()
	if err := cfg.Init(c.flags, ns, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	var rel *releasev1.Release
	if r, err := action.NewGet(cfg).Run(releaseName); err == nil {
		rel, _ = r.(*releasev1.Release)
	} else if !errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, fmt.Errorf("reading the kubelink release: %w", err)
	}
	routerImage := o.routerImage
	if rel != nil && routerImage == "" {
		m := &member{cluster: c, release: rel}
		if err := m.loadValues(); err != nil {
			return nil, err
		}
		routerImage = m.releaseImage("router")
	}

	if o.nodeCleanup && routerImage == "" {
		// Checked before anything changes: without the release, a rerun
		// could not find the image either.
		return nil, fmt.Errorf("no kubelink release here, so the router image for the node clean-up is unknown: give it with --router-image, or run with --node-cleanup=false (the nodes keep the router's routes, protocol %d, until they reboot)", routeProtocol)
	}

	// 1. The links, while the brokers run.
	for _, list := range []client.ObjectList{&v1alpha1.KubeLinkList{}, &v1alpha1.MeshServiceList{}} {
		if err := c.c.DeleteAllOf(ctx, firstItem(list), client.InNamespace("")); err != nil && !isNoKind(err) && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("deleting the %T objects: %w", firstItem(list), err)
		}
	}
	if err := waitFor(ctx, g, c, "the KubeLinks and MeshServices to go", func() (bool, string) {
		var kl v1alpha1.KubeLinkList
		var ms v1alpha1.MeshServiceList
		if err := c.c.List(ctx, &kl); err != nil && !isNoKind(err) {
			return false, err.Error()
		}
		if err := c.c.List(ctx, &ms); err != nil && !isNoKind(err) {
			return false, err.Error()
		}
		n := len(kl.Items) + len(ms.Items)
		return n == 0, fmt.Sprintf("%d left", n)
	}); err != nil {
		return nil, err
	}

	// 2. The release, and its pods.
	if rel != nil {
		g.progress("%q: helm uninstall %s in namespace %s", c.context, releaseName, ns)
		un := action.NewUninstall(cfg)
		un.WaitStrategy = kube.HookOnlyStrategy
		un.Timeout = g.timeout
		if _, err := un.Run(releaseName); err != nil {
			return nil, fmt.Errorf("helm uninstall: %w", err)
		}
	}
	if err := waitFor(ctx, g, c, "kubelink's pods to go", func() (bool, string) {
		pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=kubelink"})
		if err != nil {
			return apierrors.IsNotFound(err), err.Error()
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods", len(pods.Items))
	}); err != nil {
		return nil, err
	}

	// 3. The nodes.
	var left []string
	if o.nodeCleanup {
		l, err := cleanNodes(ctx, g, c, ns, routerImage)
		if err != nil {
			return nil, err
		}
		left = append(left, l...)
	}

	// 4. The DNS hook, the registrations, the CRDs, the namespace.
	if cm, err := c.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err == nil {
		cf, removed := removeOurBlocks(cm.Data["Corefile"])
		if len(removed) > 0 {
			cm.Data["Corefile"] = cf + "\n"
			if _, err := c.cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				return nil, fmt.Errorf("removing the zones %s from kube-system/coredns: %w", strings.Join(removed, ", "), err)
			}
			g.progress("%q: removed zones %s from kube-system/coredns; restarting it", c.context, strings.Join(removed, ", "))
			if err := restartDeployment(ctx, c, "kube-system", "coredns"); err != nil {
				return nil, err
			}
		}
	}
	if custom, err := c.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns-custom", metav1.GetOptions{}); err == nil {
		if _, ok := custom.Data[corednsCustomKey]; ok {
			delete(custom.Data, corednsCustomKey)
			if _, err := c.cs.CoreV1().ConfigMaps("kube-system").Update(ctx, custom, metav1.UpdateOptions{}); err != nil {
				return nil, fmt.Errorf("removing %s from kube-system/coredns-custom: %w", corednsCustomKey, err)
			}
			g.progress("%q: removed %s from kube-system/coredns-custom", c.context, corednsCustomKey)
		}
	}
	// What join and token create made at cluster scope: the members'
	// bindings, the join tokens' roles and the tokens' admission policy.
	mine := metav1.ListOptions{LabelSelector: managedByLabel + "=" + managedBy}
	if err := c.cs.RbacV1().ClusterRoleBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, mine); err != nil {
		return nil, fmt.Errorf("deleting the member registrations (ClusterRoleBindings): %w", err)
	}
	if err := c.cs.RbacV1().ClusterRoles().DeleteCollection(ctx, metav1.DeleteOptions{}, mine); err != nil {
		return nil, fmt.Errorf("deleting the join tokens' ClusterRoles: %w", err)
	}
	if err := c.cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, joinPolicy, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deleting the admission policy binding %s: %w", joinPolicy, err)
	}
	if err := c.cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, joinPolicy, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deleting the admission policy %s: %w", joinPolicy, err)
	}
	if !o.keepCRDs {
		for _, name := range kubelinkCRDs {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			crd.Name = name
			if err := c.c.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) && !isNoKind(err) {
				return nil, fmt.Errorf("deleting CRD %s: %w", name, err)
			}
		}
	}
	if err := removeNamespace(ctx, g, c, ns); err != nil {
		return nil, err
	}
	l, err := leftObjects(ctx, c, o.keepCRDs)
	if err != nil {
		return nil, err
	}
	return append(left, l...), nil
}

func firstItem(list client.ObjectList) client.Object {
	switch list.(type) {
	case *v1alpha1.KubeLinkList:
		return &v1alpha1.KubeLink{}
	default:
		return &v1alpha1.MeshService{}
	}
}

// loadValues fills values from the release (chart defaults included).
func (m *member) loadValues() error {
	if m.release == nil || m.release.Chart == nil {
		return nil
	}
	v, err := coalesce(m.release)
	if err != nil {
		return fmt.Errorf("the kubelink release's values: %w", err)
	}
	m.values = v
	return nil
}

// corednsCustomKey is the key kubelink-meshdns writes into
// kube-system/coredns-custom (its hook, where the cluster DNS imports it).
const corednsCustomKey = "kubelink.server"

// removeNamespace deletes the namespace when install created it (label
// part-of=kubelink), and waits until it is gone; in a namespace of others
// it deletes only what kubelink made there at run time.
func removeNamespace(ctx context.Context, g *globals, c *cluster, ns string) error {
	cur, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if cur.Labels["app.kubernetes.io/part-of"] != "kubelink" {
		g.progress("%q: namespace %s was not created by kubelinkctl install: keeping it, deleting only kubelink's objects in it", c.context, ns)
		var errs []error
		for _, name := range []string{"kubelink-tls", "wireguard", "kubelink-coredns", "kubelink-authority"} {
			if err := c.cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := c.cs.CoordinationV1().Leases(ns).Delete(ctx, "kubelink-broker", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
		// Owned by the Service (gone with it), deleted here too in case the
		// garbage collector is slow or the owner reference was refused.
		if err := c.cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, brokerEndpointSlice, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
		if err := c.cs.CoreV1().ConfigMaps(ns).Delete(ctx, "kubelink-mesh-ca", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
		sel := metav1.ListOptions{LabelSelector: managedByLabel + "=" + managedBy}
		errs = append(errs, c.cs.CoreV1().ServiceAccounts(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
			c.cs.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
			c.cs.RbacV1().RoleBindings(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
			c.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel))
		return errors.Join(errs...)
	}
	if err := c.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting namespace %s: %w", ns, err)
	}
	return waitFor(ctx, g, c, "namespace "+ns+" to go", func() (bool, string) {
		_, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "terminating"
	})
}

// cleanNodes runs nodeCleanupScript on every Ready node and returns what
// each reports left (a node that is not Ready is reported as not cleaned).
func cleanNodes(ctx context.Context, g *globals, c *cluster, ns, image string) ([]string, error) {
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var left []string
	var nodes []corev1.Node
	for _, n := range list.Items {
		if nodeReady(&n) {
			nodes = append(nodes, n)
		} else {
			left = append(left, "node "+n.Name+": not Ready, so not cleaned (run uninstall again once it is, with --router-image)")
		}
	}
	// Pods of an earlier, interrupted run go first.
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kubelink-cleanup"}
	if err := c.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, sel); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deleting the clean-up pods of an earlier run: %w", err)
	}
	if err := waitFor(ctx, g, c, "the clean-up pods of an earlier run to go", func() (bool, string) {
		pods, err := c.cs.CoreV1().Pods(ns).List(ctx, sel)
		return err == nil && len(pods.Items) == 0, fmt.Sprintf("%d pods", len(pods.Items))
	}); err != nil {
		return nil, err
	}
	g.progress("%q: cleaning %d nodes (image %s)", c.context, len(nodes), image)
	var pods []string
	for i, n := range nodes {
		name := fmt.Sprintf("kubelink-cleanup-%d", i)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{managedByLabel: managedBy, "app.kubernetes.io/name": "kubelink-cleanup"}},
			Spec: corev1.PodSpec{
				NodeName: n.Name, HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever,
				Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{
					Name: "cleanup", Image: image, Command: []string{"/bin/sh", "-c", nodeCleanupScript},
					SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}},
					VolumeMounts:    []corev1.VolumeMount{{Name: "var-lib", MountPath: "/host-var-lib"}},
				}},
				// /var/lib, so that the router's directory itself goes.
				Volumes: []corev1.Volume{{Name: "var-lib", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib", Type: ptr.To(corev1.HostPathDirectory)}}}},
			},
		}
		if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("the clean-up pod on node %s: %w", n.Name, err)
		}
		pods = append(pods, name)
	}
	if err := waitFor(ctx, g, c, "the node clean-up pods", func() (bool, string) {
		var waiting []string
		for _, p := range pods {
			pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, p, metav1.GetOptions{})
			if err != nil {
				waiting = append(waiting, p+": "+err.Error())
				continue
			}
			switch pod.Status.Phase {
			case corev1.PodSucceeded, corev1.PodFailed: // a failed one is reported from its log
			default:
				why := string(pod.Status.Phase)
				for _, s := range pod.Status.ContainerStatuses {
					if w := s.State.Waiting; w != nil && w.Reason != "" {
						why = w.Reason + ": " + w.Message
					}
				}
				waiting = append(waiting, p+" "+why)
			}
		}
		return len(waiting) == 0, strings.Join(waiting, "; ")
	}); err != nil {
		return nil, err
	}
	for i, p := range pods {
		logs, err := c.cs.CoreV1().Pods(ns).GetLogs(p, &corev1.PodLogOptions{}).Stream(ctx)
		if err != nil {
			return nil, fmt.Errorf("the log of clean-up pod %s: %w", p, err)
		}
		b, _ := io.ReadAll(logs)
		logs.Close()
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if lines[len(lines)-1] != cleanLine {
			for _, l := range lines {
				left = append(left, "node "+nodes[i].Name+": "+strings.TrimPrefix(l, "left: "))
			}
		}
	}
	return left, nil
}

// leftObjects lists the cluster's kubelink API objects after uninstall.
func leftObjects(ctx context.Context, c *cluster, keepCRDs bool) ([]string, error) {
	var left []string
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=kubelink"}
	crs, err := c.cs.RbacV1().ClusterRoles().List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, x := range crs.Items {
		left = append(left, "ClusterRole "+x.Name)
	}
	crbs, err := c.cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, x := range crbs.Items {
		if x.Labels["app.kubernetes.io/part-of"] == "kubelink" || x.Labels[managedByLabel] == managedBy {
			left = append(left, "ClusterRoleBinding "+x.Name)
		}
	}
	vaps, err := c.cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, x := range vaps.Items {
		left = append(left, "ValidatingAdmissionPolicy "+x.Name)
	}
	if !keepCRDs {
		for _, name := range kubelinkCRDs {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.c.Get(ctx, client.ObjectKey{Name: name}, crd); err == nil {
				left = append(left, "CRD "+name)
			}
		}
	}
	if cm, err := c.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err == nil && strings.Contains(cm.Data["Corefile"], meshZone+":53 {") {
		left = append(left, "the "+meshZone+" zone in kube-system/coredns")
	}
	return left, nil
}

// waitFor polls done every second, printing its state when it changes.
func waitFor(ctx context.Context, g *globals, c *cluster, what string, done func() (bool, string)) error {
	start, last := time.Now(), ""
	for {
		ok, state := done()
		if ok {
			return nil
		}
		if state != last {
			g.progress("%q: waiting for %s: %s", c.context, what, state)
			last = state
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s (%s)", time.Since(start).Round(time.Second), what, state)
		case <-time.After(time.Second):
		}
	}
}
