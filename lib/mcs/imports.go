package mcs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// The import side: for every name exported by a cluster of the mesh (the
// peers' records in ImportsConfigMap, this cluster's own record under its
// own name), in a namespace that exists here, a ServiceImport of that name,
// a selector-less Service (the derived Service, whose ClusterIP is the
// clusterset IP) and one EndpointSlice per exporting cluster pointing at
// that cluster's ClusterIP, which the mesh routes. kube-proxy spreads the
// clusterset IP over the slices' endpoints, i.e. over the clusters.
const (
	// ManagedBy is the value of app.kubernetes.io/managed-by on the
	// Services, EndpointSlices and ServiceImports kubelink-mcs makes, and
	// of endpointslice.kubernetes.io/managed-by on its slices.
	ManagedBy = "kubelink-mcs"
	// DerivedPrefix begins the name of every derived Service.
	DerivedPrefix       = "kubelink-mcs-"
	labelManagedBy      = "app.kubernetes.io/managed-by"
	labelSliceManagedBy = "endpointslice.kubernetes.io/managed-by"
)

// DerivedName is the name of the Service behind the ServiceImport name.
func DerivedName(name string) string {
	h := sha256.Sum256([]byte(name))
	return DerivedPrefix + hex.EncodeToString(h[:])[:10]
}

// source is one cluster's export of a name.
type source struct {
	cluster string
	e       Export
	// local: this cluster's own export. Its slice holds the Service's own
	// endpoints (the pods), not its ClusterIP: kube-proxy does not
	// translate a packet twice, so a ClusterIP of this cluster as the
	// endpoint of another Service would lead nowhere.
	local bool
}

// desiredImport is what the exports of one name across the clusters make.
type desiredImport struct {
	namespace, name string
	typ             mcsv1beta1.ServiceImportType
	ports           []Port
	affinity        corev1.ServiceAffinity
	affinityTimeout int32
	sources         []source // sorted by cluster
}

// plan merges every cluster's exports by namespace and name. Where the
// clusters disagree on the type, the oldest export's wins (KEP-1645) and
// the others are left out; the ports are the union, where a later port
// reusing an earlier one's name or number is left out; the session
// affinity is the oldest export's. conflictsOf reports the disagreements.
func plan(self string, own Record, im Imports) []*desiredImport {
	by := map[string][]source{}
	add := func(cluster string, exports []Export, local bool) {
		for _, e := range exports {
			by[e.Key()] = append(by[e.Key()], source{cluster, e, local})
		}
	}
	if self != "" {
		add(self, own.Exports, true)
	}
	for _, c := range im.Clusters {
		add(c.Cluster, c.Exports, false)
	}
	var out []*desiredImport
	for _, srcs := range by {
		sortOldestFirst(srcs)
		oldest := srcs[0].e
		d := &desiredImport{namespace: oldest.Namespace, name: oldest.Name, typ: oldest.Type,
			affinity: oldest.SessionAffinity, affinityTimeout: oldest.SessionAffinityTimeout}
		seen, named := map[string]bool{}, map[string]bool{}
		for _, s := range srcs {
			if s.e.Type != d.typ || slices.ContainsFunc(d.sources, func(o source) bool { return o.cluster == s.cluster }) {
				continue
			}
			d.sources = append(d.sources, s)
			for _, p := range s.e.Ports {
				// the first (oldest) definition of a number or a name wins:
				// a later port that reuses either is a PortConflict, left out
				k := fmt.Sprintf("%s/%d", p.Protocol, p.Port)
				if seen[k] || (p.Name != "" && named[p.Name]) {
					continue
				}
				seen[k], named[p.Name] = true, true
				d.ports = append(d.ports, p)
			}
		}
		slices.SortFunc(d.sources, func(a, b source) int { return strings.Compare(a.cluster, b.cluster) })
		slices.SortFunc(d.ports, func(a, b Port) int {
			return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(string(a.Protocol), string(b.Protocol)))
		})
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *desiredImport) int {
		return strings.Compare(a.namespace+"/"+a.name, b.namespace+"/"+b.name)
	})
	return out
}

// readImports reads the broker's imports (none yet: empty).
func (c *Controller) readImports(ctx context.Context) (Imports, error) {
	var cm corev1.ConfigMap
	err := c.read.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: ImportsConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		return Imports{}, nil
	case err != nil:
		return Imports{}, fmt.Errorf("reading the imports %s/%s: %w", c.cfg.Namespace, ImportsConfigMap, err)
	}
	return DecodeImports([]byte(cm.Data[ImportsKey]))
}

// self is this cluster's name in the imports ("": not named yet).
func (im Imports) self() string {
	if len(im.Self) > 0 {
		return im.Self[0].Cluster
	}
	return ""
}

