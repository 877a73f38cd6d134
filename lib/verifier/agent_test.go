package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGetAndUpload(t *testing.T) {
	srv := httptest.NewServer(Handler("b"))
	defer srv.Close()
	ctx := context.Background()
	r := Get(ctx, srv.URL, Answer("b"), 0, 2*time.Second)
	if !r.OK || r.Status != 200 || r.Body != "kubelink-verifier b" || r.Millis <= 0 {
		t.Errorf("GET: %+v", r)
	}
	// loopback: MTU 65536, which the kernel reports as 65535 for the connection.
	if r.PathMTU < 65535 || r.SendMSS <= 0 {
		t.Errorf("path MTU %d, MSS %d on loopback", r.PathMTU, r.SendMSS)
	}
	r = Get(ctx, srv.URL, Answer("b"), 200000, 2*time.Second)
	if !r.OK || !strings.Contains(r.Body, "received 200000") || r.Uploaded != 200000 {
		t.Errorf("POST: %+v", r)
	}
	// Another cluster's server answers: not OK, and the error says so.
	r = Get(ctx, srv.URL, Answer("c"), 0, 2*time.Second)
	if r.OK || !strings.Contains(r.Error, "not from the expected server") {
		t.Errorf("wrong server: %+v", r)
	}
	// Nobody listens: not OK, with the error.
	r = Get(ctx, "http://127.0.0.1:1/", Answer("b"), 0, time.Second)
	if r.OK || !strings.Contains(r.Error, "refused") {
		t.Errorf("closed port: %+v", r)
	}
}

func TestWatchWritesOneLinePerCheck(t *testing.T) {
	srv := httptest.NewServer(Handler("a"))
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Watch(context.Background(), &out, srv.URL, Answer("a"), 50*time.Millisecond, 1500*time.Millisecond, 200*time.Millisecond)
	}()
	time.Sleep(700 * time.Millisecond)
	srv.Close() // the rest fail
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var ok, fail int
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r.OK {
			ok++
		} else {
			fail++
		}
	}
	if ok < 3 || fail < 3 {
		t.Errorf("%d ok and %d failed checks, want several of each:\n%s", ok, fail, out.String())
	}
}

// With over closed, the watch ends once the fetches passed for settle
// after it; a failure resets the count; before over it runs on.
func TestWatchUntilSettled(t *testing.T) {
	var failing atomic.Bool
	h := Handler("a")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	over := make(chan struct{})
	var out bytes.Buffer
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- WatchUntilSettled(context.Background(), &out, srv.URL, Answer("a"), 20*time.Millisecond, 20*time.Second, time.Second, 500*time.Millisecond, over)
	}()
	notEnded := func(d time.Duration, why string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("ended %s (%v)", why, err)
		case <-time.After(d):
		}
	}
	// Passing, but over is not closed: it runs on.
	notEnded(800*time.Millisecond, "before over was closed")
	// Closed while failing: the settle counts from the first pass after.
	failing.Store(true)
	notEnded(200*time.Millisecond, "while the fetches failed")
	close(over)
	notEnded(700*time.Millisecond, "while the fetches failed, after over")
	recovered := time.Now()
	failing.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not end 10s after the fetches passed again (settle 500ms)")
	}
	if took := time.Since(recovered); took < 450*time.Millisecond {
		t.Errorf("ended %s after the fetches passed again, before settle (500ms)", took)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || !last.OK {
		t.Errorf("last fetch %q (%v): want a pass", lines[len(lines)-1], err)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("ran %s: not ended by the settle", time.Since(start))
	}
}

func TestUploadAndRequestResponse(t *testing.T) {
	srv := httptest.NewServer(Handler("b"))
	defer srv.Close()
	ctx := context.Background()
	up := Upload(ctx, srv.URL, 500*time.Millisecond)
	if !up.OK || up.Bytes < 1<<20 || up.Mbps <= 0 || up.Seconds < 0.5 {
		t.Errorf("upload over loopback: %+v", up)
	}
	l := RequestResponse(ctx, srv.URL, 50)
	if !l.OK || l.Count != 50 || l.MinMs <= 0 || l.MinMs > l.P50Ms || l.P50Ms > l.P99Ms || l.P99Ms > l.MaxMs {
		t.Errorf("request/response over loopback: %+v", l)
	}
	l = RequestResponse(ctx, "http://127.0.0.1:1", 3)
	if l.OK || l.Errors != 3 || l.Count != 0 {
		t.Errorf("request/response to a closed port: %+v", l)
	}
}

func TestConnect(t *testing.T) {
	srv := httptest.NewServer(Handler("b"))
	defer srv.Close()
	ctx := context.Background()
	if r := Connect(ctx, strings.TrimPrefix(srv.URL, "http://"), time.Second); !r.OK || r.Error != "" {
		t.Errorf("a listening port: %+v", r)
	}
	if r := Connect(ctx, "127.0.0.1:1", time.Second); r.OK || !strings.Contains(r.Error, "refused") {
		t.Errorf("a closed port: %+v", r)
	}
}

func TestProbeUDP(t *testing.T) {
	ctx := context.Background()
	open, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if r := ProbeUDP(ctx, open.LocalAddr().String(), 400*time.Millisecond); !r.OK {
		t.Errorf("a bound port: %+v", r)
	}
	// A port nobody listens on: the kernel answers port unreachable.
	closed, _ := net.ListenPacket("udp", "127.0.0.1:0")
	addr := closed.LocalAddr().String()
	closed.Close()
	if r := ProbeUDP(ctx, addr, 400*time.Millisecond); r.OK || !strings.Contains(r.Error, "refused") {
		t.Errorf("a closed port: %+v", r)
	}
}
