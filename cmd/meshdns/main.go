// Command kubelink-meshdns renders the Corefile of the kubelink CoreDNS so that <svc>.<ns>.svc.<cluster>.<mesh-domain> resolves in every cluster.
package main

import (
	"fmt"

	"github.com/kubelink/kubelink/lib/cli"
)

func main() {
	cmd := cli.New("kubelink-meshdns", "renders the Corefile of the kubelink CoreDNS so that <svc>.<ns>.svc.<cluster>.<mesh-domain> resolves in every cluster")
	cmd.Main(func() error {
		// The run loop lands with issue #5; until then the binary only answers
		// --help and --version and refuses to pretend it is running.
		return fmt.Errorf("kubelink-meshdns: not implemented yet (tracked in issue #5)")
	})
}
