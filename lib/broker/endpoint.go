package broker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	discoveryclient "k8s.io/client-go/kubernetes/typed/discovery/v1"
)

// The active broker's EndpointSlice (--active-endpoint-slice). The Service
// through which peers reach the gateway has no selector; the broker that
// holds the Lease points one EndpointSlice of that Service at its own pod.
// So every healthy replica can be Ready (a PodDisruptionBudget counts the
// standby, a rolling update replaces one replica at a time) while peers
// still reach only the active one, and a takeover moves them as soon as the
// new holder has its data plane up, without a readiness probe in between.
//
// Writes follow the Lease: a slice is written only while the Lease was
// confirmed within --lease-renew-deadline (shorter than the lease duration,
// after which another broker may take it), and the requests end by then,
// so a holder that comes back from a cut-off API server never points the
// Service back at itself after another broker took over.

// Labels of the active broker's EndpointSlice: the Service it belongs to,
// and the controller that writes it (the EndpointSlice controllers leave
// slices of other managers alone).
const (
	endpointSliceManagedBy = "kubelink-broker"
)

// endpointPublisher writes and clears the active broker's EndpointSlice.
type endpointPublisher struct {
	slices    discoveryclient.EndpointSliceInterface
	namespace string
	name      string // the EndpointSlice
	service   string // the Service it serves
	// serviceUID returns the Service's UID (its owner, so that the slice
	// goes with the Service).
	serviceUID func(ctx context.Context) (types.UID, error)
	podIP      netip.Addr
	podName    string
	podUID     types.UID
	nodeName   string
	ports      []discoveryv1.EndpointPort
	// leaseFresh returns until when the Lease is surely still this
	// broker's (its last confirmation plus the renew deadline) and whether
	// that is ahead; nil (no leader election) means always.
	leaseFresh func() (time.Time, bool)
	// recheck is how often a published slice is read back (another
	// writer, a deletion).
	recheck time.Duration
	now     func() time.Time

	mu        sync.Mutex
	published time.Time // the last write or check that found it right
}

// errLeaseUnconfirmed: the slice is not written while the Lease is not
// confirmed (a cut-off API server, or another holder).
var errLeaseUnconfirmed = errors.New("the Lease is not confirmed: the EndpointSlice is left as it is")

// want is the slice that points the Service at this pod.
func (p *endpointPublisher) want(owner types.UID) *discoveryv1.EndpointSlice {
	ready, serving, terminating := true, true, false
	addrType := discoveryv1.AddressTypeIPv4
	if p.podIP.Is6() {
		addrType = discoveryv1.AddressTypeIPv6
	}
	ep := discoveryv1.Endpoint{
		Addresses:  []string{p.podIP.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.namespace, Name: p.podName, UID: p.podUID},
	}
	if p.nodeName != "" {
		// externalTrafficPolicy Local answers only on the node of an
		// endpoint: it must know which node that is.
		ep.NodeName = &p.nodeName
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: p.service,
			discoveryv1.LabelManagedBy:   endpointSliceManagedBy,
		}},
		AddressType: addrType,
		Endpoints:   []discoveryv1.Endpoint{ep},
		Ports:       p.ports,
	}
	if owner != "" {
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: p.service, UID: owner}}
	}
	return s
}

// due tells whether ensure has anything to do: nothing published yet, or
// the last check is older than recheck.
func (p *endpointPublisher) due() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published.IsZero() || p.now().Sub(p.published) >= p.recheck
}

