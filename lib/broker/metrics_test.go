package broker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// A deleted link's series go, whether or not its status was ever written,
// and a link without figures (probing stopped) shows no stale RTT or bytes.
func TestLinkSeriesFollowTheLinks(t *testing.T) {
	m := newMetrics()
	withRTT := v1alpha1.KubeLinkStatus{State: v1alpha1.StateUp, Health: &v1alpha1.LinkHealth{RxBytes: 1, TxBytes: 2,
		RTT: &v1alpha1.RTTStats{Last: &metav1.Duration{Duration: time.Millisecond}}}}
	m.observeLink("a", withRTT)
	m.observeLink("b", withRTT)
	m.fwDrops.WithLabelValues("b").Set(3)
	if n := testutil.CollectAndCount(m.rtt); n != 2 {
		t.Fatalf("%d RTT series, want 2", n)
	}
	m.forgetLinksBut(map[string]bool{"a": true})
	for name, v := range map[string]int{"link_up": testutil.CollectAndCount(m.linkUp), "rx": testutil.CollectAndCount(m.rx),
		"rtt": testutil.CollectAndCount(m.rtt), "fw_drops": testutil.CollectAndCount(m.fwDrops)} {
		want := 1
		if name == "fw_drops" {
			want = 0
		}
		if v != want {
			t.Errorf("%s: %d series after b was deleted, want %d", name, v, want)
		}
	}
	// a's probing stopped: no figures, no stale RTT or bytes
	m.observeLink("a", v1alpha1.KubeLinkStatus{State: v1alpha1.StateDown})
	if n := testutil.CollectAndCount(m.rtt) + testutil.CollectAndCount(m.rx) + testutil.CollectAndCount(m.tx); n != 0 {
		t.Errorf("%d RTT/byte series for a link without figures, want 0", n)
	}
	if got := testutil.ToFloat64(m.linkUp.WithLabelValues("a")); got != 0 {
		t.Errorf("link_up{a} = %v, want 0", got)
	}
}
