package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mcs"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

var netInterfaces = net.Interfaces

// sync is one level-triggered pass: model, data plane, probes, status.
func (b *Broker) sync(ctx context.Context) error {
	t0 := time.Now()
	var list v1alpha1.KubeLinkList
	if err := b.kube.List(ctx, &list); err != nil {
		return fmt.Errorf("listing KubeLinks: %w", err)
	}
	// Links of meshes another broker serves are not ours: not in the data
	// plane, and their status is that broker's to write.
	list.Items = b.cfg.Served.Links(list.Items)
	model := mesh.Build(list.Items, mesh.ParseOptions{DefaultPort: b.plane.DefaultPort(), Reserved: mesh.ReservedNetworks(b.cfg.NodeCIDR, b.cfg.PodCIDR),
		SecretKey: b.presharedKeys(ctx)})
	b.warnDeprecated(list.Items)
	o := mesh.PlanOptions{Transport: b.plane.Transport(), Device: b.cfg.Interface, ProbePort: b.cfg.ProbePort, MCSPort: b.cfg.MCSPort, Keepalive: b.cfg.Keepalive}
	if b.rm.PodMode {
		o.PodInterface = b.rm.Interface
	}
	plan := model.Plan(o)
	if c, ok := b.plane.(interface{ CheckNext() }); ok && b.loop.Periodic() {
		c.CheckNext()
	}
	t1 := time.Now()
	rep := b.plane.Apply(ctx, plan)
	b.metrics.setDataPlane(b.plane.Kind())
	b.updateProbes(model, rep)
	t2 := time.Now()

	var errs []error
	bindings, err := b.syncMeshServices(ctx, model)
	if err != nil {
		errs = append(errs, err)
	}
	if err := b.plane.ApplyServices(bindings); err != nil {
		errs = append(errs, err)
	}

	now := time.Now()
	states := map[string]int{}
	up := map[string]bool{}
	for i := range list.Items {
		kl := &list.Items[i]
		o := b.observe(kl, model, rep)
		st := DesiredStatus(kl, o, now)
		states[st.State]++
		up[kl.Name] = st.State == v1alpha1.StateUp
		b.metrics.observeLink(kl.Name, st)
		b.observeDrops(kl.Name, model)
		if err := b.writeStatus(ctx, kl, st, now); err != nil {
			errs = append(errs, err)
		}
	}
	b.metrics.setStates(states)
	b.exchangeMCS(model, rep, up)
	b.forgetDeleted(list.Items)
	t3 := time.Now()
	// What the plane left for after the status writes (the gateway: the
	// listings of the chains just written, the flows tracked without SNAT).
	if s, ok := b.plane.(interface{ Settle() }); ok {
		s.Settle()
	}
	b.log.Debug("sync pass", "links", len(list.Items), "model", t1.Sub(t0), "dataPlane", t2.Sub(t1), "meshServices", now.Sub(t2), "status", t3.Sub(now), "settle", time.Since(t3))
	return errors.Join(errs...)
}

// observe gathers what the status computation needs for one link.
func (b *Broker) observe(kl *v1alpha1.KubeLink, m *mesh.Model, rep Report) Observation {
	o := Observation{Verdict: m.Verdicts[kl.Name], Gateway: b.rm.NodeIP.String(), DataPlane: b.plane.Kind()}
	if b.rm.PodMode {
		o.GatewayPod = b.rm.PodIP.String()
	}
	l, accepted := m.Link(kl.Name)
	if !accepted {
		return o
	}
	o.IsLocal = l.IsLocal()
	o.GatewayLink = l.GatewayLink
	lr := rep.Links[kl.Name]
	switch {
	case rep.DeviceErr != nil:
		o.Err = rep.DeviceErr
	case lr.Err != nil:
		o.Err = lr.Err
	}
	if o.IsLocal {
		if !rep.PublicKey.IsZero() {
			o.PublicKey = rep.PublicKey.String()
		}
		return o
	}
	if b.prober != nil {
		if r, ok := b.prober.Result(l.IP()); ok {
			o.Probe = &r
		}
	}
	o.IdleReason, o.Peer, o.Advertised = lr.Idle, lr.Peer, lr.Advertised
	return o
}

