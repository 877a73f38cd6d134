// Command coredns is CoreDNS v1.12.1 with its standard plugins, built from Go
// modules for the mesh DNS tests and the lab (see lab/scripts/coredns-bin.sh).
package main

import (
	_ "github.com/coredns/coredns/core/plugin" // registers the standard plugins, as CoreDNS's own main does
	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
