// Package linkgate is the kubelinkgate CoreDNS plugin: it answers a mesh
// member's zone only while the KubeLink to that member is Up, and caps the
// TTL of what it lets through, so that a member whose link leaves Up is gone
// from every resolver within about a second (issue #11: ≤ 3 s), without a
// new Corefile or a restarted CoreDNS. kubelink-meshdns puts it first in
// every member block it renders:
//
//	b.kubelink:8053 {
//	    kubelinkgate b {            # the KubeLink's name
//	        kubeconfig PATH [CTX]   # default: in-cluster configuration
//	        ttl SECONDS             # cap on answer TTLs, default 1
//	    }
//	    rewrite ...
//	    forward ...
//	}
//
// While the link is not Up the zone answers NXDOMAIN (with an SOA whose
// negative TTL is the cap); before the KubeLinks were listed it answers
// SERVFAIL (it does not know yet). All blocks of a CoreDNS share one
// informer on KubeLinks per kubeconfig.
package linkgate

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// PluginName is the Corefile directive.
const PluginName = "kubelinkgate"

// StateUp is the KubeLink state in which the zone is served.
const StateUp = "Up"

// States tells the state of a KubeLink by name.
type States interface {
	// State returns the link's status.state and whether the KubeLinks have
	// been listed at all.
	State(link string) (state string, synced bool)
}

// Gate is the handler of one member block.
type Gate struct {
	Next   plugin.Handler
	Link   string
	Zone   string // the block's zone, for the SOA of NXDOMAIN answers
	TTL    uint32
	States States
}

// Name implements plugin.Handler.
func (g *Gate) Name() string { return PluginName }

// ServeDNS implements plugin.Handler.
func (g *Gate) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state, synced := g.States.State(g.Link)
	if !synced {
		return dns.RcodeServerFailure, nil // CoreDNS writes the SERVFAIL
	}
	if state != StateUp {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.Authoritative = true
		m.Ns = []dns.RR{g.soa(request.Request{W: w, Req: r})}
		if err := w.WriteMsg(m); err != nil {
			return dns.RcodeServerFailure, err
		}
		return dns.RcodeNameError, nil
	}
	return plugin.NextOrFailure(g.Name(), g.Next, ctx, &capTTL{ResponseWriter: w, ttl: g.TTL}, r)
}

func (g *Gate) soa(state request.Request) dns.RR {
	zone := g.Zone
	if zone == "" {
		zone = state.Zone
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: g.TTL},
		Ns:      "ns.dns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 7200, Retry: 1800, Expire: 86400,
		Minttl: g.TTL,
	}
}

// capTTL lowers every TTL of a response to at most ttl, so that resolvers
// behind this CoreDNS (the cluster DNS with its cache) keep an answer no
// longer than the gate's reaction time.
type capTTL struct {
	dns.ResponseWriter
	ttl uint32
}

func (c *capTTL) WriteMsg(m *dns.Msg) error {
	m = m.Copy() // the records may be shared with a cache behind us
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT && h.Ttl > c.ttl {
				h.Ttl = c.ttl
			}
		}
	}
	return c.ResponseWriter.WriteMsg(m)
}
