package globaldns

import (
	"strings"

	"github.com/miekg/dns"
)

// Result is the answer to one question.
type Result struct {
	// Zone is the served zone of the name ("": not ours, ask the next plugin).
	Zone string
	// Exists: the name exists (with or without records of the type).
	Exists bool
	Rcode  int
	Answer []dns.RR
	Ns     []dns.RR
}

// maxChase bounds how many CNAMEs inside the index an answer follows.
const maxChase = 8

// Answer answers qname/qtype from the index with records of the given TTL:
// the records of the name (following CNAMEs inside the index), NODATA (with
// the zone's SOA) for a name without records of the type, NXDOMAIN (with the
// SOA) for an unknown name in the zone. A name outside the zones gets a
// Result with Zone "".
func (x *Index) Answer(qname string, qtype uint16, ttl uint32) Result {
	name := strings.ToLower(dns.Fqdn(qname))
	zone := x.zoneOf(name)
	if zone == "" {
		return Result{}
	}
	res := Result{Zone: zone, Rcode: dns.RcodeSuccess}
	if name == zone {
		// The apex: SOA and NS of our own.
		res.Exists = true
		switch qtype {
		case dns.TypeSOA:
			res.Answer = []dns.RR{soa(zone, ttl)}
		case dns.TypeNS:
			res.Answer = []dns.RR{&dns.NS{Hdr: hdr(zone, dns.TypeNS, ttl), Ns: "ns.dns." + zone}}
		}
		if len(res.Answer) > 0 {
			return res
		}
		// The apex may also be an entry's name.
	}
	owner := qname // keep the asker's spelling in the answer
	for i := 0; i <= maxChase; i++ {
		r, exists := x.Lookup(name)
		if i == 0 {
			res.Exists = exists || res.Exists
			if !res.Exists {
				res.Rcode = dns.RcodeNameError
				res.Ns = []dns.RR{soa(zone, ttl)}
				return res
			}
		}
		if r == nil {
			break
		}
		if r.CNAME != "" && qtype != dns.TypeCNAME {
			res.Answer = append(res.Answer, &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, ttl), Target: r.CNAME})
			if x.zoneOf(r.CNAME) == "" {
				break // the resolver follows it
			}
			owner, name = r.CNAME, r.CNAME
			continue
		}
		res.Answer = append(res.Answer, records(owner, r, qtype, ttl)...)
		break
	}
	if len(res.Answer) == 0 {
		res.Ns = []dns.RR{soa(zone, ttl)}
	}
	return res
}

// records are r's records of qtype for owner.
func records(owner string, r *Records, qtype uint16, ttl uint32) []dns.RR {
	var rrs []dns.RR
	switch qtype {
	case dns.TypeA, dns.TypeANY:
		for _, ip := range r.A {
			rrs = append(rrs, &dns.A{Hdr: hdr(owner, dns.TypeA, ttl), A: ip})
		}
		if qtype == dns.TypeA {
			break
		}
		fallthrough
	case dns.TypeAAAA:
		for _, ip := range r.AAAA {
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, ttl), AAAA: ip})
		}
		if qtype == dns.TypeAAAA {
			break
		}
		fallthrough
	case dns.TypeTXT:
		if len(r.TXT) > 0 {
			rrs = append(rrs, &dns.TXT{Hdr: hdr(owner, dns.TypeTXT, ttl), Txt: splitTXT(r.TXT)})
		}
		if qtype == dns.TypeTXT {
			break
		}
		fallthrough
	case dns.TypeSRV:
		for _, s := range r.SRV {
			rrs = append(rrs, &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, ttl), Priority: s.Priority, Weight: s.Weight, Port: s.Port, Target: s.Target})
		}
	case dns.TypeCNAME:
		if r.CNAME != "" {
			rrs = append(rrs, &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, ttl), Target: r.CNAME})
		}
	}
	return rrs
}

// splitTXT splits strings longer than 255 bytes into character-strings.
func splitTXT(txt []string) []string {
	var out []string
	for _, t := range txt {
		for len(t) > 255 {
			out = append(out, t[:255])
			t = t[255:]
		}
		out = append(out, t)
	}
	return out
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// soa is the zone's SOA; its minimum (negative-caching TTL) is ttl, so an
// entry that appears is visible within ttl seconds.
func soa(zone string, ttl uint32) dns.RR {
	return &dns.SOA{Hdr: hdr(zone, dns.TypeSOA, ttl), Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone,
		Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}
}
