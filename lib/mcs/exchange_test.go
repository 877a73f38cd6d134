package mcs

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/testenv"
)

func TestCheckRecordKeepsWhatThePeerOwns(t *testing.T) {
	p := Peer{Cluster: "b", Mesh: "default", Services: []netip.Prefix{netip.MustParsePrefix("100.64.16.0/20")}}
	http := []Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}
	ok := Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.20", Ports: http}
	headless := Export{Namespace: "shop", Name: "db", Type: mcsv1beta1.Headless, Ports: http}
	cases := []struct {
		e    Export
		want string
	}{
		{Export{Namespace: "shop", Name: "api", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.0.1", Ports: http}, "is not in the service networks of cluster b"},
		{Export{Namespace: "shop", Name: "kubelet", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "169.254.169.254", Ports: http}, "is not in the service networks"},
		{Export{Namespace: "Shop", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21", Ports: http}, `namespace "Shop"`},
		{Export{Namespace: "shop", Name: "x.y", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21", Ports: http}, `name "x.y"`},
		{Export{Namespace: "shop", Name: "x", Type: "LoadBalancer", Ports: http}, `type "LoadBalancer"`},
		{Export{Namespace: "shop", Name: "x", Type: mcsv1beta1.Headless, ClusterIP: "100.64.16.21"}, "a Headless export with clusterIP"},
		{Export{Namespace: "shop", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21", Ports: []Port{{Protocol: "ICMP", Port: 1}}}, `protocol "ICMP"`},
		{Export{Namespace: "shop", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21", Ports: []Port{{Protocol: "TCP", Port: 70000}}}, "port 70000"},
		{Export{Namespace: "shop", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21"}, "no ports"},
		{Export{Namespace: "shop", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.21", Ports: http, SessionAffinity: "Sticky"}, `sessionAffinity "Sticky"`},
		{ok, "listed twice"},
	}
	rec := Record{Exports: []Export{ok, headless}}
	for _, c := range cases {
		rec.Exports = append(rec.Exports, c.e)
	}
	got, bad := CheckRecord(rec, p)
	if len(got) != 2 || got[0].Key() != "shop/cart" || got[1].Key() != "shop/db" {
		t.Errorf("kept %+v, want shop/cart and shop/db", got)
	}
	if len(bad) != len(cases) {
		t.Fatalf("refused %d, want %d: %q", len(bad), len(cases), bad)
	}
	for i, c := range cases {
		if !strings.Contains(bad[i], c.want) {
			t.Errorf("refusal %d: %q, want it to say %q", i, bad[i], c.want)
		}
	}
}

// Two exchanges on addresses of the loopback network (the clusters'
// addresses; the tunnel is the broker's, not this package's) with a real
// API server: b imports a's record with what a may export, follows a's
// changes, drops a at once when a's link leaves Up, and takes nothing from
// a peer that serves an oversized or broken record.
func TestExchangeImportsTheRecordsOfUpPeers(t *testing.T) {
	cp := testenv.StartForTest(t)
	scheme, err := NewScheme()
	must(t, err)
	kube, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"a", "b"} {
		must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	aAddr, bAddr, badAddr := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")
	l, err := net.Listen("tcp", "127.0.0.2:0")
	must(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	newX := func(ns string) *Exchange {
		x := NewExchange(ExchangeConfig{Namespace: ns, Port: port, Interval: 200 * time.Millisecond, Timeout: time.Second}, kube, log)
		done := make(chan struct{})
		go func() { x.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return x
	}
	xa, xb := newX("a"), newX("b")
	xa.Listen([]netip.Addr{aAddr})

	writeRecord := func(exports ...Export) {
		data, err := Record{Exports: exports}.Encode()
		must(t, err)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: RecordConfigMap}, Data: map[string]string{RecordKey: string(data)}}
		if err := kube.Update(ctx, cm); err != nil {
			must(t, kube.Create(ctx, cm))
		}
	}
	ports := []Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}
	cart := Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.0.20", Ports: ports}
	foreign := Export{Namespace: "shop", Name: "kubelet", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "172.18.0.2", Ports: ports}
	writeRecord(cart, foreign)

	imports := func() Imports {
		var cm corev1.ConfigMap
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "b", Name: ImportsConfigMap}, &cm); err != nil {
			return Imports{}
		}
		im, err := DecodeImports([]byte(cm.Data[ImportsKey]))
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	names := func(im Imports) string {
		var s []string
		for _, c := range im.Clusters {
			for _, e := range c.Exports {
				s = append(s, c.Cluster+":"+e.Key())
			}
			s = append(s, fmt.Sprintf("%s:rejected=%d", c.Cluster, len(c.Rejected)))
		}
		return strings.Join(s, ",")
	}
	waitFor := func(what, want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var got string
		for time.Since(start) < within {
			if got = names(imports()); got == want {
				return time.Since(start)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: imports %q after %s, want %q", what, got, within, want)
		return 0
	}

	aPeer := Peer{Cluster: "a", Mesh: "default", Addr: aAddr, Local: bAddr, Services: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/20")}}
	xb.SetPeers([]Peer{aPeer})
	waitFor("a Up", "a:shop/cart,a:rejected=1", 5*time.Second)

	// a exports one more: imported within a few fetches.
	db := Export{Namespace: "shop", Name: "db", Type: mcsv1beta1.Headless, Ports: ports}
	writeRecord(cart, db)
	waitFor("a's new export", "a:shop/cart,a:shop/db,a:rejected=0", 5*time.Second)

	// a's link leaves Up: gone at once, and stays gone (no fetch brings it
	// back) over several fetch intervals.
	xb.SetPeers(nil)
	took := waitFor("a Down", "", time.Second)
	t.Logf("a dropped from the imports %s after its link left Up", took.Round(time.Millisecond))
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got := names(imports()); got != "" {
			t.Fatalf("imports %q while a is not Up", got)
		}
	}
	xb.SetPeers([]Peer{aPeer})
	waitFor("a Up again", "a:shop/cart,a:shop/db,a:rejected=0", 5*time.Second)

	// A peer serving a record of more than 1 MiB, and one serving garbage:
	// nothing of theirs is imported, and a stays.
	for i, body := range []string{`{"exports":[` + strings.Repeat(" ", maxRecordBytes) + `]}`, "not json"} {
		l, err := net.Listen("tcp", netip.AddrPortFrom(badAddr, uint16(port)).String())
		must(t, err)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) })}
		go func() { _ = srv.Serve(l) }()
		bad := Peer{Cluster: fmt.Sprintf("bad%d", i), Mesh: "default", Addr: badAddr, Local: bAddr, Services: []netip.Prefix{netip.MustParsePrefix("100.64.32.0/20")}}
		xb.SetPeers([]Peer{aPeer, bad})
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if got := names(imports()); got != "a:shop/cart,a:shop/db,a:rejected=0" {
				t.Errorf("imports %q with peer %s serving a bad record", got, bad.Cluster)
				break
			}
		}
		_ = srv.Close()
	}
	// The served record itself, as a peer reads it.
	resp, err := http.Get("http://" + netip.AddrPortFrom(aAddr, uint16(port)).String() + ExportsPath)
	must(t, err)
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET %s: %s %s", ExportsPath, resp.Status, resp.Header.Get("Content-Type"))
	}
}

// A peer's acknowledgements count only where they name this cluster, with
// valid names, once each.
func TestAcksForKeepsOnlyThisClustersExports(t *testing.T) {
	rec := Record{Imported: []string{"a/shop/cart", "b/shop/cart", "a/shop/cart", "a/Bad_NS/x", "a/shop/-x", "a/shop", "a/web/front"}}
	if got, want := AcksFor(rec, "a"), []string{"shop/cart", "web/front"}; !slices.Equal(got, want) {
		t.Errorf("AcksFor = %v, want %v", got, want)
	}
	if got := AcksFor(rec, "c"); len(got) != 0 {
		t.Errorf("AcksFor another cluster = %v, want none", got)
	}
	// before the broker named this cluster, "/ns/name" names nobody
	if got := AcksFor(Record{Imported: []string{"/shop/cart"}}, ""); len(got) != 0 {
		t.Errorf("AcksFor an unnamed cluster = %v, want none", got)
	}
}

// A peer is served only the acknowledgements of its own exports: which
// clusters of this or another mesh export what stays with this cluster.
func TestServedAcksNameOnlyTheRequester(t *testing.T) {
	x := &Exchange{peers: map[string]Peer{
		"b\x00default": {Cluster: "b", Mesh: "default", Addr: netip.MustParseAddr("192.168.0.12")},
		"e\x00blue":    {Cluster: "e", Mesh: "blue", Addr: netip.MustParseAddr("172.16.0.5")},
	}}
	body, err := Record{Imported: []string{"b/shop/cart", "e/web/front", "c/shop/cart"}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for remote, want := range map[string][]string{
		"192.168.0.12:40000": {"b/shop/cart"},
		"172.16.0.5:40000":   {"e/web/front"},
		"192.168.0.99:40000": nil, // not a peer
	} {
		rec, err := DecodeRecord(x.forRequester(parseServed(body), remote))
		if err != nil || !slices.Equal(rec.Imported, want) {
			t.Errorf("served to %s: %v (%v), want %v", remote, rec.Imported, err, want)
		}
	}
}
