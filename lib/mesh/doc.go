// Package mesh is kubelink's pure model: it parses and validates KubeLinks and
// MeshServices, groups them into meshes, and computes the desired state of the
// data plane (routes, WireGuard peers, NAT and firewall rules) as plain values.
//
// It imports neither client-go nor netlink: appliers elsewhere make the kernel
// and the API match what this package computes, and every function here is
// table-tested.
package mesh
