// Package verifier is the agent `kubelinkctl verify` runs in the pods it
// starts in each cluster: a small HTTP server that answers with its
// cluster's name, and a client that fetches a URL once (or every interval
// over a window) and reports what happened as one JSON line, with the path
// MTU the kernel measured on the connection.
package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Answer is the body the server sends: "kubelink-verifier <cluster>".
func Answer(cluster string) string { return "kubelink-verifier " + cluster + "\n" }

// maxUpload bounds what the server reads of a POST body.
const maxUpload = 1 << 20

// Handler answers GET with Answer(cluster), and POST (the MTU check's
// upload) with the number of bytes it read, then the same answer.
func Handler(cluster string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ping": // the latency test: as small as it gets
			io.WriteString(w, "pong\n")
			return
		case "/sink": // the throughput test: everything read, counted
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]int64{"bytes": n})
			return
		}
		if r.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxUpload))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "received %d\n", n)
		}
		io.WriteString(w, Answer(cluster))
	})
}

// Serve runs the server on listen until ctx ends.
func Serve(ctx context.Context, cluster, listen string) error {
	// No read timeout: a throughput upload runs as long as asked (the
	// client bounds it).
	srv := &http.Server{Addr: listen, Handler: Handler(cluster), ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Minute, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Result is one fetch.
type Result struct {
	OK         bool    `json:"ok"`
	Status     int     `json:"status,omitempty"`
	Body       string  `json:"body,omitempty"`
	Error      string  `json:"error,omitempty"`
	Millis     float64 `json:"ms"`
	PathMTU    int     `json:"pathMTU,omitempty"`    // the kernel's path MTU of the connection
	SendMSS    int     `json:"sendMSS,omitempty"`    // its send MSS
	Uploaded   int     `json:"uploaded,omitempty"`   // bytes of the POST body
	UnixMillis int64   `json:"unixMillis,omitempty"` // when the fetch started
}

// Get fetches url once within timeout: a GET, or with upload > 0 a POST of
// that many bytes (large segments, so that the kernel learns the path MTU).
// OK means status 200 and a body that contains want.
func Get(ctx context.Context, url, want string, upload int, timeout time.Duration) Result {
	start := time.Now()
	r := Result{UnixMillis: start.UnixMilli()}
	tr, conn := oneConnection()
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var req *http.Request
	var err error
	if upload > 0 {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bytes.Repeat([]byte{'k'}, upload)))
		r.Uploaded = upload
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		// Read while the connection is open (it closes with the body).
		if *conn != nil {
			r.PathMTU, r.SendMSS = pathMTU(*conn)
		}
		var body []byte
		body, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		r.Status, r.Body = resp.StatusCode, strings.TrimSpace(string(body))
	}
	r.Millis = float64(time.Since(start).Microseconds()) / 1000
	switch {
	case err != nil:
		r.Error = err.Error()
	case r.Status != http.StatusOK:
		r.Error = fmt.Sprintf("status %d", r.Status)
	case lastLine(r.Body) != strings.TrimSpace(want):
		r.Error = fmt.Sprintf("the answer %q is not from the expected server (%q)", r.Body, strings.TrimSpace(want))
	default:
		r.OK = true
	}
	return r
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.TrimSpace(s[strings.LastIndex(s, "\n")+1:])
}

// oneConnection is a transport for one request on its own connection, and
// where that connection will be (to read its path MTU while it is open).
func oneConnection() (*http.Transport, *net.Conn) {
	conn := new(net.Conn)
	return &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		*conn = c
		return c, err
	}}, conn
}

// pathMTU reads the kernel's path MTU and send MSS of a TCP connection
// (0 when it cannot).
func pathMTU(c net.Conn) (mtu, mss int) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, 0
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, 0
	}
	raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), syscall.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			mtu, mss = int(info.Pmtu), int(info.Snd_mss)
		}
	})
	return mtu, mss
}

// Watch fetches url every interval for window, writing one JSON Result per
// line to out, each bounded by timeout.
func Watch(ctx context.Context, out io.Writer, url, want string, every, window, timeout time.Duration) error {
	return WatchUntilSettled(ctx, out, url, want, every, window, timeout, 0, nil)
}

