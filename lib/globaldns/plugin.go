// Package globaldns is the kubelinkglobal CoreDNS plugin: it serves the
// mesh-global names <name>.svc.global.<mesh-domain> from CoreDNSEntry objects
// (group coredns.mandelsoft.org/v1alpha1, compatible with the original
// kubelink's mesh-global DNS), watched with a client-go informer.
//
// Corefile:
//
//	kubelinkglobal [ZONES...] {
//	    kubeconfig PATH [CONTEXT]   # default: in-cluster configuration
//	    namespace NAMESPACE         # default: all namespaces
//	    ttl SECONDS                 # default 5 (also the negative-caching TTL)
//	    status on|off               # write status.state/message (default on)
//	    fallthrough [ZONES...]
//	}
//
// ZONES default to the server block's zones. Unknown names in the zones get
// NXDOMAIN unless fallthrough covers them. CoreDNS plugins are compiled in:
// lab/tools/coredns builds CoreDNS with this plugin (importing the package
// registers it; the binary adds it to the directive order).
package globaldns

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// PluginName is the Corefile directive.
const PluginName = "kubelinkglobal"

// Plugin is the kubelinkglobal handler.
type Plugin struct {
	Next  plugin.Handler
	Index *Index
	TTL   uint32
	Fall  fall.F

	watch *watcher
}

// Name implements plugin.Handler.
func (p *Plugin) Name() string { return PluginName }

// Ready implements the ready plugin's Readiness: ready once the informer
// has synced.
func (p *Plugin) Ready() bool { return p.watch == nil || p.watch.synced() }

// ServeDNS implements plugin.Handler.
func (p *Plugin) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	res := p.Index.Answer(qname, state.QType(), p.TTL)
	if res.Zone == "" {
		return plugin.NextOrFailure(p.Name(), p.Next, ctx, w, r)
	}
	if !res.Exists && p.Fall.Through(qname) {
		return plugin.NextOrFailure(p.Name(), p.Next, ctx, w, r)
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Rcode = res.Rcode
	m.Answer = res.Answer
	m.Ns = res.Ns
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return dns.RcodeSuccess, nil
}
