package mcs

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// The KEP's conflicts between the exports of one name: each property that
// differs gives its reason and a message naming both clusters and the
// winner (the oldest export); extra ports of one cluster are no conflict.
func TestConflictsOfTheExportsOfOneName(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	http := Port{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
	base := Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.0.20",
		Ports: []Port{http}, SessionAffinity: corev1.ServiceAffinityNone, Exported: t0.Add(time.Hour)}
	peer := func(mod func(*Export)) Imports {
		e := base
		e.ClusterIP, e.Exported = "100.64.16.20", t0
		e.Ports = append([]Port(nil), base.Ports...)
		mod(&e)
		return Imports{Self: []Origin{{Cluster: "a", Mesh: "default"}}, Clusters: []ClusterRecord{{Cluster: "b", Mesh: "default", Exports: []Export{e}}}}
	}
	for _, c := range []struct {
		name   string
		peer   func(*Export)
		reason mcsv1beta1.ServiceExportConditionReason
		words  []string
	}{
		{"same", func(*Export) {}, "", nil},
		{"affinity None left out of the record", func(e *Export) { e.SessionAffinity = "" }, "", nil},
		{"an extra port", func(e *Export) {
			e.Ports = append(e.Ports, Port{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443})
		}, "", nil},
		{"type", func(e *Export) { e.Type, e.ClusterIP = mcsv1beta1.Headless, "" }, mcsv1beta1.ServiceExportReasonTypeConflict,
			[]string{"cluster a exports shop/cart as ClusterSetIP, cluster b as Headless", "oldest export (cluster b", "cluster a is left out"}},
		{"a port's number", func(e *Export) { e.Ports[0].Port = 8080 }, mcsv1beta1.ServiceExportReasonPortConflict,
			[]string{`port "http" of shop/cart is TCP/8080 in cluster b and TCP/80 in cluster a`}},
		{"a port's name", func(e *Export) { e.Ports[0].Name = "web" }, mcsv1beta1.ServiceExportReasonPortConflict,
			[]string{`port TCP/80 of shop/cart is named "web" in cluster b and named "http" in cluster a`}},
		{"a port's appProtocol", func(e *Export) { e.Ports[0].AppProtocol = "h2c" }, mcsv1beta1.ServiceExportReasonPortConflict,
			[]string{`(appProtocol h2c) in cluster b`}},
		{"session affinity", func(e *Export) { e.SessionAffinity = corev1.ServiceAffinityClientIP }, mcsv1beta1.ServiceExportReasonSessionAffinityConflict,
			[]string{"cluster a exports shop/cart with session affinity None, cluster b with ClientIP"}},
		{"affinity timeout", func(e *Export) { e.SessionAffinityTimeout = 600 }, mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict,
			[]string{"timeout of 0 s, cluster b with 600 s"}},
	} {
		got := conflictsOf("a", Record{Exports: []Export{base}}, peer(c.peer))["shop/cart"]
		switch {
		case c.reason == "" && got != nil:
			t.Errorf("%s: conflict %s: %s, want none", c.name, got.reason, got.message)
		case c.reason != "" && got == nil:
			t.Errorf("%s: no conflict, want %s", c.name, c.reason)
		case c.reason != "" && got.reason != c.reason:
			t.Errorf("%s: %s (%s), want %s", c.name, got.reason, got.message, c.reason)
		case got != nil:
			for _, w := range c.words {
				if !strings.Contains(got.message, w) {
					t.Errorf("%s: message %q lacks %q", c.name, got.message, w)
				}
			}
		}
	}
	// A name only this cluster exports, and peers' names this cluster
	// does not export, are no conflict of this cluster's.
	other := base
	other.Name = "other"
	if got := conflictsOf("a", Record{Exports: []Export{other}}, peer(func(e *Export) { e.Ports[0].Port = 1 })); len(got) != 0 {
		t.Errorf("conflicts of names not exported by both: %v", got)
	}
	// The import keeps the oldest definition of a port name and drops the
	// later one (no Service with two ports of one name).
	d := plan("a", Record{Exports: []Export{base}}, peer(func(e *Export) { e.Ports[0].Port = 8080 }))
	if len(d) != 1 || len(d[0].ports) != 1 || d[0].ports[0].Port != 8080 || len(d[0].sources) != 2 {
		t.Errorf("plan of a port conflict: %+v, want b's http:8080 alone, both clusters", d[0])
	}
}