// WatchUntilSettled is Watch that may end before window: once over is
// closed (what is measured, e.g. a failover, is over), it ends as soon as
// every fetch of the last settle passed, counting only from when over
// closed. Until then, and with settle 0 or over nil, it fetches for all of
// window.
func WatchUntilSettled(ctx context.Context, out io.Writer, url, want string, every, window, timeout, settle time.Duration, over <-chan struct{}) error {
	end := time.Now().Add(window)
	enc := json.NewEncoder(out)
	s := Settling{Settle: settle}
	for time.Now().Before(end) {
		start := time.Now()
		r := Get(ctx, url, want, 0, timeout)
		if err := enc.Encode(r); err != nil {
			return err
		}
		isOver := false
		if over != nil {
			select {
			case <-over:
				isOver = true
			default:
			}
		}
		if s.Settled(start, r.OK, isOver) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// Settling decides when a series of checks may end early: once the event
// measured is over, as soon as every check of the last Settle passed,
// counting only from when it was over. Settle 0 never settles. The e2e
// prober ends its series by the same rule.
type Settling struct {
	Settle               time.Duration
	overAt, passingSince time.Time // zero: not yet, none passing
}

// Settled takes the check that started at start (ok: it passed; over: the
// event is known to be over) and reports whether the series may end.
func (s *Settling) Settled(start time.Time, ok, over bool) bool {
	switch {
	case !ok:
		s.passingSince = time.Time{}
	case s.passingSince.IsZero():
		s.passingSince = start
	}
	if over && s.overAt.IsZero() && s.Settle > 0 {
		s.overAt = start
	}
	if s.overAt.IsZero() || s.passingSince.IsZero() {
		return false
	}
	from := s.overAt
	if s.passingSince.After(from) {
		from = s.passingSince
	}
	return time.Since(from) >= s.Settle
}

// Throughput is one upload's figures.
type Throughput struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Mbps    float64 `json:"mbps"`
	PathMTU int     `json:"pathMTU,omitempty"`
}

// timedReader yields zeros until its deadline.
type timedReader struct {
	end time.Time
	n   int64
}

func (r *timedReader) Read(p []byte) (int, error) {
	if time.Now().After(r.end) {
		return 0, io.EOF
	}
	clear(p)
	r.n += int64(len(p))
	return len(p), nil
}

// Upload POSTs to url/sink for d (one TCP stream) and reports the rate
// the server received.
func Upload(ctx context.Context, url string, d time.Duration) Throughput {
	var t Throughput
	tr, conn := oneConnection()
	defer tr.CloseIdleConnections()
	// Room after the upload for a stalled stream to recover (a loaded
	// machine) before the server's answer.
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	start := time.Now()
	body := &timedReader{end: start.Add(d)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(url, "/")+"/sink", io.NopCloser(body))
	if err != nil {
		t.Error = err.Error()
		return t
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	if *conn != nil {
		t.PathMTU, _ = pathMTU(*conn)
	}
	var got struct {
		Bytes int64 `json:"bytes"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&got)
	resp.Body.Close()
	t.Seconds = time.Since(start).Seconds()
	if err != nil {
		t.Error = fmt.Sprintf("the server's answer: %v", err)
		return t
	}
	t.Bytes, t.OK = got.Bytes, got.Bytes > 0
	t.Mbps = float64(t.Bytes) * 8 / t.Seconds / 1e6
	return t
}

// Latency is the round-trip times of n requests on one connection.
type Latency struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Count  int     `json:"count"`
	MinMs  float64 `json:"minMs"`
	P50Ms  float64 `json:"p50Ms"`
	AvgMs  float64 `json:"avgMs"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
	Errors int     `json:"errors"`
}

// RequestResponse sends n small requests, one after the other, on one
// kept-alive connection, and reports their round-trip times.
func RequestResponse(ctx context.Context, url string, n int) Latency {
	l := Latency{}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 3 * time.Second}
	defer c.CloseIdleConnections()
	var rtts []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/ping", nil)
		resp, err := c.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			l.Errors++
			l.Error = err.Error()
			continue
		}
		rtts = append(rtts, time.Since(start))
	}
	l.Count = len(rtts)
	if len(rtts) == 0 {
		return l
	}
	slices.Sort(rtts)
	var sum time.Duration
	for _, r := range rtts {
		sum += r
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	l.MinMs, l.MaxMs = ms(rtts[0]), ms(rtts[len(rtts)-1])
	l.P50Ms, l.P99Ms = ms(rtts[len(rtts)/2]), ms(rtts[min(len(rtts)-1, len(rtts)*99/100)])
	l.AvgMs = ms(sum / time.Duration(len(rtts)))
	l.OK = l.Errors == 0
	return l
}

// Connect opens a TCP connection to addr (host:port) within timeout and
// closes it: the check of a MeshService, whose server is not an agent.
// OK means the connection was established.
func Connect(ctx context.Context, addr string, timeout time.Duration) Result {
	start := time.Now()
	r := Result{UnixMillis: start.UnixMilli()}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	r.Millis = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		r.Error = err.Error()
		return r
	}
	c.Close()
	r.OK = true
	return r
}

// ProbeUDP sends one datagram to addr (host:port) and waits for wait: a
// closed port answers with ICMP "port unreachable" (the error says
// refused); an open one — a WireGuard endpoint ignores what it cannot
// authenticate — or a firewall that drops stays silent, so OK means only
// "not refused".
func ProbeUDP(ctx context.Context, addr string, wait time.Duration) Result {
	start := time.Now()
	r := Result{UnixMillis: start.UnixMilli()}
	c, err := (&net.Dialer{}).DialContext(ctx, "udp", addr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.Close()
	buf := make([]byte, 64)
	// Twice: the ICMP answer to the first datagram is reported on the
	// socket's next operation.
	for i := 0; i < 2 && r.Error == ""; i++ {
		if _, err := c.Write([]byte("kubelink-verifier probe")); err != nil {
			r.Error = err.Error()
			break
		}
		c.SetReadDeadline(time.Now().Add(wait / 2))
		if _, err := c.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			r.Error = err.Error()
		}
	}
	r.Millis = float64(time.Since(start).Microseconds()) / 1000
	r.OK = r.Error == ""
	return r
}
