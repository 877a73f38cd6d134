package mcs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// The exchange of export records between the clusters of a mesh, without
// credentials beyond the mesh's own: the active broker of each cluster
// serves its cluster's record (the ConfigMap RecordConfigMap that
// kubelink-mcs writes) over HTTP on its cluster address, which only the
// members reach, through the tunnel that authenticated them; and it fetches
// the record of every peer whose link is Up from the peer's cluster
// address. What it fetched, checked against what each peer owns, goes into
// the ConfigMap ImportsConfigMap for the import side. A peer whose link
// leaves Up is dropped from it at once.
const (
	// ExportsPath is the URL path of the served record.
	ExportsPath = "/mcs/v1/exports"
	// ImportsConfigMap (in the kubelink namespace) holds, as ImportsKey,
	// the checked records of the peers whose links are Up.
	ImportsConfigMap = "kubelink-mcs-imports"
	ImportsKey       = "imports.json"
	// maxRecordBytes bounds what a peer may send.
	maxRecordBytes = 1 << 20
	// maxExports bounds the exports taken from one peer.
	maxExports = 5000
)

// Peer is a cluster whose records are fetched: a link that is Up.
type Peer struct {
	Cluster string     // the link's name
	Mesh    string     // the link's mesh
	Addr    netip.Addr // the peer's cluster address
	Local   netip.Addr // this cluster's address in that mesh: the source
	// Services are the networks of the peer where its ClusterIPs may be
	// (its service CIDR): an export outside them is refused.
	Services []netip.Prefix
}

// ClusterRecord is one peer's record as imported: its exports that passed
// the checks, and why the others did not.
type ClusterRecord struct {
	Cluster  string   `json:"cluster"`
	Mesh     string   `json:"mesh"`
	Exports  []Export `json:"exports"`
	Rejected []string `json:"rejected,omitempty"`
	// Imported are this cluster's exports the peer says it imported
	// (namespace/name; AcksFor).
	Imported []string `json:"imported,omitempty"`
}

// Imports is the content of ImportsConfigMap: the peers whose link is Up
// and whose record was fetched, by cluster name; and this cluster's own
// names (its LocalLinks), under which its own exports are imported too.
type Imports struct {
	Self     []Origin        `json:"self,omitempty"`
	Clusters []ClusterRecord `json:"clusters"`
}

// Origin names a cluster in a mesh.
type Origin struct {
	Cluster string `json:"cluster"`
	Mesh    string `json:"mesh"`
}

// Encode is the canonical JSON of the imports (sorted by cluster, then
// mesh).
func (im Imports) Encode() ([]byte, error) {
	slices.SortFunc(im.Clusters, func(a, b ClusterRecord) int {
		return strings.Compare(a.Cluster+"\x00"+a.Mesh, b.Cluster+"\x00"+b.Mesh)
	})
	if im.Clusters == nil {
		im.Clusters = []ClusterRecord{}
	}
	slices.SortFunc(im.Self, func(a, b Origin) int { return strings.Compare(a.Mesh+"\x00"+a.Cluster, b.Mesh+"\x00"+b.Cluster) })
	return json.Marshal(im)
}

// DecodeImports reads the content of ImportsConfigMap.
func DecodeImports(b []byte) (Imports, error) {
	var im Imports
	if len(b) == 0 {
		return im, nil
	}
	if err := json.Unmarshal(b, &im); err != nil {
		return Imports{}, fmt.Errorf("%s: %w", ImportsConfigMap, err)
	}
	return im, nil
}

// CheckRecord keeps the exports of a peer's record that the peer may make:
// valid names, types, ports and session affinity, and a ClusterIP inside
// the peer's service networks (a member claims only what it owns). Each
// refused export is named with the reason in the second result.
func CheckRecord(rec Record, p Peer) ([]Export, []string) {
	var ok []Export
	var bad []string
	seen := map[string]bool{}
	for i, e := range rec.Exports {
		if len(ok) >= maxExports {
			bad = append(bad, fmt.Sprintf("%d more exports: more than %d from one cluster", len(rec.Exports)-i, maxExports))
			break
		}
		if err := checkExport(e, p); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", e.Key(), err))
			continue
		}
		if seen[e.Key()] {
			bad = append(bad, fmt.Sprintf("%s: listed twice", e.Key()))
			continue
		}
		seen[e.Key()] = true
		ok = append(ok, e)
	}
	slices.SortFunc(ok, func(a, b Export) int { return strings.Compare(a.Key(), b.Key()) })
	return ok, bad
}

