package kubeflags

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Watch is a kind WatchAndSyncFiltered watches. Relevant decides which
// updates kick the controller (nil: every update); adds and deletes always
// kick. A controller that writes the status of a kind must not re-run a
// whole pass on every write of its own: with a pass per link's status write
// the broker ran passes back to back at 250 links, and each health-figure
// write woke every router and mesh DNS of the cluster (issue #33).
type Watch struct {
	Object   client.Object
	Relevant func(old, new any) bool
}

// SpecChanged is Relevant for kinds whose spec is versioned by
// metadata.generation (custom resources with a status subresource): an
// update matters when the generation, labels, annotations, finalizers or
// deletion timestamp changed, and not when only the status did.
func SpecChanged(old, new any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := new.(metav1.Object)
	if !ok1 || !ok2 {
		return true
	}
	return o.GetGeneration() != n.GetGeneration() || !maps.Equal(o.GetLabels(), n.GetLabels()) ||
		!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) || !slices.Equal(o.GetFinalizers(), n.GetFinalizers()) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
}

// ServiceChanged is Relevant for Services, whose generation the API server
// does not keep: the spec, labels or annotations changed, or the deletion
// began; a status-only update (a load balancer's) is not relevant.
func ServiceChanged(old, new any) bool {
	o, ok1 := old.(*corev1.Service)
	n, ok2 := new.(*corev1.Service)
	if !ok1 || !ok2 {
		return true
	}
	return !equality.Semantic.DeepEqual(o.Spec, n.Spec) || SpecChanged(old, new)
}

// KubeLinkChangedBeyondHealth is Relevant for controllers that read a
// KubeLink's status (the gateway, the state, what the peer advertised):
// every update but one that changed only status.health (the RTT and
// traffic figures the broker refreshes every --health-status-interval) and
// the object's bookkeeping (resourceVersion, managedFields).
func KubeLinkChangedBeyondHealth(old, new any) bool {
	o, ok1 := old.(*v1alpha1.KubeLink)
	n, ok2 := new.(*v1alpha1.KubeLink)
	if !ok1 || !ok2 {
		return true
	}
	strip := func(kl *v1alpha1.KubeLink) *v1alpha1.KubeLink {
		c := kl.DeepCopy()
		c.ResourceVersion, c.ManagedFields, c.Status.Health = "", nil, nil
		return c
	}
	return !equality.Semantic.DeepEqual(strip(o), strip(n))
}
