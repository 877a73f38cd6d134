package linkgate

import (
	"context"
	"testing"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

type fixedStates struct {
	state  map[string]string
	synced bool
}

func (f fixedStates) State(link string) (string, bool) { return f.state[link], f.synced }

// answer is the member's DNS behind the gate: an A record with TTL 5.
var answer = plugin.HandlerFunc(func(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = []dns.RR{test.A("echo.default.svc.b.kubelink. 5 IN A 100.64.16.20")}
	return dns.RcodeSuccess, w.WriteMsg(m)
})

func TestGateServesOnlyWhileTheLinkIsUp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		states    fixedStates
		wantRcode int
		wantTTL   uint32 // of the answer, or of the SOA for NXDOMAIN
		answered  bool
	}{
		{"Up: the member answers, TTL capped", fixedStates{map[string]string{"b": "Up"}, true}, dns.RcodeSuccess, 1, true},
		{"Down: NXDOMAIN with a short negative TTL", fixedStates{map[string]string{"b": "Down"}, true}, dns.RcodeNameError, 1, false},
		{"Idle: NXDOMAIN", fixedStates{map[string]string{"b": "Idle"}, true}, dns.RcodeNameError, 1, false},
		{"no such KubeLink: NXDOMAIN", fixedStates{map[string]string{"c": "Up"}, true}, dns.RcodeNameError, 1, false},
		{"KubeLinks not listed yet: SERVFAIL", fixedStates{nil, false}, dns.RcodeServerFailure, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Gate{Next: answer, Link: "b", Zone: "b.kubelink.", TTL: 1, States: tc.states}
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			r := new(dns.Msg)
			r.SetQuestion("echo.default.svc.b.kubelink.", dns.TypeA)
			rcode, err := g.ServeDNS(context.Background(), rec, r)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantRcode == dns.RcodeServerFailure {
				if rcode != dns.RcodeServerFailure || rec.Msg != nil {
					t.Fatalf("rcode %d, written %v; want SERVFAIL left to CoreDNS to write", rcode, rec.Msg)
				}
				return
			}
			if rec.Msg == nil || rec.Msg.Rcode != tc.wantRcode {
				t.Fatalf("answer %v, want rcode %s", rec.Msg, dns.RcodeToString[tc.wantRcode])
			}
			if tc.answered {
				if len(rec.Msg.Answer) != 1 || rec.Msg.Answer[0].Header().Ttl != tc.wantTTL {
					t.Fatalf("answer %v, want one record with TTL %d", rec.Msg.Answer, tc.wantTTL)
				}
				return
			}
			if len(rec.Msg.Answer) != 0 || len(rec.Msg.Ns) != 1 {
				t.Fatalf("NXDOMAIN %v: want no answer and one SOA", rec.Msg)
			}
			soa, ok := rec.Msg.Ns[0].(*dns.SOA)
			if !ok || soa.Hdr.Name != "b.kubelink." || soa.Minttl != tc.wantTTL || soa.Hdr.Ttl != tc.wantTTL {
				t.Fatalf("authority %v, want the SOA of b.kubelink. with TTL and minimum %d", rec.Msg.Ns[0], tc.wantTTL)
			}
		})
	}
}

func TestCapTTLLeavesTheOriginalAlone(t *testing.T) {
	m := new(dns.Msg)
	m.Answer = []dns.RR{test.A("a. 30 IN A 1.2.3.4"), test.A("b. 0 IN A 1.2.3.5")}
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	if err := (&capTTL{ResponseWriter: rec, ttl: 2}).WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if got := []uint32{rec.Msg.Answer[0].Header().Ttl, rec.Msg.Answer[1].Header().Ttl}; got[0] != 2 || got[1] != 0 {
		t.Errorf("written TTLs %v, want [2 0]", got)
	}
	if m.Answer[0].Header().Ttl != 30 {
		t.Errorf("the original record was changed to TTL %d (a cache may hold it)", m.Answer[0].Header().Ttl)
	}
}
