package globaldns

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
)

const zone = "svc.global.kubelink."

func newEntry(ns, name string, spec v1alpha1.CoreDNSEntrySpec) *v1alpha1.CoreDNSEntry {
	return &v1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func i32(v int32) *int32 { return &v }

func testIndex(t *testing.T) *Index {
	t.Helper()
	x := NewIndex([]string{"svc.global.kubelink"})
	x.Set(newEntry("default", "foo", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"foo.svc.global.kubelink", "Foo2.svc.global.kubelink."},
		A: []string{"100.64.16.20", "100.64.16.21"}, AAAA: []string{"fd00::20"}, TXT: []string{"hello", strings.Repeat("x", 300)}}))
	x.Set(newEntry("default", "alias", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"alias.svc.global.kubelink"}, CNAME: "foo.svc.global.kubelink"}))
	x.Set(newEntry("default", "ext", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"ext.svc.global.kubelink"}, CNAME: "www.example.com"}))
	x.Set(newEntry("other", "srv", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"_http._tcp.web.svc.global.kubelink"},
		SRV: &v1alpha1.SRVRecords{Service: "_http._tcp", Records: []v1alpha1.SRVRecord{
			{Host: "foo.svc.global.kubelink", Port: 80, Protocol: "tcp", Priority: i32(10), Weight: i32(5)},
			{Host: "foo2.svc.global.kubelink", Port: 8080}}}}))
	return x
}

func TestAnswer(t *testing.T) {
	x := testIndex(t)
	cases := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string // RR strings without header TTL/class noise
		soa    bool
	}{
		{"foo.svc.global.kubelink", dns.TypeA, dns.RcodeSuccess, []string{"A 100.64.16.20", "A 100.64.16.21"}, false},
		{"FOO.svc.global.kubelink.", dns.TypeA, dns.RcodeSuccess, []string{"A 100.64.16.20", "A 100.64.16.21"}, false},
		{"foo2.svc.global.kubelink", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00::20"}, false},
		{"foo.svc.global.kubelink", dns.TypeTXT, dns.RcodeSuccess, []string{`TXT "hello" "` + strings.Repeat("x", 255) + `" "` + strings.Repeat("x", 45) + `"`}, false},
		{"foo.svc.global.kubelink", dns.TypeMX, dns.RcodeSuccess, nil, true}, // NODATA
		{"alias.svc.global.kubelink", dns.TypeA, dns.RcodeSuccess, []string{"CNAME foo.svc.global.kubelink.", "A 100.64.16.20", "A 100.64.16.21"}, false},
		{"alias.svc.global.kubelink", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME foo.svc.global.kubelink."}, false},
		{"ext.svc.global.kubelink", dns.TypeA, dns.RcodeSuccess, []string{"CNAME www.example.com."}, false},
		{"_http._tcp.web.svc.global.kubelink", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 10 5 80 foo.svc.global.kubelink.", "SRV 0 0 8080 foo2.svc.global.kubelink."}, false},
		{"_tcp.web.svc.global.kubelink", dns.TypeA, dns.RcodeSuccess, nil, true}, // empty non-terminal
		{"bar.svc.global.kubelink", dns.TypeA, dns.RcodeNameError, nil, true},
		{"svc.global.kubelink", dns.TypeSOA, dns.RcodeSuccess, []string{"SOA ns.dns.svc.global.kubelink. hostmaster.svc.global.kubelink. 1 7200 1800 86400 5"}, false},
		{"svc.global.kubelink", dns.TypeA, dns.RcodeSuccess, nil, true},
	}
	for _, c := range cases {
		res := x.Answer(c.name, c.qtype, 5)
		if res.Zone != zone {
			t.Errorf("%s: zone %q", c.name, res.Zone)
		}
		if res.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s; want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[res.Rcode], dns.RcodeToString[c.rcode])
		}
		var got []string
		for _, rr := range res.Answer {
			if rr.Header().Ttl != 5 {
				t.Errorf("%s: TTL %d", rr, rr.Header().Ttl)
			}
			f := strings.Fields(rr.String())
			got = append(got, strings.Join(f[3:], " "))
		}
		if !slices.Equal(got, c.answer) {
			t.Errorf("%s %s: answer %q; want %q", c.name, dns.TypeToString[c.qtype], got, c.answer)
		}
		if hasSOA := len(res.Ns) == 1 && res.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != c.soa {
			t.Errorf("%s %s: authority %v; want SOA: %v", c.name, dns.TypeToString[c.qtype], res.Ns, c.soa)
		}
	}
	// The asker's spelling is kept in the answer.
	if res := x.Answer("FOO.svc.global.kubelink", dns.TypeA, 5); res.Answer[0].Header().Name != "FOO.svc.global.kubelink." {
		t.Errorf("owner name %q", res.Answer[0].Header().Name)
	}
	// Outside the zone: not ours.
	if res := x.Answer("foo.b.kubelink", dns.TypeA, 5); res.Zone != "" {
		t.Errorf("foo.b.kubelink: zone %q; want none", res.Zone)
	}
	// Deleting the entry removes its names.
	x.Delete("default/foo")
	if res := x.Answer("foo.svc.global.kubelink", dns.TypeA, 5); res.Rcode != dns.RcodeNameError {
		t.Errorf("after delete: %s", dns.RcodeToString[res.Rcode])
	}
	// The CNAME now points nowhere inside the index; it is still answered.
	if res := x.Answer("alias.svc.global.kubelink", dns.TypeA, 5); len(res.Answer) != 1 {
		t.Errorf("dangling alias: %v", res.Answer)
	}
}

