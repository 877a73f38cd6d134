package broker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
)

// msgUnsupported explains why node mode cannot serve MeshServices: their DNAT
// must apply only to traffic from the mesh device, which in node mode would
// share the node's nat table with kube-proxy and the CNI.
const msgUnsupported = "mesh services are supported only in pod mode (the broker's device in its own pod)"

// syncMeshServices validates every MeshService against the model, its
// Service and the targets a MeshService may have (mesh.TargetPolicy),
// refuses a second binding of an address and port (the older MeshService
// keeps it; the newer is Stale naming it), writes the status and returns
// the bindings to apply.
func (b *Broker) syncMeshServices(ctx context.Context, m *mesh.Model) ([]*mesh.ServiceBinding, error) {
	var list v1alpha1.MeshServiceList
	if err := b.kube.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing MeshServices: %w", err)
	}
	// Oldest first, so that a conflict always goes to the older one.
	items := list.Items
	sort.SliceStable(items, func(i, j int) bool {
		ti, tj := items[i].CreationTimestamp.Time, items[j].CreationTimestamp.Time
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return items[i].Namespace+"/"+items[i].Name < items[j].Namespace+"/"+items[j].Name
	})
	pol := b.targetPolicy(ctx, m)
	var bindings []*mesh.ServiceBinding
	var errs []error
	now := time.Now()
	for i := range items {
		ms := &items[i]
		if !b.servesService(ms, m) {
			continue
		}
		st := v1alpha1.MeshServiceStatus{State: v1alpha1.StateOk, ObservedGeneration: ms.Generation}
		if !b.rm.PodMode || b.plane.Transport() == mesh.TransportNone {
			st.State, st.Message = v1alpha1.StateUnsupported, msgUnsupported
		} else if bnd, err := m.BindMeshService(ms, b.serviceInfo(ctx, ms), pol); err != nil {
			st.State, st.Message = v1alpha1.StateInvalid, err.Error()
		} else if c := conflictOf(bnd, bindings); c != "" {
			st.State, st.Message = v1alpha1.StateStale, c+": delete or change one of the two"
		} else {
			st.Message = "bound"
			st.Targets = describeBinding(bnd)
			bindings = append(bindings, bnd)
		}
		if err := b.writeServiceStatus(ctx, ms, st, now); err != nil {
			errs = append(errs, err)
		}
	}
	return bindings, errors.Join(errs...)
}

// conflictOf is the first conflict of b with an accepted binding.
func conflictOf(b *mesh.ServiceBinding, accepted []*mesh.ServiceBinding) string {
	for _, o := range accepted {
		if c := b.Conflict(o); c != "" {
			return c
		}
	}
	return ""
}

// targetPolicy is where MeshServices may send here: the pod network, and
// the Services of their namespace in the service network (--service-cidr,
// else the cidr of a LocalLink). The Services are listed once per pass,
// when the first address inside the service network is checked.
func (b *Broker) targetPolicy(ctx context.Context, m *mesh.Model) mesh.TargetPolicy {
	pol := mesh.TargetPolicy{PodCIDR: b.cfg.PodCIDR, ServiceCIDR: b.cfg.ServiceCIDR}
	if !pol.ServiceCIDR.IsValid() {
		for _, ms := range m.Meshes {
			if ms.Local.ServiceCIDR.IsValid() {
				pol.ServiceCIDR = ms.Local.ServiceCIDR
				break
			}
		}
	}
	var byIP map[netip.Addr][2]string
	pol.ServiceAt = func(a netip.Addr) (string, string, bool) {
		if byIP == nil {
			byIP = map[netip.Addr][2]string{}
			var svcs corev1.ServiceList
			if err := b.kube.List(ctx, &svcs); err != nil {
				b.log.Warn("listing Services for the MeshServices' targets", "err", err)
			}
			for _, s := range svcs.Items {
				for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
					if a, err := netip.ParseAddr(ip); err == nil {
						byIP[a] = [2]string{s.Namespace, s.Name}
					}
				}
			}
		}
		s, ok := byIP[a]
		return s[0], s[1], ok
	}
	return pol
}

// servesService tells whether a MeshService belongs to a served mesh. The
// model holds only served meshes: a meshAddress inside one of them, or a
// named mesh that is served, makes the MeshService ours.
func (b *Broker) servesService(ms *v1alpha1.MeshService, m *mesh.Model) bool {
	s := b.cfg.Served
	if s.All() {
		return true
	}
	if a, err := netip.ParseAddr(ms.Spec.MeshAddress); err == nil {
		_, ok := m.MeshForAddress(a)
		return ok
	}
	return s.names[mesh.MeshDisplayName(ms.Spec.Mesh)]
}

// serviceInfo reads the Service a MeshService names (nil if none or missing).
func (b *Broker) serviceInfo(ctx context.Context, ms *v1alpha1.MeshService) *mesh.ServiceInfo {
	if ms.Spec.Service == "" {
		return nil
	}
	var svc corev1.Service
	if err := b.kube.Get(ctx, client.ObjectKey{Namespace: ms.Namespace, Name: ms.Spec.Service}, &svc); err != nil {
		return nil
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return nil // headless or not yet allocated
	}
	info := &mesh.ServiceInfo{ClusterIP: ip, Ports: map[string]int32{}}
	for _, p := range svc.Spec.Ports {
		info.Ports[p.Name] = p.Port
	}
	return info
}

func describeBinding(b *mesh.ServiceBinding) string {
	if len(b.Ports) == 0 {
		return fmt.Sprintf("%s forwards to %v", b.Address, b.Targets)
	}
	s := ""
	for i, p := range b.Ports {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s:%d/%s -> %v", b.Address, p.Port, p.Protocol, p.Targets)
	}
	return s
}

func (b *Broker) writeServiceStatus(ctx context.Context, ms *v1alpha1.MeshService, st v1alpha1.MeshServiceStatus, now time.Time) error {
	st.Conditions = append([]metav1.Condition(nil), ms.Status.Conditions...)
	ready := metav1.ConditionFalse
	if st.State == v1alpha1.StateOk {
		ready = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: ready, Reason: st.State,
		Message: st.Message, ObservedGeneration: ms.Generation, LastTransitionTime: metav1.NewTime(now)})
	if equality.Semantic.DeepEqual(ms.Status, st) {
		return nil
	}
	orig := ms.DeepCopy()
	old := ms.Status.State
	ms.Status = st
	if err := b.kube.Status().Patch(ctx, ms, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("status of MeshService %s/%s: %w", ms.Namespace, ms.Name, err)
	}
	if old != st.State {
		typ := corev1.EventTypeNormal
		if st.State != v1alpha1.StateOk {
			typ = corev1.EventTypeWarning
		}
		b.events.recorder.Eventf(ms, typ, st.State, "%s: %s", st.State, st.Message)
	}
	return nil
}
