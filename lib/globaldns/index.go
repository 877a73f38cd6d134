package globaldns

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
)

// Records are the validated records of one name.
type Records struct {
	// Owner is namespace/name of the CoreDNSEntry that defines the name.
	Owner string
	A     []net.IP
	AAAA  []net.IP
	CNAME string // fully qualified, lower case; "" for none
	TXT   []string
	SRV   []SRV
}

// SRV is one validated SRV target.
type SRV struct {
	Target   string // fully qualified
	Port     uint16
	Priority uint16
	Weight   uint16
}

// Status is the state the plugin reports for an entry.
type Status struct {
	State   string
	Message string
}

// entry is one CoreDNSEntry after validation.
type entry struct {
	key     string
	names   []string
	records Records
	err     error
}

// Index holds the CoreDNSEntry objects by name. It is safe for concurrent
// use. A name claimed by several entries belongs to the first by
// namespace/name; the others are Invalid.
type Index struct {
	zones []string // fully qualified, lower case

	mu      sync.RWMutex
	entries map[string]*entry   // by namespace/name
	names   map[string]*Records // by fully qualified lower-case name
	status  map[string]Status   // by namespace/name
	// nonTerminals are names that exist only because a name below them does
	// (they answer NODATA instead of NXDOMAIN).
	nonTerminals map[string]bool
}

// NewIndex returns an empty index for the served zones.
func NewIndex(zones []string) *Index {
	z := make([]string, len(zones))
	for i, s := range zones {
		z[i] = strings.ToLower(dns.Fqdn(s))
	}
	return &Index{zones: z, entries: map[string]*entry{}, names: map[string]*Records{},
		status: map[string]Status{}, nonTerminals: map[string]bool{}}
}

// Zones are the served zones.
func (x *Index) Zones() []string { return slices.Clone(x.zones) }

// Key is the index key of an entry.
func Key(e *v1alpha1.CoreDNSEntry) string { return e.Namespace + "/" + e.Name }

// Set adds or replaces an entry.
func (x *Index) Set(e *v1alpha1.CoreDNSEntry) {
	ent := x.validate(e)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.entries[ent.key] = ent
	x.rebuild()
}

// Delete removes the entry with key namespace/name.
func (x *Index) Delete(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.entries[key]; !ok {
		return
	}
	delete(x.entries, key)
	x.rebuild()
}

// Status returns what the plugin reports for the entry (false: not indexed).
func (x *Index) Status(key string) (Status, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	s, ok := x.status[key]
	return s, ok
}

// Keys are the keys of all indexed entries, sorted.
func (x *Index) Keys() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	keys := make([]string, 0, len(x.entries))
	for k := range x.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Lookup returns the records of a fully qualified name and whether the name
// exists (it may exist without records: an empty non-terminal).
func (x *Index) Lookup(name string) (*Records, bool) {
	name = strings.ToLower(dns.Fqdn(name))
	x.mu.RLock()
	defer x.mu.RUnlock()
	if r, ok := x.names[name]; ok {
		return r, true
	}
	return nil, x.nonTerminals[name]
}

// rebuild recomputes names and states from the entries; x.mu is held.
func (x *Index) rebuild() {
	keys := make([]string, 0, len(x.entries))
	for k := range x.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	x.names = map[string]*Records{}
	x.status = map[string]Status{}
	x.nonTerminals = map[string]bool{}
	for _, k := range keys {
		ent := x.entries[k]
		if ent.err != nil {
			x.status[k] = Status{State: v1alpha1.StateInvalid, Message: ent.err.Error()}
			continue
		}
		var conflict string
		for _, n := range ent.names {
			if r, ok := x.names[n]; ok {
				conflict = fmt.Sprintf("dnsName %s is already defined by CoreDNSEntry %s", strings.TrimSuffix(n, "."), r.Owner)
				break
			}
		}
		if conflict != "" {
			x.status[k] = Status{State: v1alpha1.StateInvalid, Message: conflict}
			continue
		}
		for _, n := range ent.names {
			r := ent.records
			x.names[n] = &r
		}
		x.status[k] = Status{State: v1alpha1.StateOk}
	}
	for n := range x.names {
		zone := x.zoneOf(n)
		for p := parent(n); p != "" && dns.IsSubDomain(zone, p) && p != zone; p = parent(p) {
			x.nonTerminals[p] = true
		}
	}
}

