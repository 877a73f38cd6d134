package meshdns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubelink/kubelink/lib/testenv"
)

// corednsBinary returns the cached CoreDNS build, building it with
// lab/scripts/coredns-bin.sh when missing. It fails, never skips: without
// the real CoreDNS the Corefile is not proven.
func corednsBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(testenv.CacheDir(), "bin", "coredns-"+CoreDNSVersion, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	script, err := filepath.Abs("../../lab/scripts/coredns-bin.sh")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("building CoreDNS %s with %s (about 3 minutes cold)", CoreDNSVersion, script)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	if err != nil {
		t.Fatalf("building CoreDNS: %v\n%s", err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s did not produce %s: %v\n%s", script, bin, err, out)
	}
	return bin
}

// freePort finds a loopback port free for both TCP and UDP (CoreDNS binds
// both).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// fakeDNS plays a cluster DNS: it answers A queries from a fixed table and
// NXDOMAIN otherwise, and records the names it was asked.
type fakeDNS struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	queries []string
}

func startFakeDNS(t *testing.T, answers map[string]string) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{addr: netip.MustParseAddrPort(pc.LocalAddr().String())}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		f.mu.Lock()
		f.queries = append(f.queries, q.Name)
		f.mu.Unlock()
		if ip, ok := answers[strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.ParseIP(ip)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f
}

func (f *fakeDNS) asked(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.queries {
		if q == name {
			return true
		}
	}
	return false
}

// coreDNS is a running CoreDNS process.
type coreDNS struct {
	conf string
	addr string
	out  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCoreDNS runs CoreDNS on corefile and waits until its ready plugin
// answers on readyAddr.
func startCoreDNS(t *testing.T, corefile string, port int, readyAddr string) *coreDNS {
	t.Helper()
	bin := corednsBinary(t)
	c := &coreDNS{conf: filepath.Join(t.TempDir(), "Corefile"), addr: fmt.Sprintf("127.0.0.1:%d", port), out: &syncBuffer{}}
	c.write(t, corefile)
	cmd := exec.Command(bin, "-conf", c.conf)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("CoreDNS output:\n%s", c.out)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("CoreDNS exited: %v\n%s", err, c.out)
		default:
		}
		resp, err := http.Get("http://" + readyAddr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("CoreDNS not ready after 20s (last: %v)\n%s", err, c.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// write replaces the Corefile atomically, as a Secret volume update does.
func (c *coreDNS) write(t *testing.T, corefile string) {
	t.Helper()
	tmp := c.conf + ".tmp"
	if err := os.WriteFile(tmp, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.conf); err != nil {
		t.Fatal(err)
	}
}

func (c *coreDNS) query(name string) (*dns.Msg, error) { return c.queryType(name, dns.TypeA) }

func (c *coreDNS) queryType(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	cl := dns.Client{Timeout: time.Second}
	r, _, err := cl.Exchange(m, c.addr)
	return r, err
}

// waitFor polls name until ok accepts the answer or the timeout passes.
func (c *coreDNS) waitFor(t *testing.T, name string, timeout time.Duration, what string, ok func(*dns.Msg) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		r, err := c.query(name)
		if err == nil && ok(r) {
			return time.Since(start)
		}
		last = fmt.Sprint(err)
		if r != nil {
			last = r.String()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s not %s within %s; last answer:\n%s\nCoreDNS output:\n%s", t.Name(), name, what, timeout, last, c.out)
	return 0
}

// resolvesTo reports an A answer with ip for exactly the name asked.
func resolvesTo(name, ip string) func(*dns.Msg) bool {
	return func(r *dns.Msg) bool {
		if r.Rcode != dns.RcodeSuccess || len(r.Question) != 1 || r.Question[0].Name != name || len(r.Answer) != 1 {
			return false
		}
		a, ok := r.Answer[0].(*dns.A)
		return ok && a.Hdr.Name == name && a.A.String() == ip
	}
}

func gone(r *dns.Msg) bool { return r.Rcode == dns.RcodeNameError || r.Rcode == dns.RcodeRefused }