// updateProbes keeps a responder on every local cluster address and probes
// every served peer from the local address of its mesh.
func (b *Broker) updateProbes(m *mesh.Model, rep Report) {
	local := map[netip.Addr]bool{}
	targets := map[netip.Addr]netip.Addr{}
	if rep.DeviceErr == nil && b.plane.Kind() != "" {
		for _, ms := range m.Meshes {
			local[ms.Local.IP()] = true
			for _, l := range ms.Members {
				if rep.served(l.Name.String()) {
					targets[l.IP()] = ms.Local.IP()
				}
			}
		}
	}
	b.closeResponders(local)
	for a := range local {
		if _, ok := b.resp[a]; ok {
			continue
		}
		r, err := probe.Listen(a, b.cfg.ProbePort)
		if err != nil {
			b.log.Warn("probe responder", "addr", a, "err", err)
			continue
		}
		b.resp[a] = r
	}
	b.prober.Set(targets)
}

// exchangeMCS tells the MCS exchange where to serve this cluster's export
// record (the local cluster addresses, as the probe responders) and whose
// records to fetch: the peers whose links are Up, each with the service
// network its exports must be in.
func (b *Broker) exchangeMCS(m *mesh.Model, rep Report, up map[string]bool) {
	if b.mcs == nil {
		return
	}
	var local []netip.Addr
	var peers []mcs.Peer
	var self []mcs.Origin
	for _, ms := range m.Meshes {
		if ms.Local != nil {
			self = append(self, mcs.Origin{Cluster: ms.Local.Name.Cluster, Mesh: mesh.MeshDisplayName(ms.Name)})
		}
	}
	if rep.DeviceErr == nil && b.plane.Kind() != "" {
		for _, ms := range m.Meshes {
			if len(ms.Members) == 0 {
				continue
			}
			local = append(local, ms.Local.IP())
			for _, l := range ms.Members {
				if !up[l.Name.String()] || !rep.served(l.Name.String()) {
					continue
				}
				p := mcs.Peer{Cluster: l.Name.Cluster, Mesh: mesh.MeshDisplayName(ms.Name), Addr: l.IP(), Local: ms.Local.IP()}
				if l.ServiceCIDR.IsValid() {
					p.Services = []netip.Prefix{l.ServiceCIDR}
				}
				peers = append(peers, p)
			}
		}
	}
	b.mcs.Listen(local)
	b.mcs.SetSelf(self)
	b.mcs.SetPeers(peers)
}

// closeResponders closes responders whose address is not in keep (all if nil).
func (b *Broker) closeResponders(keep map[netip.Addr]bool) {
	for a, r := range b.resp {
		if !keep[a] {
			_ = r.Close()
			delete(b.resp, a)
		}
	}
}

// writeStatus patches the status subresource when NeedsWrite says so and
// records an Event when the state changed.
func (b *Broker) writeStatus(ctx context.Context, kl *v1alpha1.KubeLink, st v1alpha1.KubeLinkStatus, now time.Time) error {
	if !NeedsWrite(kl.Status, st, b.lastWrite[kl.Name], now, b.cfg.HealthEvery) {
		return nil
	}
	if b.health != nil {
		if healthOnly(kl.Status, st) {
			b.health.enqueue(kl, st)
			b.lastWrite[kl.Name] = now
			return nil
		}
		// this write carries the latest figures too
		b.health.drop(kl.Name)
	}
	orig := kl.DeepCopy()
	oldState := kl.Status.State
	kl.Status = st
	if err := b.kube.Status().Patch(ctx, kl, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("status of %s: %w", kl.Name, err)
	}
	b.lastWrite[kl.Name] = now
	if oldState != st.State {
		b.events.stateChanged(kl, oldState, st)
	}
	return nil
}