// zoneOf returns the longest served zone that contains name ("" for none).
func (x *Index) zoneOf(name string) string {
	best := ""
	for _, z := range x.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return ""
	}
	return name[i:]
}

// validate turns a CoreDNSEntry into an indexed entry (err set if invalid).
func (x *Index) validate(e *v1alpha1.CoreDNSEntry) *entry {
	ent := &entry{key: Key(e)}
	fail := func(format string, args ...any) *entry {
		ent.err = fmt.Errorf(format, args...)
		return ent
	}
	s := &e.Spec
	if len(s.DNSNames) == 0 {
		return fail("no dnsNames")
	}
	seen := map[string]bool{}
	for _, n := range s.DNSNames {
		fq := strings.ToLower(dns.Fqdn(strings.TrimSpace(n)))
		if _, ok := dns.IsDomainName(fq); !ok || fq == "." {
			return fail("dnsName %q is not a valid domain name", n)
		}
		if x.zoneOf(fq) == "" {
			return fail("dnsName %s is outside the served zones (%s)", n, strings.Join(trimDots(x.zones), ", "))
		}
		if !seen[fq] {
			seen[fq] = true
			ent.names = append(ent.names, fq)
		}
	}
	r := &ent.records
	r.Owner = ent.key
	for _, a := range s.A {
		ip := net.ParseIP(strings.TrimSpace(a))
		if ip == nil || ip.To4() == nil {
			return fail("A %q is not an IPv4 address", a)
		}
		r.A = append(r.A, ip.To4())
	}
	for _, a := range s.AAAA {
		ip := net.ParseIP(strings.TrimSpace(a))
		if ip == nil || ip.To4() != nil {
			return fail("AAAA %q is not an IPv6 address", a)
		}
		r.AAAA = append(r.AAAA, ip)
	}
	if c := strings.TrimSpace(s.CNAME); c != "" {
		fq := strings.ToLower(dns.Fqdn(c))
		if _, ok := dns.IsDomainName(fq); !ok {
			return fail("CNAME %q is not a valid domain name", c)
		}
		if seen[fq] {
			return fail("CNAME %s points to a name of the entry itself", c)
		}
		r.CNAME = fq
	}
	for _, t := range s.TXT {
		if len(t) > 255*16 {
			return fail("TXT record longer than %d bytes", 255*16)
		}
		r.TXT = append(r.TXT, t)
	}
	if s.SRV != nil {
		for i, rec := range s.SRV.Records {
			host := strings.ToLower(dns.Fqdn(strings.TrimSpace(rec.Host)))
			if _, ok := dns.IsDomainName(host); !ok || rec.Host == "" {
				return fail("SRV record %d: host %q is not a valid domain name", i, rec.Host)
			}
			if rec.Port < 1 || rec.Port > 65535 {
				return fail("SRV record %d: port %d out of range 1-65535", i, rec.Port)
			}
			if rec.Protocol != "" && !slices.Contains([]string{"tcp", "udp", "sctp"}, strings.ToLower(rec.Protocol)) {
				return fail("SRV record %d: protocol %q is not tcp, udp or sctp", i, rec.Protocol)
			}
			srv := SRV{Target: host, Port: uint16(rec.Port)}
			for _, f := range []struct {
				name string
				v    *int32
				to   *uint16
			}{{"priority", rec.Priority, &srv.Priority}, {"weight", rec.Weight, &srv.Weight}} {
				if f.v == nil {
					continue
				}
				if *f.v < 0 || *f.v > 65535 {
					return fail("SRV record %d: %s %d out of range 0-65535", i, f.name, *f.v)
				}
				*f.to = uint16(*f.v)
			}
			r.SRV = append(r.SRV, srv)
		}
	}
	others := len(r.A) + len(r.AAAA) + len(r.TXT) + len(r.SRV)
	if r.CNAME != "" && others > 0 {
		return fail("CNAME cannot be combined with other records")
	}
	if r.CNAME == "" && others == 0 {
		return fail("no records (A, AAAA, CNAME, TXT or SRV)")
	}
	return ent
}

func trimDots(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimSuffix(n, ".")
	}
	return out
}
