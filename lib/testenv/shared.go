package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kubelink/kubelink/lib/apis/kubelink/crds"
)

// Shared control planes: a kube-apiserver costs about 3 CPU-seconds to
// start, more than most tests spend using it, and a package like
// lib/clusterlab starts dozens. SharedControlPlanesForTest hands a test
// planes that earlier tests of the same process used, after Reset emptied
// them, and takes them back when the test ends. A plane whose reset cannot
// prove it empty (a changed CRD, a namespace stuck terminating, an object
// that would not go) is stopped instead, never handed out again.
var shared struct {
	mu   sync.Mutex
	idle map[string][]*ControlPlane // by ServiceCIDR
}

// SharedControlPlanesForTest returns started control planes with the
// given names and service CIDRs (one each), reused from earlier tests where
// one with the same service CIDR is idle, else started. When the test ends
// each is reset and becomes idle again, or is stopped if the reset fails
// or the test failed.
// A package that uses it calls StopSharedControlPlanes from TestMain.
func SharedControlPlanesForTest(t testing.TB, names, serviceCIDRs []string) []*ControlPlane {
	t.Helper()
	if len(names) != len(serviceCIDRs) {
		t.Fatalf("SharedControlPlanesForTest: %d names, %d service CIDRs", len(names), len(serviceCIDRs))
	}
	planes := make([]*ControlPlane, len(names))
	var fresh []*ControlPlane
	shared.mu.Lock()
	for i := range names {
		if idle := shared.idle[serviceCIDRs[i]]; len(idle) > 0 {
			planes[i] = idle[len(idle)-1]
			shared.idle[serviceCIDRs[i]] = idle[:len(idle)-1]
			planes[i].mu.Lock()
			planes[i].Name = names[i]
			planes[i].mu.Unlock()
			continue
		}
		planes[i] = &ControlPlane{Name: names[i], ServiceCIDR: serviceCIDRs[i]}
		fresh = append(fresh, planes[i])
	}
	shared.mu.Unlock()
	t.Cleanup(func() {
		for _, cp := range planes {
			if t.Failed() {
				// what the failure left is the failing test's alone
				if err := cp.Stop(); err != nil {
					t.Errorf("%v", err)
				}
				continue
			}
			giveBack(t, cp)
		}
	})
	if len(fresh) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		begin := time.Now()
		if err := errors.Join(concurrently(fresh, func(cp *ControlPlane) error { return cp.Start(ctx) })...); err != nil {
			t.Fatalf("%v", err)
		}
		t.Logf("%d control planes started in %s, %d reused", len(fresh), time.Since(begin).Round(time.Millisecond), len(planes)-len(fresh))
	} else {
		t.Logf("%d control planes reused", len(planes))
	}
	return planes
}

// giveBack resets cp and makes it idle, or stops it.
func giveBack(t testing.TB, cp *ControlPlane) {
	if cp.Config() == nil {
		return // never started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cp.Reset(ctx); err != nil {
		t.Logf("%s: not reused: %v", cp.name(), err)
		if err := cp.Stop(); err != nil {
			t.Errorf("%v", err)
		}
		return
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.idle == nil {
		shared.idle = map[string][]*ControlPlane{}
	}
	shared.idle[cp.ServiceCIDR] = append(shared.idle[cp.ServiceCIDR], cp)
}

// StopSharedControlPlanes stops every idle shared control plane (at the end
// of TestMain; planes still in use stop with their test).
func StopSharedControlPlanes() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var errs []error
	for _, idle := range shared.idle {
		errs = append(errs, concurrently(idle, (*ControlPlane).Stop)...)
	}
	shared.idle = nil
	return errors.Join(errs...)
}