// portName is the name of a port on the derived Service and its slices:
// the exported name, else protocol and number (a Service of several ports
// needs names, and the slices' ports are matched by name).
func portName(p Port) string {
	if p.Name != "" {
		return p.Name
	}
	return strings.ToLower(string(p.Protocol)) + "-" + fmt.Sprint(p.Port)
}

// syncImports makes the ServiceImports, derived Services and EndpointSlices
// match the exports of every cluster, and removes those of names no longer
// exported. It returns the number of ClusterSetIP imports, and the
// acknowledgements for the record ("<cluster>/<namespace>/<name>" of each
// other cluster's export imported).
func (c *Controller) syncImports(ctx context.Context, own Record, im Imports) (int, []string, error) {
	want := plan(im.self(), own, im)
	var errs []error
	// keep: the names whose ServiceImport stays; derived: those whose
	// derived Service and slices stay (ClusterSetIP only).
	keep, derived := map[string]bool{}, map[string]bool{}
	imported := 0
	var acks []string
	for _, d := range want {
		key := d.namespace + "/" + d.name
		var err error
		if d.typ == mcsv1beta1.ClusterSetIP {
			err = c.ensureImport(ctx, d)
		} else {
			// Headless: the mesh routes service networks, not the pods'
			// addresses a headless name answers. The ServiceImport says so
			// (Ready False), and has no slices, so DNS answers no address
			// that would not work.
			err = c.ensureServiceImport(ctx, d, "")
		}
		if err != nil {
			if apierrors.IsNotFound(err) && strings.Contains(err.Error(), "namespaces") {
				continue // no such namespace here: nothing to import into (namespace sameness)
			}
			errs = append(errs, fmt.Errorf("import %s: %w", key, err))
		}
		keep[key] = true
		if d.typ == mcsv1beta1.ClusterSetIP {
			derived[key] = true
			imported++
			if err == nil {
				for _, src := range d.sources {
					if !src.local {
						acks = append(acks, src.cluster+"/"+key)
					}
				}
			}
		}
	}
	errs = append(errs, c.removeStale(ctx, keep, derived))
	return imported, acks, errors.Join(errs...)
}

// ReasonPodNetworksNotRouted is the reason of a Headless ServiceImport's
// Ready False: the exporting clusters' pod addresses are not reachable
// through kubelink.
const ReasonPodNetworksNotRouted = "PodNetworksNotRouted"

// readyCondition is the ServiceImport's Ready condition: True for a
// ClusterSetIP import at its IP, False for a Headless one.
func readyCondition(d *desiredImport, ip string, generation int64) metav1.Condition {
	var clusters []string
	for _, s := range d.sources {
		clusters = append(clusters, s.cluster)
	}
	if d.typ != mcsv1beta1.ClusterSetIP {
		return metav1.Condition{Type: string(mcsv1beta1.ServiceImportConditionReady), Status: metav1.ConditionFalse,
			Reason: ReasonPodNetworksNotRouted, ObservedGeneration: generation,
			Message: fmt.Sprintf("exported as Headless by %s: its pod addresses are not reachable through kubelink (the mesh routes service networks, not pod networks), so no address is answered; export a Service with a ClusterIP to reach it across clusters", strings.Join(clusters, ", "))}
	}
	return metav1.Condition{Type: string(mcsv1beta1.ServiceImportConditionReady), Status: metav1.ConditionTrue,
		Reason: string(mcsv1beta1.ServiceImportReasonReady), ObservedGeneration: generation,
		Message: fmt.Sprintf("clusterset IP %s reaches %s through the mesh", ip, strings.Join(clusters, ", "))}
}

// ensureImport writes the derived Service, its slices and the
// ServiceImport of one name.
func (c *Controller) ensureImport(ctx context.Context, d *desiredImport) error {
	derived := DerivedName(d.name)
	labels := map[string]string{labelManagedBy: ManagedBy, mcsv1beta1.LabelServiceName: d.name}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: d.namespace, Name: derived, Labels: labels}}
	var ports []corev1.ServicePort
	for _, p := range d.ports {
		ports = append(ports, corev1.ServicePort{Name: portName(p), Protocol: p.Protocol, Port: p.Port,
			AppProtocol: ptrOrNil(p.AppProtocol)})
	}
	var cur corev1.Service
	err := c.read.Get(ctx, client.ObjectKeyFromObject(svc), &cur)
	switch {
	case apierrors.IsNotFound(err):
		svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports, SessionAffinity: d.affinity}
		if err := c.api.Create(ctx, svc); err != nil {
			return c.behind(err)
		}
		cur = *svc
	case err != nil:
		return err
	default:
		if cur.Labels[labelManagedBy] != ManagedBy {
			return fmt.Errorf("the Service %s/%s exists and is not kubelink-mcs's: rename it, it holds the name of the import's Service", d.namespace, derived)
		}
		if !equality.Semantic.DeepEqual(cur.Spec.Ports, withTargetPorts(ports, cur.Spec.Ports)) || cur.Spec.SessionAffinity != cmp.Or(d.affinity, corev1.ServiceAffinityNone) {
			cur.Spec.Ports, cur.Spec.SessionAffinity = ports, d.affinity
			if err := c.api.Update(ctx, &cur); err != nil {
				return c.behind(err)
			}
		}
	}
	if err := c.ensureSlices(ctx, d, derived); err != nil {
		return err
	}
	return c.ensureServiceImport(ctx, d, cur.Spec.ClusterIP)
}

