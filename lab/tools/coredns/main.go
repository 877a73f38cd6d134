// Command coredns is CoreDNS v1.12.1 with its standard plugins plus
// kubelink's kubelinkglobal plugin (lib/globaldns: mesh-global names from
// CoreDNSEntry objects) and kubelinkgate (lib/linkgate: a member's zone only
// while its KubeLink is Up), built from Go modules for the mesh DNS tests, the
// lab and the global DNS image (see lab/scripts/coredns-bin.sh).
package main

import (
	_ "github.com/coredns/coredns/core/plugin" // registers the standard plugins, as CoreDNS's own main does
	"github.com/coredns/coredns/coremain"

	"github.com/kubelink/kubelink/lib/globaldns" // registers kubelinkglobal
	"github.com/kubelink/kubelink/lib/linkgate"  // registers kubelinkgate
)

func main() {
	// CoreDNS plugins are compiled in and ordered by dnsserver.Directives
	// (generated from plugin.cfg); custom builds insert theirs there.
	globaldns.AddDirective()
	linkgate.AddDirective()
	coremain.Run()
}
