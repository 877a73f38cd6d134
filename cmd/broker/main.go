// Command kubelink-broker owns the mesh device on the gateway (WireGuard or TLS-bridge tun), its addresses, routes, NAT and firewall chains, peers and link status.
package main

import (
	"fmt"

	"github.com/kubelink/kubelink/lib/cli"
)

func main() {
	cmd := cli.New("kubelink-broker", "owns the mesh device on the gateway (WireGuard or TLS-bridge tun), its addresses, routes, NAT and firewall chains, peers and link status")
	cmd.Main(func() error {
		// The run loop lands with issue #3; until then the binary only answers
		// --help and --version and refuses to pretend it is running.
		return fmt.Errorf("kubelink-broker: not implemented yet (tracked in issue #3)")
	})
}
