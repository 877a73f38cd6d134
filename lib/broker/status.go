package broker

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

// Observation is everything the broker knows about one link in one sync.
type Observation struct {
	Verdict mesh.Verdict
	IsLocal bool
	// Err is a hard local error for the link (key, device, peer conflict,
	// endpoint lookup): state Error.
	Err error
	// DataPlane is the kind of device carrying the link ("" in mode none).
	DataPlane  string
	Gateway    string
	GatewayPod string
	// PublicKey is the local public key (LocalLinks only).
	PublicKey string
	// Probe is the health of a foreign link; nil when not probed.
	Probe *probe.Result
	// Peer holds WireGuard figures of the link's peer, if any.
	Peer *PeerFigures
	// IdleReason, when set, says why the bridge data plane has no
	// connection for the link: state Idle.
	IdleReason string
	// Advertised is what the peer announced in the HELLO of the link's
	// current bridge connection (nil: not connected, or nothing usable).
	Advertised *v1alpha1.AdvertisedInfo
	// GatewayLink is set for a transit link: the link whose peer forwards
	// its traffic. Probe and IdleReason are then about the path through
	// that peer, and the message says so.
	GatewayLink string
}

// PeerFigures are tunnel counters.
type PeerFigures struct {
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// DesiredStatus computes the status of a link from an observation. It keeps
// condition transition times of old where the condition did not change.
func DesiredStatus(kl *v1alpha1.KubeLink, o Observation, now time.Time) v1alpha1.KubeLinkStatus {
	old := kl.Status
	st := v1alpha1.KubeLinkStatus{
		Gateway:            o.Gateway,
		GatewayPod:         o.GatewayPod,
		DataPlane:          o.DataPlane,
		ObservedGeneration: kl.Generation,
		Conditions:         append([]metav1.Condition(nil), old.Conditions...),
	}
	valid, connected := metav1.ConditionTrue, metav1.ConditionFalse
	validReason, validMsg := "Valid", "the link and its mesh are valid"
	connReason := ""
	// A transit link's probe goes through its gateway link's peer.
	through := " through the tunnel"
	if o.GatewayLink != "" {
		through = " through gatewayLink " + o.GatewayLink
	}
	switch {
	case kl.DeletionTimestamp != nil:
		st.State, st.Message, connReason = v1alpha1.StateDeleting, "the link is being deleted", "Deleting"
	case o.Verdict.State == v1alpha1.StateInvalid:
		st.State, st.Message = v1alpha1.StateInvalid, o.Verdict.Message
		valid, validReason, validMsg, connReason = metav1.ConditionFalse, "InvalidSpec", o.Verdict.Message, "Invalid"
		st.Gateway, st.GatewayPod, st.DataPlane = "", "", ""
	case o.Verdict.State == v1alpha1.StateStale:
		st.State, st.Message = v1alpha1.StateStale, o.Verdict.Message
		valid, validReason, validMsg, connReason = metav1.ConditionFalse, "MeshSetup", o.Verdict.Message, "Stale"
		st.Gateway, st.GatewayPod, st.DataPlane = "", "", ""
	case o.Err != nil:
		st.State, st.Message, connReason = v1alpha1.StateError, o.Err.Error(), "Error"
	case o.IsLocal:
		st.State, st.Message, connReason = v1alpha1.StateUp, "local member of the mesh, served by this gateway", "Local"
		connected = metav1.ConditionTrue
		st.PublicKey = o.PublicKey
	case o.DataPlane == "":
		st.State, st.Message, connReason = v1alpha1.StateIdle, "the broker runs without data plane (--mode=none)", "NoDataPlane"
	case o.IdleReason != "":
		st.State, connReason = v1alpha1.StateIdle, "NotConnected"
		st.Message = "not connected: " + o.IdleReason
		if o.GatewayLink != "" {
			st.Message = "not connected: gatewayLink " + o.GatewayLink + " is not connected: " + o.IdleReason
		}
	case o.Probe == nil || o.Probe.Received == 0:
		st.State, st.Message, connReason = v1alpha1.StateDown, "no reply to the health probe"+through+" yet", "NoProbeReply"
	case o.Probe.Up:
		st.State, st.Message, connReason = v1alpha1.StateUp, "connected: the health probe answers", "ProbeAnswers"
		if o.GatewayLink != "" {
			st.Message = "connected through gatewayLink " + o.GatewayLink + ": the health probe answers"
		}
		connected = metav1.ConditionTrue
	default:
		st.State, connReason = v1alpha1.StateDown, "ProbeTimeout"
		st.Message = fmt.Sprintf("no reply to the health probe since %s", o.Probe.LastReply.UTC().Format(time.RFC3339))
		if o.GatewayLink != "" {
			st.Message = fmt.Sprintf("no reply to the health probe through gatewayLink %s since %s", o.GatewayLink, o.Probe.LastReply.UTC().Format(time.RFC3339))
		}
	}
	if !o.IsLocal {
		st.Health = health(o)
		if st.State != v1alpha1.StateInvalid && st.State != v1alpha1.StateStale && st.State != v1alpha1.StateDeleting {
			st.Advertised = o.Advertised.DeepCopy()
		}
	}
	ready := metav1.ConditionFalse
	if connected == metav1.ConditionTrue && valid == metav1.ConditionTrue {
		ready = metav1.ConditionTrue
	}
	gen := kl.Generation
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionValid, Status: valid, Reason: validReason, Message: validMsg, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionConnected, Status: connected, Reason: connReason, Message: st.Message, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: ready, Reason: st.State, Message: st.Message, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	return st
}

func health(o Observation) *v1alpha1.LinkHealth {
	h := &v1alpha1.LinkHealth{}
	if o.Probe != nil && o.Probe.Received > 0 {
		r := o.Probe.RTT
		h.RTT = &v1alpha1.RTTStats{Last: dur(r.Last), Min: dur(r.Min), Avg: dur(r.Avg), Max: dur(r.Max)}
	}
	if o.Peer != nil {
		if !o.Peer.LastHandshake.IsZero() {
			t := metav1.NewTime(o.Peer.LastHandshake.Truncate(time.Second))
			h.LastHandshake = &t
		}
		h.RxBytes, h.TxBytes = o.Peer.RxBytes, o.Peer.TxBytes
	}
	if h.RTT == nil && h.LastHandshake == nil && h.RxBytes == 0 && h.TxBytes == 0 {
		return nil
	}
	return h
}

// dur rounds to microseconds: status shows figures, not noise.
func dur(d time.Duration) *metav1.Duration {
	return &metav1.Duration{Duration: d.Round(time.Microsecond)}
}

// healthOnly reports whether two statuses differ in nothing but the health
// figures.
func healthOnly(old, desired v1alpha1.KubeLinkStatus) bool {
	a, b := old, desired
	a.Health, b.Health = nil, nil
	return equality.Semantic.DeepEqual(a, b)
}

// NeedsWrite says whether a status must be written: at once when anything but
// the health figures changed, and for health figures only when the last write
// is older than healthEvery (figures change on every probe; writing them each
// time would flood the API server).
func NeedsWrite(old, desired v1alpha1.KubeLinkStatus, lastWrite, now time.Time, healthEvery time.Duration) bool {
	if !healthOnly(old, desired) {
		return true
	}
	if equality.Semantic.DeepEqual(old.Health, desired.Health) {
		return false
	}
	return now.Sub(lastWrite) >= healthEvery
}