func (b *Broker) forgetDeleted(items []v1alpha1.KubeLink) {
	seen := map[string]bool{}
	for _, kl := range items {
		seen[kl.Name] = true
	}
	for n := range b.lastWrite {
		if !seen[n] {
			delete(b.lastWrite, n)
			if b.health != nil {
				b.health.drop(n)
			}
		}
	}
	b.metrics.forgetLinksBut(seen)
	for n := range b.deprecated {
		if !seen[n] {
			delete(b.deprecated, n)
		}
	}
}

// presharedKeys resolves the links' presharedKeySecret from the broker's
// key Secret (--secret), read once per pass from the cache: the only Secret
// the broker may read, and the one whose changes start a pass. Nil without
// WireGuard (the bridge has no preshared keys).
func (b *Broker) presharedKeys(ctx context.Context) func(v1alpha1.SecretKeySelector) (string, error) {
	if b.cfg.Secret == "" || b.cfg.Mode != ModeWireGuard {
		return nil
	}
	var s *corev1.Secret
	var readErr error
	return func(ref v1alpha1.SecretKeySelector) (string, error) {
		ns, name := b.cfg.Namespace, b.cfg.Secret
		if ref.Name != "" && ref.Name != name {
			return "", fmt.Errorf("name %q: the broker reads preshared keys only from its key Secret %s/%s (the one with its WireGuard private key); put the key there and leave name empty",
				ref.Name, ns, name)
		}
		switch ref.Key {
		case v1alpha1.SecretKeyWireguardPrivateKey, v1alpha1.SecretKeyWireGuardPrivateKey, v1alpha1.SecretKeyWireguardPublicKey:
			// The key pair is no preshared key: using it as one would put
			// the private key to a second use.
			return "", fmt.Errorf("key %q is the broker's own WireGuard key, not a preshared key; store the preshared key under another key (e.g. psk-<link>)", ref.Key)
		}
		if s == nil && readErr == nil {
			s, readErr = b.keySecret(ctx)
		}
		if readErr != nil {
			return "", readErr
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return "", fmt.Errorf("the broker's key Secret %s/%s has no key %q: add the preshared key there (e.g. kubectl -n %s patch secret %s -p '{\"stringData\":{\"%s\":\"<wg genpsk>\"}}')",
				ns, name, ref.Key, ns, name, ref.Key)
		}
		return string(v), nil
	}
}

// warnDeprecated records a Warning Event on each link that still carries
// its preshared key in spec.presharedKey (readable by everyone who may
// read KubeLinks), once per generation.
func (b *Broker) warnDeprecated(items []v1alpha1.KubeLink) {
	if b.deprecated == nil {
		b.deprecated = map[string]int64{}
	}
	for i := range items {
		kl := &items[i]
		if kl.Spec.PresharedKey == "" {
			delete(b.deprecated, kl.Name)
			continue
		}
		if b.deprecated[kl.Name] == kl.Generation {
			continue
		}
		b.deprecated[kl.Name] = kl.Generation
		key := "psk-" + kl.Name
		b.log.Warn("a link carries its preshared key in the deprecated spec.presharedKey", "link", kl.Name)
		if b.events != nil {
			b.events.recorder.Eventf(kl, corev1.EventTypeWarning, "Deprecated",
				"spec.presharedKey is deprecated: everyone who may read KubeLinks reads the key. Move it into the broker's key Secret %s/%s (key %s) and set spec.presharedKeySecret.key: %s instead",
				b.cfg.Namespace, b.cfg.Secret, key, key)
		}
	}
}

// observeDrops reports the packets a link's ingress policy dropped.
func (b *Broker) observeDrops(link string, m *mesh.Model) {
	l, ok := m.Link(link)
	if !ok || l.IsLocal() {
		return
	}
	if n, ok := b.plane.Drops(link); ok {
		b.metrics.fwDrops.WithLabelValues(link).Set(float64(n))
	}
}
