package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A HostPort broker answers only at its own node's addresses.
func TestHostPortMismatch(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.7"}}}}
	for _, tc := range []struct{ host, want string }{
		{"203.0.113.7", ""},
		{"10.0.0.5", ""},
		{"gw.example.com", ""}, // a name may resolve to the node
		{"10.0.0.6", "it announces 10.0.0.6:8777, but its broker binds the host port on node gw-1 (10.0.0.5, 203.0.113.7)"},
	} {
		got := hostPortMismatch(tc.host+":8777", tc.host, node)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.host, got, tc.want)
		}
	}
}