// ensure points the slice at this pod: created when missing, updated when
// it differs, left alone when it is right. Only while the Lease is fresh.
func (p *endpointPublisher) ensure(ctx context.Context) error {
	if !p.due() {
		return nil
	}
	checked := p.now()
	if p.leaseFresh != nil {
		until, ok := p.leaseFresh()
		if !ok {
			return errLeaseUnconfirmed
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, until)
		defer cancel()
	}
	uid, err := p.serviceUID(ctx)
	if err != nil {
		return err
	}
	want := p.want(uid)
	cur, err := p.slices.Get(ctx, p.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := p.slices.Create(ctx, want, metav1.CreateOptions{FieldManager: endpointSliceManagedBy}); err != nil {
			return fmt.Errorf("creating EndpointSlice %s/%s: %w", p.namespace, p.name, err)
		}
	case err != nil:
		return fmt.Errorf("reading EndpointSlice %s/%s: %w", p.namespace, p.name, err)
	case sameSlice(cur, want):
	default:
		next := cur.DeepCopy()
		if next.Labels == nil {
			next.Labels = map[string]string{}
		}
		for k, v := range want.Labels {
			next.Labels[k] = v
		}
		next.OwnerReferences = want.OwnerReferences
		next.AddressType = want.AddressType
		next.Endpoints = want.Endpoints
		next.Ports = want.Ports
		if next.AddressType != cur.AddressType {
			// addressType is immutable: replace the slice.
			if err := p.slices.Delete(ctx, p.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &cur.ResourceVersion}}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("replacing EndpointSlice %s/%s: %w", p.namespace, p.name, err)
			}
			if _, err := p.slices.Create(ctx, want, metav1.CreateOptions{FieldManager: endpointSliceManagedBy}); err != nil {
				return fmt.Errorf("replacing EndpointSlice %s/%s: %w", p.namespace, p.name, err)
			}
			break
		}
		if _, err := p.slices.Update(ctx, next, metav1.UpdateOptions{FieldManager: endpointSliceManagedBy}); err != nil {
			return fmt.Errorf("updating EndpointSlice %s/%s: %w", p.namespace, p.name, err)
		}
	}
	// From the time of the check, so that the next one falls on the
	// resync that follows, not one later.
	p.mu.Lock()
	p.published = checked
	p.mu.Unlock()
	return nil
}

// retry makes the next ensure run at once.
func (p *endpointPublisher) retry() {
	p.mu.Lock()
	p.published = time.Time{}
	p.mu.Unlock()
}

// clear marks this pod's endpoint terminating, not ready, if the slice
// still points at this pod (a graceful stop: peers get a refusal instead of
// silence until the next holder writes it). Another holder's slice is left
// alone. The endpoint stays listed: the admission policy evaluates one
// endpoint, and an emptied list reaches it as null.
func (p *endpointPublisher) clear(ctx context.Context) error {
	cur, err := p.slices.Get(ctx, p.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading EndpointSlice %s/%s: %w", p.namespace, p.name, err)
	}
	if !slices.ContainsFunc(cur.Endpoints, func(e discoveryv1.Endpoint) bool { return slices.Contains(e.Addresses, p.podIP.String()) }) {
		return nil
	}
	next := cur.DeepCopy()
	f, t := false, true
	for i := range next.Endpoints {
		next.Endpoints[i].Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &t}
	}
	if _, err := p.slices.Update(ctx, next, metav1.UpdateOptions{FieldManager: endpointSliceManagedBy}); err != nil {
		return fmt.Errorf("clearing EndpointSlice %s/%s: %w", p.namespace, p.name, err)
	}
	p.retry()
	return nil
}

// sameSlice compares what ensure writes.
func sameSlice(cur, want *discoveryv1.EndpointSlice) bool {
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return false
		}
	}
	if cur.AddressType != want.AddressType || len(cur.Endpoints) != 1 || len(cur.Ports) != len(want.Ports) ||
		len(cur.OwnerReferences) != len(want.OwnerReferences) {
		return false
	}
	for i := range want.OwnerReferences {
		if cur.OwnerReferences[i].UID != want.OwnerReferences[i].UID {
			return false
		}
	}
	c, w := cur.Endpoints[0], want.Endpoints[0]
	if !slices.Equal(c.Addresses, w.Addresses) || !isTrue(c.Conditions.Ready) || !isTrue(c.Conditions.Serving) || isTrue(c.Conditions.Terminating) ||
		c.TargetRef == nil || c.TargetRef.UID != w.TargetRef.UID || c.TargetRef.Name != w.TargetRef.Name ||
		deref(c.NodeName) != deref(w.NodeName) {
		return false
	}
	for i := range want.Ports {
		cp, wp := cur.Ports[i], want.Ports[i]
		if deref(cp.Name) != deref(wp.Name) || deref(cp.Port) != deref(wp.Port) || deref(cp.Protocol) != deref(wp.Protocol) {
			return false
		}
	}
	return true
}

func isTrue(b *bool) bool { return b != nil && *b }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// slicePorts are the Service's ports, by the names the chart gives them:
// WireGuard on UDP, the bridge on TCP.
func slicePorts(c *Config) []discoveryv1.EndpointPort {
	port := func(name string, proto corev1.Protocol, n int) discoveryv1.EndpointPort {
		p := int32(n)
		return discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &p}
	}
	return []discoveryv1.EndpointPort{
		port("wireguard", corev1.ProtocolUDP, c.ListenPort),
		port("bridge", corev1.ProtocolTCP, c.BridgePort),
	}
}