// behind turns the error of a write that the cache was behind for (the
// object exists already, or changed meanwhile) into another pass at once.
func (c *Controller) behind(err error) error {
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		c.loop.Kick()
		return nil
	}
	return err
}

func ptrOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return ptr.To(s)
}

// withTargetPorts gives want the target ports the API server defaulted in
// cur, for comparison.
func withTargetPorts(want, cur []corev1.ServicePort) []corev1.ServicePort {
	out := slices.Clone(want)
	for i := range out {
		if i < len(cur) && cur[i].Name == out[i].Name {
			out[i].TargetPort, out[i].NodePort = cur[i].TargetPort, cur[i].NodePort
		}
	}
	return out
}

// ensureSlices keeps one EndpointSlice per exporting cluster, pointing at
// its ClusterIP, and removes the others of this import.
func (c *Controller) ensureSlices(ctx context.Context, d *desiredImport, derived string) error {
	var list discoveryv1.EndpointSliceList
	if err := c.read.List(ctx, &list, client.InNamespace(d.namespace), client.MatchingLabels{discoveryv1.LabelServiceName: derived, labelSliceManagedBy: ManagedBy}); err != nil {
		return err
	}
	have := map[string]*discoveryv1.EndpointSlice{}
	for i := range list.Items {
		have[list.Items[i].Name] = &list.Items[i]
	}
	var errs []error
	for _, s := range d.sources {
		ip, err := netip.ParseAddr(s.e.ClusterIP)
		if err != nil {
			continue // CheckRecord let no such export through
		}
		family := discoveryv1.AddressTypeIPv4
		if ip.Is6() {
			family = discoveryv1.AddressTypeIPv6
		}
		name := derived + "-" + s.cluster
		want := discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: d.namespace, Name: name, Labels: map[string]string{
				discoveryv1.LabelServiceName: derived, labelSliceManagedBy: ManagedBy, labelManagedBy: ManagedBy,
				mcsv1beta1.LabelServiceName: d.name, mcsv1beta1.LabelSourceCluster: s.cluster}},
			AddressType: family,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
		for _, p := range s.e.Ports {
			want.Ports = append(want.Ports, discoveryv1.EndpointPort{Name: ptr.To(portName(p)), Protocol: ptr.To(p.Protocol), Port: ptr.To(p.Port),
				AppProtocol: ptrOrNil(p.AppProtocol)})
		}
		if s.local {
			eps, ports, err := c.localEndpoints(ctx, d.namespace, d.name, family, s.e.Ports)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			want.Endpoints, want.Ports = eps, ports
		}
		cur, ok := have[name]
		delete(have, name)
		switch {
		case !ok:
			errs = append(errs, c.behind(c.api.Create(ctx, &want)))
		case cur.AddressType != want.AddressType:
			errs = append(errs, c.api.Delete(ctx, cur), c.api.Create(ctx, &want))
		case !equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) || !equality.Semantic.DeepEqual(cur.Ports, want.Ports) || !equality.Semantic.DeepEqual(cur.Labels, want.Labels):
			cur.Endpoints, cur.Ports, cur.Labels = want.Endpoints, want.Ports, want.Labels
			errs = append(errs, c.behind(c.api.Update(ctx, cur)))
		}
	}
	for _, stale := range have {
		if err := c.api.Delete(ctx, stale); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// localEndpoints are the endpoints of this cluster's Service ns/name of
// one address family, from its own EndpointSlices, with the ports named as
// on the derived Service and numbered as on the pods (the target ports).
func (c *Controller) localEndpoints(ctx context.Context, ns, name string, family discoveryv1.AddressType, exported []Port) ([]discoveryv1.Endpoint, []discoveryv1.EndpointPort, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.read.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return nil, nil, fmt.Errorf("the EndpointSlices of Service %s/%s: %w", ns, name, err)
	}
	var eps []discoveryv1.Endpoint
	var ports []discoveryv1.EndpointPort
	for _, sl := range list.Items {
		if sl.AddressType != family || sl.Labels[labelSliceManagedBy] == ManagedBy {
			continue
		}
		for _, e := range sl.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			eps = append(eps, discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		if ports != nil {
			continue
		}
		for _, p := range exported {
			for _, sp := range sl.Ports {
				if ptr.Deref(sp.Name, "") == p.Name && ptr.Deref(sp.Protocol, corev1.ProtocolTCP) == p.Protocol && sp.Port != nil {
					ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(portName(p)), Protocol: ptr.To(p.Protocol), Port: sp.Port,
						AppProtocol: ptrOrNil(p.AppProtocol)})
				}
			}
		}
	}
	slices.SortFunc(eps, func(a, b discoveryv1.Endpoint) int {
		return strings.Compare(strings.Join(a.Addresses, ","), strings.Join(b.Addresses, ","))
	})
	return eps, ports, nil
}

