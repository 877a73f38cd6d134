package broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
)

// DataPlane carries the traffic of the served links: kernel or embedded
// WireGuard, the TLS bridge, or nothing (--mode=none). The broker computes
// one mesh.GatewayPlan per sync and hands it to the plane; everything the
// status needs comes back in one Report.
type DataPlane interface {
	// Kind names the device for status and metrics ("" while none is
	// open, and always in mode none).
	Kind() string
	// Transport says which plan the plane wants.
	Transport() mesh.Transport
	// DefaultPort is the port of an endpoint that names none.
	DefaultPort() uint16
	// Apply makes the data plane match the plan. It does not fail as a
	// whole: a device problem is Report.DeviceErr, a link's is its
	// LinkReport.Err.
	Apply(ctx context.Context, plan *mesh.GatewayPlan) Report
	// ApplyServices installs the MeshService DNAT of the bindings (an empty
	// list removes it); nothing happens while the device is not open.
	ApplyServices(bindings []*mesh.ServiceBinding) error
	// Drops is the number of packets the ingress policy of link dropped.
	Drops(link string) (uint64, bool)
	// Close releases the device and connections.
	Close()
}

// Report is what one Apply tells the status computation.
type Report struct {
	// DeviceErr makes every served link Error (device, key, kernel state).
	DeviceErr error
	// PublicKey is the local WireGuard public key (zero in other planes).
	PublicKey mesh.Key
	// Links holds every foreign link the plane serves; a link that is
	// absent is not carried (it has an Err, or the plane carries nothing).
	Links map[string]LinkReport
}

// LinkReport is the plane's view of one served link.
type LinkReport struct {
	// Err is a problem that keeps the link from working (state Error).
	Err error
	// Idle says why the link has no connection (bridge), "" if it has one.
	Idle string
	// Peer are the tunnel figures; nil for a transit link (they are its
	// gateway link's).
	Peer *PeerFigures
	// Advertised is what the peer announced (bridge HELLO).
	Advertised *v1alpha1.AdvertisedInfo
}

// served reports whether the plane carries link without error.
func (r Report) served(link string) bool {
	lr, ok := r.Links[link]
	return ok && lr.Err == nil && r.DeviceErr == nil
}

// PlaneDeps is what a data plane gets from the broker.
type PlaneDeps struct {
	Config  *Config
	RunMode RunMode
	Log     *slog.Logger
	// Kick asks for a sync (a connection changed, a name resolved anew).
	Kick func()
	// PrivateKey reads the WireGuard key (each sync: it may be rotated).
	PrivateKey func(context.Context) (mesh.Key, error)
	// Unknown handles authenticated bridge peers without a link
	// (--auto-connect); nil rejects them.
	Unknown func(*mesh.Mesh, bridge.UnknownPeer) error
	// Metrics is where a plane registers its own collectors.
	Metrics prometheus.Registerer
}

// PlaneFactory opens a data plane; ctx bounds its background work.
type PlaneFactory func(ctx context.Context, d PlaneDeps) (DataPlane, error)

// planes is the registry of data planes by --mode.
var planes = map[string]PlaneFactory{
	ModeWireGuard: newWGPlane,
	ModeBridge:    newBridgePlane,
	ModeNone: func(_ context.Context, d PlaneDeps) (DataPlane, error) {
		return nonePlane{port: uint16(d.Config.ListenPort)}, nil
	},
}

func openPlane(ctx context.Context, mode string, d PlaneDeps) (DataPlane, error) {
	f, ok := planes[mode]
	if !ok {
		return nil, fmt.Errorf("--mode=%q: no such data plane", mode) // Config.Validate names the modes
	}
	return f(ctx, d)
}

// nonePlane carries nothing: links are Idle ("no data plane"); endpoints
// without a port are read as WireGuard's.
type nonePlane struct{ port uint16 }

func (nonePlane) Kind() string                                    { return "" }
func (nonePlane) Transport() mesh.Transport                       { return mesh.TransportNone }
func (p nonePlane) DefaultPort() uint16                           { return p.port }
func (nonePlane) Apply(context.Context, *mesh.GatewayPlan) Report { return Report{} }
func (nonePlane) ApplyServices([]*mesh.ServiceBinding) error      { return nil }
func (nonePlane) Drops(string) (uint64, bool)                     { return 0, false }
func (nonePlane) Close()                                          {}
