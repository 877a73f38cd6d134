// Command prober runs inside a lab client pod for the e2e tests: it checks
// one thing over and over for a bounded window and prints one line per
// check, "ok <unix seconds>" or "fail <unix seconds>", stamped when the check
// started. One process instead of a shell loop that forks date, timeout,
// wget and grep per check, so that a loaded node does not stretch the
// checks (a shell check of 0.3 s took up to 2.5 s during a failover).
//
//	prober http URL WANT        GET URL, ok when the body contains WANT
//	prober nxdomain NAME        ok when NAME does not exist (NXDOMAIN)
//	prober resolves NAME        ok when NAME has an address
//	prober address NAME IP      ok when NAME's addresses are exactly IP
//	prober srv NAME PORT        ok when NAME's SRV records include PORT
//
// Flags: -window, -every, -timeout, -ready (a file created after the first
// check, so that a test knows the series has begun), and -over with
// -settle: once the file -over names exists (the test saw its event end),
// the prober stops as soon as every check of the last -settle passed,
// counting only from then; -window still bounds it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kubelink/kubelink/lib/verifier"
)

func main() {
	window := flag.Duration("window", 10*time.Second, "how long to check")
	every := flag.Duration("every", 50*time.Millisecond, "pause between checks")
	timeout := flag.Duration("timeout", 300*time.Millisecond, "bound of one check")
	ready := flag.String("ready", "", "file to create after the first check")
	over := flag.String("over", "", "with -settle: the file whose existence says the event is over")
	settle := flag.Duration("settle", 0, "with -over: stop once every check of this long after the event passed")
	flag.Parse()
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: prober [flags] http URL WANT | nxdomain NAME | resolves NAME | address NAME IP | srv NAME PORT")
		os.Exit(2)
	}
	check, err := checker(flag.Args(), *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	end := time.Now().Add(*window)
	settling := verifier.Settling{Settle: *settle}
	for time.Now().Before(end) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		ok := check(ctx)
		cancel()
		word := "fail"
		if ok {
			word = "ok"
		}
		fmt.Printf("%s %d.%09d\n", word, start.Unix(), start.Nanosecond())
		if *ready != "" {
			if err := os.WriteFile(*ready, nil, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			*ready = ""
		}
		isOver := false
		if *over != "" {
			_, err := os.Stat(*over)
			isOver = err == nil
		}
		if settling.Settled(start, ok, isOver) {
			return
		}
		time.Sleep(*every)
	}
}

func checker(args []string, timeout time.Duration) (func(context.Context) bool, error) {
	switch args[0] {
	case "http":
		if len(args) != 3 {
			return nil, errors.New("http URL WANT")
		}
		url, want := args[1], args[2]
		// a new connection per check, as a new client would make
		tr := &http.Transport{DisableKeepAlives: true}
		c := &http.Client{Transport: tr, Timeout: timeout}
		return func(ctx context.Context) bool {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return false
			}
			resp, err := c.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return err == nil && strings.Contains(string(b), want)
		}, nil
	case "nxdomain", "resolves":
		name := args[1]
		r := &net.Resolver{PreferGo: true} // the pod's resolv.conf, no cache
		wantGone := args[0] == "nxdomain"
		return func(ctx context.Context) bool {
			addrs, err := r.LookupHost(ctx, name)
			var dnsErr *net.DNSError
			if wantGone {
				return errors.As(err, &dnsErr) && dnsErr.IsNotFound
			}
			return err == nil && len(addrs) > 0
		}, nil
	case "address":
		if len(args) != 3 {
			return nil, errors.New("address NAME IP")
		}
		name, want := args[1], args[2]
		r := &net.Resolver{PreferGo: true}
		return func(ctx context.Context) bool {
			addrs, err := r.LookupHost(ctx, name)
			return err == nil && len(addrs) == 1 && addrs[0] == want
		}, nil
	case "srv":
		if len(args) != 3 {
			return nil, errors.New("srv NAME PORT")
		}
		name := args[1]
		port, err := strconv.ParseUint(args[2], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("srv port %q: %w", args[2], err)
		}
		r := &net.Resolver{PreferGo: true}
		return func(ctx context.Context) bool {
			// service and proto empty: NAME is asked as it is
			_, srvs, err := r.LookupSRV(ctx, "", "", name)
			for _, s := range srvs {
				if err == nil && uint64(s.Port) == port {
					return true
				}
			}
			return false
		}, nil
	}
	return nil, fmt.Errorf("unknown check %q", args[0])
}