// ensureServiceImport writes the ServiceImport's spec (type, the clusterset
// IP, ports, affinity) and status (the exporting clusters).
func (c *Controller) ensureServiceImport(ctx context.Context, d *desiredImport, ip string) error {
	spec := mcsv1beta1.ServiceImportSpec{Type: d.typ, SessionAffinity: d.affinity}
	if ip != "" && ip != corev1.ClusterIPNone {
		spec.IPs = []string{ip}
	}
	for _, p := range d.ports {
		spec.Ports = append(spec.Ports, mcsv1beta1.ServicePort{Name: portName(p), Protocol: p.Protocol, Port: p.Port, AppProtocol: ptrOrNil(p.AppProtocol)})
	}
	if d.affinity == corev1.ServiceAffinityClientIP && d.affinityTimeout > 0 {
		spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(d.affinityTimeout)}}
	}
	var clusters []mcsv1beta1.ClusterStatus
	for _, s := range d.sources {
		clusters = append(clusters, mcsv1beta1.ClusterStatus{Cluster: s.cluster})
	}
	var si mcsv1beta1.ServiceImport
	err := c.read.Get(ctx, client.ObjectKey{Namespace: d.namespace, Name: d.name}, &si)
	switch {
	case apierrors.IsNotFound(err):
		si = mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: d.namespace, Name: d.name,
			Labels: map[string]string{labelManagedBy: ManagedBy}}, Spec: spec}
		if err := c.api.Create(ctx, &si); err != nil {
			return c.behind(err)
		}
	case err != nil:
		return err
	default:
		if si.Labels[labelManagedBy] != ManagedBy {
			return fmt.Errorf("the ServiceImport %s/%s exists and is not kubelink-mcs's (another MCS implementation?): left alone", d.namespace, d.name)
		}
		if !equality.Semantic.DeepEqual(si.Spec, spec) {
			si.Spec = spec
			if err := c.api.Update(ctx, &si); err != nil {
				return c.behind(err)
			}
		}
	}
	condChanged := setCondition(&si.Status.Conditions, readyCondition(d, ip, si.Generation), c.now())
	if condChanged || !equality.Semantic.DeepEqual(si.Status.Clusters, clusters) {
		si.Status.Clusters = clusters
		if err := c.api.Status().Update(ctx, &si); err != nil {
			return c.behind(err)
		}
	}
	return nil
}

// removeStale deletes the ServiceImports of kubelink-mcs whose name is no
// longer imported (keep: namespace/name), and the derived Services and
// slices of names no longer imported as ClusterSetIP (derived).
func (c *Controller) removeStale(ctx context.Context, keep, derived map[string]bool) error {
	mine := client.MatchingLabels{labelManagedBy: ManagedBy}
	var errs []error
	del := func(o client.Object) {
		if err := c.api.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	var sis mcsv1beta1.ServiceImportList
	if err := c.read.List(ctx, &sis, mine); err != nil {
		return err
	}
	for i := range sis.Items {
		if !keep[sis.Items[i].Namespace+"/"+sis.Items[i].Name] {
			del(&sis.Items[i])
		}
	}
	var svcs corev1.ServiceList
	if err := c.read.List(ctx, &svcs, mine); err != nil {
		return err
	}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		if !derived[s.Namespace+"/"+s.Labels[mcsv1beta1.LabelServiceName]] {
			del(s)
		}
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.read.List(ctx, &slices, client.MatchingLabels{labelSliceManagedBy: ManagedBy}); err != nil {
		return err
	}
	for i := range slices.Items {
		s := &slices.Items[i]
		if !derived[s.Namespace+"/"+s.Labels[mcsv1beta1.LabelServiceName]] {
			del(s)
		}
	}
	return errors.Join(errs...)
}
