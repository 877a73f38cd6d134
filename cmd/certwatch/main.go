// Command kubelink-certwatch materialises TLS and WireGuard secrets as files with an atomic swap and manages keys and certificates.
package main

import (
	"fmt"

	"github.com/kubelink/kubelink/lib/cli"
)

func main() {
	cmd := cli.New("kubelink-certwatch", "materialises TLS and WireGuard secrets as files with an atomic swap and manages keys and certificates")
	cmd.Main(func() error {
		// The run loop lands with issue #4; until then the binary only answers
		// --help and --version and refuses to pretend it is running.
		return fmt.Errorf("kubelink-certwatch: not implemented yet (tracked in issue #4)")
	})
}