func TestValidation(t *testing.T) {
	x := NewIndex([]string{"svc.global.kubelink."})
	cases := []struct {
		name string
		spec v1alpha1.CoreDNSEntrySpec
		msg  string // "" = Ok
	}{
		{"ok", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"ok.svc.global.kubelink"}, A: []string{"10.0.0.1"}}, ""},
		{"outside", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"foo.example.com"}, A: []string{"10.0.0.1"}}, "outside the served zones (svc.global.kubelink)"},
		{"nonames", v1alpha1.CoreDNSEntrySpec{A: []string{"10.0.0.1"}}, "no dnsNames"},
		{"badname", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"a..svc.global.kubelink"}, A: []string{"10.0.0.1"}}, "not a valid domain name"},
		{"bada", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"bada.svc.global.kubelink"}, A: []string{"fd00::1"}}, `A "fd00::1" is not an IPv4 address`},
		{"badaaaa", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"badaaaa.svc.global.kubelink"}, AAAA: []string{"10.0.0.1"}}, "not an IPv6 address"},
		{"mixed", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"mixed.svc.global.kubelink"}, A: []string{"10.0.0.1"}, CNAME: "x.example.com"}, "CNAME cannot be combined"},
		{"empty", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"empty.svc.global.kubelink"}}, "no records"},
		{"badport", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"p.svc.global.kubelink"}, SRV: &v1alpha1.SRVRecords{Records: []v1alpha1.SRVRecord{{Host: "h.example.com", Port: 0}}}}, "port 0 out of range"},
		{"badprio", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"q.svc.global.kubelink"}, SRV: &v1alpha1.SRVRecords{Records: []v1alpha1.SRVRecord{{Host: "h.example.com", Port: 1, Priority: i32(70000)}}}}, "priority 70000 out of range"},
		{"zdup", v1alpha1.CoreDNSEntrySpec{DNSNames: []string{"OK.svc.global.kubelink"}, A: []string{"10.0.0.2"}}, "dnsName ok.svc.global.kubelink is already defined by CoreDNSEntry ns/ok"},
	}
	for _, c := range cases {
		x.Set(newEntry("ns", c.name, c.spec))
	}
	for _, c := range cases {
		st, ok := x.Status("ns/" + c.name)
		if !ok {
			t.Fatalf("%s: no status", c.name)
		}
		if c.msg == "" {
			if st.State != v1alpha1.StateOk || st.Message != "" {
				t.Errorf("%s: %+v; want Ok", c.name, st)
			}
			continue
		}
		if st.State != v1alpha1.StateInvalid || !strings.Contains(st.Message, c.msg) {
			t.Errorf("%s: %+v; want Invalid with %q", c.name, st, c.msg)
		}
	}
	// The first owner keeps the name; when it goes, the other takes over.
	if r, _ := x.Lookup("ok.svc.global.kubelink"); r == nil || !r.A[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("ok: %+v", r)
	}
	x.Delete("ns/ok")
	if st, _ := x.Status("ns/zdup"); st.State != v1alpha1.StateOk {
		t.Errorf("zdup after the owner went: %+v", st)
	}
	if r, _ := x.Lookup("ok.svc.global.kubelink"); r == nil || !r.A[0].Equal(net.ParseIP("10.0.0.2")) {
		t.Errorf("ok after the owner went: %+v", r)
	}
}

func TestAddDirective(t *testing.T) {
	AddDirective()
	AddDirective()
	d := directives()
	i, k := slices.Index(d, PluginName), slices.Index(d, "kubernetes")
	if i < 0 || k < 0 || i != k-1 {
		t.Errorf("kubelinkglobal at %d, kubernetes at %d", i, k)
	}
	n := 0
	for _, s := range d {
		if s == PluginName {
			n++
		}
	}
	if n != 1 {
		t.Errorf("kubelinkglobal %d times in the directives", n)
	}
}
