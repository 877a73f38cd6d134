package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"strings"
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
