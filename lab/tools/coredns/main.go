// Command coredns is CoreDNS v1.14.0 with the plugins kubelink's Corefiles
// and a cluster's own DNS use, plus kubelink's kubelinkglobal plugin
// (lib/globaldns: mesh-global names from CoreDNSEntry objects) and
// kubelinkgate (lib/linkgate: a member's zone only while its KubeLink is
// Up), built from Go modules for the mesh DNS tests, the lab and the
// kubelink/coredns image (see lab/scripts/coredns-bin.sh).
//
// Only those plugins are compiled in. The cloud back ends (azure, clouddns,
// route53), etcd, grpc, dnstap, geoip and trace are left out: kubelink never
// configures them, and they would add their SDKs to the image a member's
// traffic reaches and to every cold build (the build took 226 s with every
// plugin). A Corefile naming a plugin that is not compiled in fails at
// start with "unknown directive".
package main

import (
	_ "github.com/coredns/caddy/onevent"
	_ "github.com/coredns/coredns/plugin/acl"
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/autopath"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/bufsize"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/cancel"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/header"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/local"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/minimal"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/root"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/timeouts"
	_ "github.com/coredns/coredns/plugin/tls"
	_ "github.com/coredns/coredns/plugin/transfer"
	_ "github.com/coredns/coredns/plugin/view"
	_ "github.com/coredns/coredns/plugin/whoami"
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