// AcksFor keeps the acknowledgements of a peer's record that name self
// (this cluster's name in the peer's mesh), as namespace/name: valid names
// only, each once, at most maxExports. A false one could only make an
// export of ours look imported (its Ready), never change what is routed.
func AcksFor(rec Record, self string) []string {
	if self == "" {
		return nil // not named in this mesh yet: nothing can name us
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range rec.Imported {
		if len(out) >= maxExports {
			break
		}
		cluster, key, ok := strings.Cut(a, "/")
		ns, name, ok2 := strings.Cut(key, "/")
		if !ok || !ok2 || cluster != self || seen[key] ||
			len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1035Label(name)) > 0 {
			continue
		}
		seen[key] = true
		out = append(out, key)
	}
	slices.Sort(out)
	return out
}

func checkExport(e Export, p Peer) error {
	if msgs := validation.IsDNS1123Label(e.Namespace); len(msgs) > 0 {
		return fmt.Errorf("namespace %q: %s", e.Namespace, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1035Label(e.Name); len(msgs) > 0 {
		return fmt.Errorf("name %q: %s", e.Name, strings.Join(msgs, "; "))
	}
	switch e.Type {
	case mcsv1beta1.ClusterSetIP:
		ip, err := netip.ParseAddr(e.ClusterIP)
		if err != nil {
			return fmt.Errorf("clusterIP %q: %v", e.ClusterIP, err)
		}
		if !slices.ContainsFunc(p.Services, func(n netip.Prefix) bool { return n.Contains(ip.Unmap()) }) {
			return fmt.Errorf("clusterIP %s is not in the service networks of cluster %s (%v): a member exports only its own Services", ip, p.Cluster, p.Services)
		}
	case mcsv1beta1.Headless:
		if e.ClusterIP != "" {
			return fmt.Errorf("a Headless export with clusterIP %q", e.ClusterIP)
		}
	default:
		return fmt.Errorf("type %q: must be %s or %s", e.Type, mcsv1beta1.ClusterSetIP, mcsv1beta1.Headless)
	}
	if len(e.Ports) == 0 && e.Type == mcsv1beta1.ClusterSetIP {
		return errors.New("no ports")
	}
	for _, pt := range e.Ports {
		if pt.Port < 1 || pt.Port > 65535 {
			return fmt.Errorf("port %d: must be 1-65535", pt.Port)
		}
		switch pt.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			return fmt.Errorf("port %d: protocol %q: must be TCP, UDP or SCTP", pt.Port, pt.Protocol)
		}
		if pt.Name != "" {
			if msgs := validation.IsDNS1123Label(pt.Name); len(msgs) > 0 {
				return fmt.Errorf("port name %q: %s", pt.Name, strings.Join(msgs, "; "))
			}
		}
	}
	switch e.SessionAffinity {
	case "", corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP:
	default:
		return fmt.Errorf("sessionAffinity %q: must be None or ClientIP", e.SessionAffinity)
	}
	if e.SessionAffinityTimeout < 0 || e.SessionAffinityTimeout > 86400 {
		return fmt.Errorf("sessionAffinityTimeout %d: must be 0-86400", e.SessionAffinityTimeout)
	}
	return nil
}

// ExchangeConfig configures an Exchange.
type ExchangeConfig struct {
	Namespace string        // of RecordConfigMap and ImportsConfigMap
	Port      int           // TCP port on the cluster addresses
	Interval  time.Duration // between fetches of a peer's record (default 1 s)
	Timeout   time.Duration // of one fetch (default 2 s)
}

// Exchange serves this cluster's record on its cluster addresses and keeps
// ImportsConfigMap equal to the checked records of the Up peers. The
// broker's pass tells it the local addresses (Listen) and the Up peers
// (SetPeers); Run fetches.
type Exchange struct {
	cfg ExchangeConfig
	log *slog.Logger
	api client.Client

	mu        sync.Mutex
	self      []Origin
	peers     map[string]Peer          // by Cluster+"\x00"+Mesh
	got       map[string]ClusterRecord // the last good fetch, by the same key
	servers   map[netip.Addr]*http.Server
	served    *servedRecord // the record served, read at servedAt
	servedAt  time.Time
	lastWrite string
	wake      chan struct{}
	client    func(local netip.Addr) *http.Client
}

// NewExchange prepares an exchange; api reads RecordConfigMap and writes
// ImportsConfigMap.
func NewExchange(cfg ExchangeConfig, api client.Client, log *slog.Logger) *Exchange {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	x := &Exchange{cfg: cfg, log: log, api: api, peers: map[string]Peer{}, got: map[string]ClusterRecord{},
		servers: map[netip.Addr]*http.Server{}, wake: make(chan struct{}, 1)}
	x.client = func(local netip.Addr) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: cfg.Timeout}
		return &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true,
			Proxy: nil, MaxResponseHeaderBytes: 16 << 10}}
	}
	return x
}

