package broker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func TestDesiredStatusStates(t *testing.T) {
	up := &probe.Result{Up: true, Received: 3, LastReply: t0, RTT: probe.RTTStats{Last: 1200 * time.Microsecond, Min: time.Millisecond, Avg: 1100 * time.Microsecond, Max: 1300 * time.Microsecond}}
	down := &probe.Result{Up: false, Received: 3, LastReply: t0.Add(-3 * time.Second)}
	tests := []struct {
		name      string
		o         Observation
		wantState string
		wantMsg   string
		wantReady metav1.ConditionStatus
		wantValid metav1.ConditionStatus
	}{
		{"invalid attributes", Observation{Verdict: mesh.Verdict{State: v1alpha1.StateInvalid, Message: "spec.cidr: bad"}, Gateway: "10.0.0.1"}, v1alpha1.StateInvalid, "spec.cidr: bad", metav1.ConditionFalse, metav1.ConditionFalse},
		{"stale mesh", Observation{Verdict: mesh.Verdict{State: v1alpha1.StateStale, Message: "no LocalLink"}}, v1alpha1.StateStale, "no LocalLink", metav1.ConditionFalse, metav1.ConditionFalse},
		{"hard error", Observation{Err: errors.New("private key: secret kubelink/wireguard not found"), DataPlane: "wireguard-userspace"}, v1alpha1.StateError, "private key: secret", metav1.ConditionFalse, metav1.ConditionTrue},
		{"local link", Observation{IsLocal: true, DataPlane: "wireguard-userspace", PublicKey: "pub"}, v1alpha1.StateUp, "local member", metav1.ConditionTrue, metav1.ConditionTrue},
		{"no reply yet", Observation{DataPlane: "wireguard-userspace"}, v1alpha1.StateDown, "no reply to the health probe through the tunnel yet", metav1.ConditionFalse, metav1.ConditionTrue},
		{"probe answers", Observation{DataPlane: "wireguard-userspace", Probe: up}, v1alpha1.StateUp, "connected", metav1.ConditionTrue, metav1.ConditionTrue},
		{"probe stopped", Observation{DataPlane: "wireguard-userspace", Probe: down}, v1alpha1.StateDown, "no reply to the health probe since 2026-05-01T11:59:57Z", metav1.ConditionFalse, metav1.ConditionTrue},
		{"mode none", Observation{}, v1alpha1.StateIdle, "--mode=none", metav1.ConditionFalse, metav1.ConditionTrue},
		{"transit: probe answers", Observation{DataPlane: "bridge", GatewayLink: "b", Probe: up}, v1alpha1.StateUp, "connected through gatewayLink b: the health probe answers", metav1.ConditionTrue, metav1.ConditionTrue},
		{"transit: no reply yet", Observation{DataPlane: "bridge", GatewayLink: "b"}, v1alpha1.StateDown, "no reply to the health probe through gatewayLink b yet", metav1.ConditionFalse, metav1.ConditionTrue},
		{"transit: probe stopped", Observation{DataPlane: "wireguard-userspace", GatewayLink: "b", Probe: down}, v1alpha1.StateDown, "no reply to the health probe through gatewayLink b since 2026-05-01T11:59:57Z", metav1.ConditionFalse, metav1.ConditionTrue},
		{"transit: gateway not connected", Observation{DataPlane: "bridge", GatewayLink: "b", IdleReason: "connection refused", Probe: up}, v1alpha1.StateIdle, "not connected: gatewayLink b is not connected: connection refused", metav1.ConditionFalse, metav1.ConditionTrue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 4}}
			st := DesiredStatus(kl, tt.o, t0)
			if st.State != tt.wantState || !strings.Contains(st.Message, tt.wantMsg) {
				t.Errorf("state %q message %q, want %q with %q", st.State, st.Message, tt.wantState, tt.wantMsg)
			}
			if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != tt.wantReady || c.ObservedGeneration != 4 {
				t.Errorf("Ready = %+v, want %s with observedGeneration 4", c, tt.wantReady)
			}
			if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionValid); c == nil || c.Status != tt.wantValid {
				t.Errorf("Valid = %+v, want %s", c, tt.wantValid)
			}
			if st.ObservedGeneration != 4 {
				t.Errorf("observedGeneration = %d", st.ObservedGeneration)
			}
		})
	}
}

func TestDesiredStatusHealthAndStableTransitions(t *testing.T) {
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 1}}
	o := Observation{DataPlane: "wireguard-userspace", Probe: &probe.Result{Up: true, Received: 1, RTT: probe.RTTStats{Last: 1234567 * time.Nanosecond}},
		Peer: &PeerFigures{LastHandshake: t0.Add(1500 * time.Millisecond), RxBytes: 10, TxBytes: 20}}
	st := DesiredStatus(kl, o, t0)
	if st.Health == nil || st.Health.RTT.Last.Duration != 1235*time.Microsecond || st.Health.RxBytes != 10 || !st.Health.LastHandshake.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("health = %+v", st.Health)
	}
	kl.Status = st
	later := DesiredStatus(kl, o, t0.Add(time.Minute))
	if c := meta.FindStatusCondition(later.Conditions, v1alpha1.ConditionReady); !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("unchanged condition moved its transition time to %s", c.LastTransitionTime)
	}
}

func TestNeedsWriteOnlyOnChangeAndThrottlesHealth(t *testing.T) {
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b"}}
	o := Observation{DataPlane: "wireguard-userspace", Probe: &probe.Result{Up: true, Received: 1, RTT: probe.RTTStats{Last: time.Millisecond}}}
	st := DesiredStatus(kl, o, t0)
	if !NeedsWrite(kl.Status, st, time.Time{}, t0, 10*time.Second) {
		t.Fatal("first status must be written")
	}
	kl.Status = st
	if NeedsWrite(kl.Status, DesiredStatus(kl, o, t0.Add(time.Second)), t0, t0.Add(time.Second), 10*time.Second) {
		t.Error("identical status written again")
	}
	o.Probe.RTT.Last = 2 * time.Millisecond
	if NeedsWrite(kl.Status, DesiredStatus(kl, o, t0.Add(time.Second)), t0, t0.Add(time.Second), 10*time.Second) {
		t.Error("health-only change written before the health interval")
	}
	if !NeedsWrite(kl.Status, DesiredStatus(kl, o, t0.Add(11*time.Second)), t0, t0.Add(11*time.Second), 10*time.Second) {
		t.Error("health change not written after the health interval")
	}
	o.Probe.Up = false
	if !NeedsWrite(kl.Status, DesiredStatus(kl, o, t0.Add(time.Second)), t0, t0.Add(time.Second), 10*time.Second) {
		t.Error("state change must be written at once")
	}
}
