package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

var netInterfaces = net.Interfaces

// sync is one level-triggered pass: model, data plane, probes, status.
func (b *Broker) sync(ctx context.Context) error {
	var list v1alpha1.KubeLinkList
	if err := b.kube.List(ctx, &list); err != nil {
		return fmt.Errorf("listing KubeLinks: %w", err)
	}
	// Links of meshes another broker serves are not ours: not in the data
	// plane, and their status is that broker's to write.
	list.Items = b.cfg.Served.Links(list.Items)
	defaultPort := b.cfg.ListenPort
	if b.bplane != nil {
		defaultPort = b.cfg.BridgePort
	}
	model := mesh.Build(list.Items, mesh.ParseOptions{DefaultPort: uint16(defaultPort)})

	res := planeResult{LinkErrs: map[string]error{}, PeerOf: map[string]mesh.Key{}}
	if b.plane != nil {
		key, keyErr := b.privateKey(ctx)
		res = b.plane.apply(ctx, model, key, keyErr)
		b.metrics.setDataPlane(b.plane.kind())
	} else if b.bplane != nil {
		res = b.bplane.apply(ctx, model)
		b.metrics.setDataPlane(b.bplane.kind())
	}
	b.updateProbes(model, res)

	var errs []error
	bindings, err := b.syncMeshServices(ctx, model)
	if err != nil {
		errs = append(errs, err)
	}
	if b.plane != nil && b.plane.dev != nil {
		if err := b.plane.applyServices(bindings); err != nil {
			errs = append(errs, err)
		}
	} else if b.bplane != nil && b.bplane.tun != nil {
		if err := b.bplane.applyServices(bindings); err != nil {
			errs = append(errs, err)
		}
	}

	now := time.Now()
	states := map[string]int{}
	for i := range list.Items {
		kl := &list.Items[i]
		o := b.observe(kl, model, res)
		st := DesiredStatus(kl, o, now)
		states[st.State]++
		b.metrics.observeLink(kl.Name, st)
		b.observeDrops(kl.Name, model)
		if err := b.writeStatus(ctx, kl, st, now); err != nil {
			errs = append(errs, err)
		}
	}
	b.metrics.setStates(states)
	b.forgetDeleted(list.Items)
	return errors.Join(errs...)
}

// observe gathers what the status computation needs for one link.
func (b *Broker) observe(kl *v1alpha1.KubeLink, m *mesh.Model, res planeResult) Observation {
	o := Observation{Verdict: m.Verdicts[kl.Name], Gateway: b.rm.NodeIP.String()}
	if b.rm.PodMode {
		o.GatewayPod = b.rm.PodIP.String()
	}
	if b.plane != nil {
		o.DataPlane = b.plane.kind()
	} else if b.bplane != nil {
		o.DataPlane = b.bplane.kind()
	}
	l, accepted := m.Link(kl.Name)
	if !accepted {
		return o
	}
	o.IsLocal = l.IsLocal()
	o.GatewayLink = l.GatewayLink
	switch {
	case res.DeviceErr != nil:
		o.Err = res.DeviceErr
	case res.LinkErrs[kl.Name] != nil:
		o.Err = res.LinkErrs[kl.Name]
	}
	if o.IsLocal {
		if !res.PublicKey.IsZero() {
			o.PublicKey = res.PublicKey.String()
		}
		return o
	}
	if b.prober != nil {
		if r, ok := b.prober.Result(l.IP()); ok {
			o.Probe = &r
		}
	}
	if b.bplane != nil {
		if reason, idle := b.bplane.idle[kl.Name]; idle {
			o.IdleReason = reason
		}
	}
	if b.bplane != nil {
		o.Peer = b.bplane.figures(kl.Name)
		o.Advertised = b.bplane.advertised(kl.Name)
	}
	// A transit link shares its gateway's WireGuard peer; that peer's
	// figures are the gateway link's, so a transit link shows only its RTT.
	if key, ok := res.PeerOf[kl.Name]; ok && l.GatewayLink == "" {
		if s, ok := res.Stats[key]; ok {
			o.Peer = &PeerFigures{LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes}
		}
	}
	return o
}

// updateProbes keeps a responder on every local cluster address and probes
// every served peer from the local address of its mesh.
func (b *Broker) updateProbes(m *mesh.Model, res planeResult) {
	local := map[netip.Addr]bool{}
	targets := map[netip.Addr]netip.Addr{}
	if res.DeviceErr == nil && (b.plane != nil || b.bplane != nil) {
		for _, ms := range m.Meshes {
			local[ms.Local.IP()] = true
			for _, l := range ms.Members {
				if _, served := res.PeerOf[l.Name.String()]; served && res.LinkErrs[l.Name.String()] == nil {
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
			b.metrics.forgetLink(n)
		}
	}
}

// observeDrops reports the packets a link's ingress rules dropped.
func (b *Broker) observeDrops(link string, m *mesh.Model) {
	l, ok := m.Link(link)
	if !ok || l.IsLocal() {
		return
	}
	if b.bplane != nil && b.bplane.conn != nil {
		if s, ok := b.bplane.conn.LinkStats(link); ok {
			b.metrics.fwDrops.WithLabelValues(link).Set(float64(s.Drops.IngressDenied))
		}
		return
	}
	if b.plane == nil || b.plane.dev == nil {
		return
	}
	n, err := b.plane.fw.DroppedPackets("mangle", mesh.FirewallChain(link))
	if err == nil {
		b.metrics.fwDrops.WithLabelValues(link).Set(float64(n))
	}
}