// Listen serves the record on each of addrs (the local cluster addresses)
// and stops serving on the others. A listener that cannot be opened is
// logged and tried again on the next call.
func (x *Exchange) Listen(addrs []netip.Addr) {
	x.mu.Lock()
	defer x.mu.Unlock()
	keep := map[netip.Addr]bool{}
	for _, a := range addrs {
		keep[a] = true
		if _, ok := x.servers[a]; ok {
			continue
		}
		l, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(x.cfg.Port)).String())
		if err != nil {
			x.log.Warn("serving the export record", "addr", a, "port", x.cfg.Port, "err", err)
			continue
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET "+ExportsPath, x.serve)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		x.servers[a] = srv
		go func() { _ = srv.Serve(l) }()
	}
	for a, srv := range x.servers {
		if !keep[a] {
			_ = srv.Close()
			delete(x.servers, a)
		}
	}
}

// serve answers with this cluster's record, read from RecordConfigMap at
// most once a second; no ConfigMap (kubelink-mcs not installed) is an
// empty record.
func (x *Exchange) serve(w http.ResponseWriter, r *http.Request) {
	x.mu.Lock()
	rec, fresh := x.served, time.Since(x.servedAt) < time.Second
	x.mu.Unlock()
	if !fresh {
		var cm corev1.ConfigMap
		err := x.api.Get(r.Context(), client.ObjectKey{Namespace: x.cfg.Namespace, Name: RecordConfigMap}, &cm)
		switch {
		case apierrors.IsNotFound(err):
			rec = parseServed([]byte(`{"exports":[]}`))
		case err != nil:
			if rec == nil {
				http.Error(w, "the export record cannot be read", http.StatusServiceUnavailable)
				x.log.Warn("reading the export record", "err", err)
				return
			}
			// the last record read stays served through an API outage
		default:
			body := []byte(cm.Data[RecordKey])
			if len(body) == 0 {
				body = []byte(`{"exports":[]}`)
			}
			rec = parseServed(body)
		}
		x.mu.Lock()
		x.served, x.servedAt = rec, time.Now()
		x.mu.Unlock()
	}
	body := x.forRequester(rec, r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// servedRecord is the record as read, parsed once per read (not per
// request): the exports as they are, and the acknowledgements that each
// request gets only its own of.
type servedRecord struct {
	body     []byte          // as read
	exports  json.RawMessage // nil: the body did not parse, served as read (the peer refuses it)
	imported []string
}

func parseServed(body []byte) *servedRecord {
	var r struct {
		Exports  json.RawMessage `json:"exports"`
		Imported []string        `json:"imported"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return &servedRecord{body: body} // the peer refuses it
	}
	if r.Exports == nil {
		r.Exports = json.RawMessage("[]")
	}
	return &servedRecord{body: body, exports: r.Exports, imported: r.Imported}
}

// forRequester keeps, of the record's acknowledgements, only those of the
// requesting peer's own exports (the peer whose cluster address the
// request comes from): a peer learns which of its exports this cluster
// imported, never which clusters of this or another mesh export what.
func (x *Exchange) forRequester(rec *servedRecord, remote string) []byte {
	if rec.exports == nil {
		return rec.body
	}
	who := ""
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		x.mu.Lock()
		for _, p := range x.peers {
			if p.Addr == ap.Addr().Unmap() {
				who = p.Cluster
			}
		}
		x.mu.Unlock()
	}
	var keep []string
	for _, a := range rec.imported {
		if cluster, _, ok := strings.Cut(a, "/"); ok && who != "" && cluster == who {
			keep = append(keep, a)
		}
	}
	out, err := json.Marshal(struct {
		Exports  json.RawMessage `json:"exports"`
		Imported []string        `json:"imported,omitempty"`
	}{rec.exports, keep})
	if err != nil {
		return rec.body
	}
	return out
}

// SetSelf sets this cluster's names in its meshes (its LocalLinks).
func (x *Exchange) SetSelf(self []Origin) {
	x.mu.Lock()
	changed := !slices.Equal(self, x.self)
	x.self = slices.Clone(self)
	x.mu.Unlock()
	if changed {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// SetPeers sets the peers whose links are Up. Those no longer listed are
// dropped from the imports at once; new ones are fetched at once.
func (x *Exchange) SetPeers(peers []Peer) {
	next := map[string]Peer{}
	for _, p := range peers {
		next[p.Cluster+"\x00"+p.Mesh] = p
	}
	x.mu.Lock()
	changed := len(next) != len(x.peers)
	for k, p := range next {
		if old, ok := x.peers[k]; !ok || old.Addr != p.Addr || old.Local != p.Local || !slices.Equal(old.Services, p.Services) {
			changed = true
			delete(x.got, k) // fetched again, checked against the new networks
		}
	}
	for k := range x.got {
		if _, ok := next[k]; !ok {
			delete(x.got, k)
		}
	}
	x.peers = next
	x.mu.Unlock()
	if changed {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// Run fetches every peer's record every Interval (and at once when the
// peers change) and writes the imports when they changed, until ctx ends;
// then it stops serving.
func (x *Exchange) Run(ctx context.Context) {
	defer x.Listen(nil)
	t := time.NewTicker(x.cfg.Interval)
	defer t.Stop()
	for {
		x.fetchAll(ctx)
		if err := x.write(ctx); err != nil && ctx.Err() == nil {
			x.log.Warn("writing the imports", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-x.wake:
		}
	}
}

// fetchAll fetches every peer's record at once, each within Timeout.
func (x *Exchange) fetchAll(ctx context.Context) {
	x.mu.Lock()
	peers := make(map[string]Peer, len(x.peers))
	for k, p := range x.peers {
		peers[k] = p
	}
	selfIn := map[string]string{} // mesh → this cluster's name there
	for _, o := range x.self {
		selfIn[o.Mesh] = o.Cluster
	}
	x.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]ClusterRecord{}
	for k, p := range peers {
		wg.Go(func() {
			rec, err := x.fetch(ctx, p)
			if err != nil {
				if ctx.Err() == nil {
					x.log.Debug("fetching an export record", "cluster", p.Cluster, "mesh", p.Mesh, "addr", p.Addr, "err", err)
				}
				return
			}
			ok, bad := CheckRecord(rec, p)
			x.mu.Lock()
			prev, seen := x.got[k]
			x.mu.Unlock()
			if !seen || !slices.Equal(prev.Rejected, bad) {
				// logged when they change, not on every fetch
				for _, b := range bad {
					x.log.Warn("refused an export of a peer", "cluster", p.Cluster, "mesh", p.Mesh, "export", b)
				}
			}
			mu.Lock()
			results[k] = ClusterRecord{Cluster: p.Cluster, Mesh: p.Mesh, Exports: ok, Rejected: bad, Imported: AcksFor(rec, selfIn[p.Mesh])}
			mu.Unlock()
		})
	}
	wg.Wait()
	x.mu.Lock()
	defer x.mu.Unlock()
	for k, r := range results {
		if cur, ok := x.peers[k]; ok && cur.Addr == peers[k].Addr && cur.Local == peers[k].Local && slices.Equal(cur.Services, peers[k].Services) {
			x.got[k] = r // a peer set meanwhile keeps its newer state
		}
	}
}

// fetch reads one peer's record from its cluster address, from ours.
func (x *Exchange) fetch(ctx context.Context, p Peer) (Record, error) {
	url := "http://" + netip.AddrPortFrom(p.Addr, uint16(x.cfg.Port)).String() + ExportsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Record{}, err
	}
	resp, err := x.client(p.Local).Do(req)
	if err != nil {
		return Record{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return Record{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRecordBytes+1))
	if err != nil {
		return Record{}, fmt.Errorf("%s: %w", url, err)
	}
	if len(b) > maxRecordBytes {
		return Record{}, fmt.Errorf("%s: a record of more than %d bytes", url, maxRecordBytes)
	}
	return DecodeRecord(b)
}

// Current is what the imports hold now: the fetched records of the peers
// that are Up.
func (x *Exchange) Current() Imports {
	x.mu.Lock()
	defer x.mu.Unlock()
	im := Imports{Self: slices.Clone(x.self)}
	for _, r := range x.got {
		im.Clusters = append(im.Clusters, r)
	}
	return im
}

// write keeps ImportsConfigMap equal to Current.
func (x *Exchange) write(ctx context.Context) error {
	data, err := x.Current().Encode()
	if err != nil {
		return err
	}
	x.mu.Lock()
	same := string(data) == x.lastWrite
	x.mu.Unlock()
	if same {
		return nil
	}
	var cm corev1.ConfigMap
	err = x.api.Get(ctx, client.ObjectKey{Namespace: x.cfg.Namespace, Name: ImportsConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: x.cfg.Namespace, Name: ImportsConfigMap},
			Data: map[string]string{ImportsKey: string(data)}}
		err = x.api.Create(ctx, &cm)
	case err == nil && !bytes.Equal([]byte(cm.Data[ImportsKey]), data):
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[ImportsKey] = string(data)
		err = x.api.Update(ctx, &cm)
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", x.cfg.Namespace, ImportsConfigMap, err)
	}
	x.mu.Lock()
	x.lastWrite = string(data)
	x.mu.Unlock()
	return nil
}