// RunStoppingShared runs m's tests, then StopSharedControlPlanes, and
// returns the exit code: what the TestMain of a package that uses shared
// control planes (clusterlab.New does) passes to os.Exit. A failed stop
// fails the run, so that a leak is seen.
func RunStoppingShared(m *testing.M) int {
	code := m.Run()
	if err := StopSharedControlPlanes(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// What Reset keeps: the API server's own objects.
var (
	systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}
	// groups whose objects the API server bootstraps and tests do not make
	keptGroups = []string{"apiregistration.k8s.io", "flowcontrol.apiserver.k8s.io", "scheduling.k8s.io", "apiextensions.k8s.io", "internal.apiserver.k8s.io"}
	// the Service kubernetes's IP and CIDR objects are the API server's
	keptResources = []string{"namespaces", "ipaddresses", "servicecidrs"}
)

// Reset deletes every object a test can have made: in every namespace but
// the system ones (in default all but the Service kubernetes and its
// endpoints), and the cluster-scoped ones (KubeLinks and other custom
// resources, RBAC objects that are not the bootstrap policy, admission
// policies, CSRs, nodes), finalizers removed first. Namespaces stay (no
// namespace controller runs to finish a deletion). It fails, and the plane
// must not be reused, when a CRD differs from the embedded ones, a
// namespace is terminating, or an object is still there afterwards.
func (cp *ControlPlane) Reset(ctx context.Context) error {
	cfg := cp.Config()
	if cfg == nil {
		return fmt.Errorf("%s: not started", cp.name())
	}
	cfg.QPS, cfg.Burst = -1, 0             // no client-side rate limit
	cfg.WarningHandler = rest.NoWarnings{} // listing Endpoints warns of their deprecation
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	if err := cp.checkCRDs(ctx, dyn); err != nil {
		return err
	}
	nss, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, ns := range nss.Items {
		if ns.GetDeletionTimestamp() != nil {
			return fmt.Errorf("namespace %s is terminating", ns.GetName())
		}
	}
	lists, err := disc.ServerPreferredResources()
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	var left []string
	for pass := 0; pass < 2; pass++ {
		left = left[:0]
		for _, l := range lists {
			gv, err := schema.ParseGroupVersion(l.GroupVersion)
			if err != nil || slices.Contains(keptGroups, gv.Group) {
				continue
			}
			for _, r := range l.APIResources {
				if strings.Contains(r.Name, "/") || slices.Contains(keptResources, r.Name) ||
					!slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "delete") {
					continue
				}
				res := dyn.Resource(gv.WithResource(r.Name))
				objs, err := res.List(ctx, metav1.ListOptions{})
				if err != nil {
					return fmt.Errorf("listing %s: %w", r.Name, err)
				}
				for _, o := range objs.Items {
					if keep(r.Name, o.GetNamespace(), o.GetName(), o.GetLabels()) {
						continue
					}
					ri := dynamic.ResourceInterface(res)
					if r.Namespaced {
						ri = res.Namespace(o.GetNamespace())
					}
					if pass == 1 {
						left = append(left, fmt.Sprintf("%s %s/%s", r.Name, o.GetNamespace(), o.GetName()))
						continue
					}
					if len(o.GetFinalizers()) > 0 {
						if _, err := ri.Patch(ctx, o.GetName(), types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
							return fmt.Errorf("removing the finalizers of %s %s/%s: %w", r.Name, o.GetNamespace(), o.GetName(), err)
						}
					}
					zero := int64(0)
					if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
						return fmt.Errorf("deleting %s %s/%s: %w", r.Name, o.GetNamespace(), o.GetName(), err)
					}
				}
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still there after the reset: %s", strings.Join(left, ", "))
	}
	return nil
}

// keep tells the API server's own objects from a test's.
func keep(resource, ns, name string, labels map[string]string) bool {
	switch {
	case slices.Contains(systemNamespaces, ns):
		return true
	case ns == "default" && name == "kubernetes" && (resource == "services" || resource == "endpoints" || resource == "endpointslices"):
		return true
	case labels["kubernetes.io/bootstrapping"] == "rbac-defaults":
		return true
	case strings.HasPrefix(name, "system:") && strings.HasPrefix(resource, "cluster"):
		return true
	}
	return false
}

// checkCRDs: the CRDs are exactly the embedded ones, never changed since
// they were installed (a test may replace a schema).
func (cp *ControlPlane) checkCRDs(ctx context.Context, dyn dynamic.Interface) error {
	want, err := crds.CRDs()
	if err != nil {
		return err
	}
	var names []string
	for _, c := range want {
		names = append(names, c.Name)
	}
	list, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(list.Items) != len(names) {
		return fmt.Errorf("%d CRDs, want the %d embedded ones", len(list.Items), len(names))
	}
	for _, c := range list.Items {
		if !slices.Contains(names, c.GetName()) || c.GetGeneration() != 1 {
			return fmt.Errorf("CRD %s (generation %d) is not as installed", c.GetName(), c.GetGeneration())
		}
	}
	return nil
}
