// Command kubelink-router installs, on every node, the routes that send mesh traffic to the active gateway.
package main

import (
	"fmt"

	"github.com/kubelink/kubelink/lib/cli"
)

func main() {
	cmd := cli.New("kubelink-router", "installs, on every node, the routes that send mesh traffic to the active gateway")
	cmd.Main(func() error {
		// The run loop lands with issue #3; until then the binary only answers
		// --help and --version and refuses to pretend it is running.
		return fmt.Errorf("kubelink-router: not implemented yet (tracked in issue #3)")
	})
}
