package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A HostPort broker answers only at its own node's addresses: another
// node's address is an error, no node's address a warning (a NAT in front
// may forward to the gateway), a name is left alone by the caller.
func TestHostPortFinding(t *testing.T) {
	node := func(name string, addrs ...string) corev1.Node {
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		return n
	}
	nodes := []corev1.Node{node("gw-1", "10.0.0.5", "203.0.113.7"), node("worker", "10.0.0.6")}
	for _, tc := range []struct{ host, sev, want string }{
		{"203.0.113.7", "", ""},
		{"10.0.0.5", "", ""},
		{"10.0.0.6", "error", "it announces 10.0.0.6:8777, the address of node worker, but its broker binds the host port on node gw-1 (10.0.0.5, 203.0.113.7)"},
		{"198.51.100.9", "warning", "it announces 198.51.100.9:8777, which is no node's address; its broker binds the host port on node gw-1"},
	} {
		sev, cause, fix := hostPortFinding(tc.host+":8777", tc.host, nodes, "gw-1")
		if sev != tc.sev || !strings.Contains(cause, tc.want) || (sev != "") != (fix != "") {
			t.Errorf("%s: %s %q (fix %q), want %s %q", tc.host, sev, cause, fix, tc.sev, tc.want)
		}
	}
}
