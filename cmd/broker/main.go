// Command kubelink-broker is the gateway controller of a cluster: it owns the
// mesh device (kernel WireGuard, embedded wireguard-go when the kernel has
// no WireGuard, or the TLS bridge's tun device), its addresses, routes, SNAT
// and firewall chains, the peers, and the status of every KubeLink.
package main

import "github.com/kubelink/kubelink/lib/broker"

func main() {
	broker.Main("kubelink-broker", "owns the mesh device on the gateway (WireGuard or TLS bridge), its addresses, routes, NAT and firewall chains, peers and link status", "")
}
