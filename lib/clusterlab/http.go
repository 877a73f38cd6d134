package clusterlab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/kubelink/kubelink/lib/nstest"
)

// ServeHTTP answers every request on addr inside ns with body.
func serveHTTP(ns *nstest.Namespace, addr netip.AddrPort, body string) (net.Listener, error) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return }); err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bytes" {
			// A large body for throughput checks.
			buf := make([]byte, 64<<10)
			for range 64 {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
			return
		}
		fmt.Fprintf(w, "%s from %s", body, r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(ln) }()
	return ln, nil
}

// Get fetches http://addr/path from inside ns, like `wget -qO-` in a pod: the
// connection is made in the namespace, so it takes the namespace's routes.
func Get(ns *nstest.Namespace, addr netip.AddrPort, path string, timeout time.Duration) (string, error) {
	var conn net.Conn
	if err := ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr.String(), timeout); return }); err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("HTTP %s", resp.Status)
	}
	return string(b), nil
}
