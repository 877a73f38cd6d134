// Command kubelink-bridge is the TLS bridge data plane on its own: the
// broker (lib/broker) with --mode=bridge fixed and only the flags that
// matter to the bridge. It carries mesh packets between clusters over
// mutual-TLS TCP connections from a tun device, and owns the device's
// addresses, routes, SNAT and MeshService DNAT, the connections and the
// status of every KubeLink, like the broker in bridge mode.
package main

import "github.com/kubelink/kubelink/lib/broker"

func main() {
	broker.Main("kubelink-bridge", "carries mesh packets between clusters over mutual-TLS TCP connections (the broker with --mode=bridge)", broker.ModeBridge)
}
