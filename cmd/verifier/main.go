// Command kubelink-verifier is the agent of `kubelinkctl verify`: it runs in
// the pods verify starts in each cluster (a namespace kubelink-verify-<random> per run) and is
// removed with them. --serve answers HTTP with the cluster's name; --get
// fetches a URL once, --watch every --every for --window; each fetch is
// printed as one JSON line with its duration and the path MTU the kernel
// measured; --connect opens one TCP connection (a MeshService's port, a
// bridge endpoint), --probe-udp checks that a UDP port is not refused (a
// WireGuard endpoint).
// --throughput and --latency are kubelinkctl benchmark's
// (lib/verifier).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubelink/kubelink/lib/cli"
	"github.com/kubelink/kubelink/lib/verifier"
)

func main() {
	cmd := cli.New("kubelink-verifier", "the agent of kubelinkctl verify: an HTTP server that answers with its cluster's name, and a client that reports each fetch as JSON")
	f := cmd.Flags
	serve := f.Bool("serve", false, "serve HTTP on --listen, answering with --cluster")
	cluster := f.String("cluster", "", "with --serve: the name of this cluster in the mesh")
	listen := f.String("listen", ":8080", "with --serve: the address to listen on")
	get := f.String("get", "", "fetch this URL once and print the result")
	watch := f.String("watch", "", "fetch this URL every --every for --window, one result per line")
	want := f.String("want", "", "with --get/--watch: the cluster whose server must answer")
	upload := f.Int("upload", 0, "with --get: POST this many bytes (the path MTU check) instead of a GET")
	timeout := f.Duration("timeout", 3*time.Second, "bound of one fetch")
	every := f.Duration("every", 100*time.Millisecond, "with --watch: the pause between fetches")
	window := f.Duration("window", 30*time.Second, "with --watch: how long to fetch")
	settle := f.Duration("settle", 0, "with --watch: once stdin ends (what is measured is over), stop as soon as every fetch of the last --settle passed; 0 fetches for all of --window")
	throughput := f.String("throughput", "", "upload to this server's /sink for --seconds on one TCP stream and print the rate")
	seconds := f.Duration("seconds", 10*time.Second, "with --throughput: how long to upload")
	latency := f.String("latency", "", "send --count small requests to this server's /ping, one after the other, and print their round-trip times")
	count := f.Int("count", 200, "with --latency: how many requests")
	connect := f.String("connect", "", "open a TCP connection to this host:port once (within --timeout) and print the result")
	probeUDP := f.String("probe-udp", "", "send a datagram to this host:port and report whether it is refused within --timeout")
	cmd.Main(func() error {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		switch {
		case *serve:
			if *cluster == "" {
				return errors.New("--serve needs --cluster")
			}
			return verifier.Serve(ctx, *cluster, *listen)
		case *get != "":
			return json.NewEncoder(os.Stdout).Encode(verifier.Get(ctx, *get, verifier.Answer(*want), *upload, *timeout))
		case *watch != "":
			if *window > 10*time.Minute {
				return errors.New("--window: at most 10m")
			}
			var over chan struct{}
			if *settle > 0 {
				over = make(chan struct{})
				go func() {
					_, _ = io.Copy(io.Discard, os.Stdin)
					close(over)
				}()
			}
			return verifier.WatchUntilSettled(ctx, os.Stdout, *watch, verifier.Answer(*want), *every, *window, *timeout, *settle, over)
		case *throughput != "":
			if *seconds > 5*time.Minute {
				return errors.New("--seconds: at most 5m")
			}
			return json.NewEncoder(os.Stdout).Encode(verifier.Upload(ctx, *throughput, *seconds))
		case *probeUDP != "":
			return json.NewEncoder(os.Stdout).Encode(verifier.ProbeUDP(ctx, *probeUDP, *timeout))
		case *connect != "":
			return json.NewEncoder(os.Stdout).Encode(verifier.Connect(ctx, *connect, *timeout))
		case *latency != "":
			if *count < 1 || *count > 100000 {
				return errors.New("--count: 1 to 100000")
			}
			return json.NewEncoder(os.Stdout).Encode(verifier.RequestResponse(ctx, *latency, *count))
		}
		return errors.New("give one of --serve, --get URL, --watch URL, --connect HOST:PORT, --probe-udp HOST:PORT, --throughput URL or --latency URL (see --help)")
	})
}
