package kubelink_test

// These tests run the generated CRDs through a real kube-apiserver (see
// lib/testenv): OpenAPI and CEL validation, the status subresource and the
// server-side printer columns only exist there, so fake clients cannot tell
// whether the markers in v1alpha1 do what they claim.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/testenv"
)

// One control plane for the whole package: starting one takes seconds, and
// the tests only create objects with distinct names, so sharing is safe.
var (
	plane *testenv.ControlPlane
	k8s   client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain exists so that the deferred Stop runs before os.Exit.
func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	plane = &testenv.ControlPlane{Name: "kubelink-apis"}
	if err := plane.Start(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start the test control plane:\n%v\n", err)
		return 1
	}
	defer func() {
		if err := plane.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping control plane: %v\n", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "control plane with kubelink CRDs up in %s\n", plane.StartDuration().Round(time.Millisecond))
	var err error
	if k8s, err = plane.Client(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: client: %v\n", err)
		return 1
	}
	return m.Run()
}

const (
	wgKey  = "4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI/4ms="
	wgKey2 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deleteLater removes obj when the test ends; NotFound is fine because some
// tests delete on their own.
func deleteLater(t *testing.T, obj client.Object) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := k8s.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup %s %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
		}
	})
}

func TestCRDsInstalledWithStatusAndPrinterColumns(t *testing.T) {
	ctx := testContext(t)

	for _, name := range []string{"kubelinks.kubelink.mandelsoft.org", "meshservices.kubelink.mandelsoft.org"} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatalf("CRD %s: %v", name, err)
		}
		for _, ct := range []apiextensionsv1.CustomResourceDefinitionConditionType{apiextensionsv1.Established, apiextensionsv1.NamesAccepted} {
			if !crdCondition(crd, ct) {
				t.Errorf("CRD %s is not %s: %+v", name, ct, crd.Status.Conditions)
			}
		}
	}

	// Discovery is what kubectl uses to resolve "kubectl get klink".
	disco, err := discovery.NewDiscoveryClientForConfig(plane.Config())
	if err != nil {
		t.Fatal(err)
	}
	resources, err := disco.ServerResourcesForGroupVersion(v1alpha1.SchemeGroupVersion.String())
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	served := map[string]metav1.APIResource{}
	for _, r := range resources.APIResources {
		served[r.Name] = r
	}
	for _, want := range []struct {
		resource, shortName string
		namespaced          bool
	}{{"kubelinks", "klink", false}, {"meshservices", "msvc", true}} {
		r, ok := served[want.resource]
		switch {
		case !ok:
			t.Errorf("resource %s not served; got %v", want.resource, keys(served))
			continue
		case !contains(r.ShortNames, want.shortName):
			t.Errorf("%s: short names %v, want %q", want.resource, r.ShortNames, want.shortName)
		case !contains(r.Categories, "kubelink-all"):
			t.Errorf("%s: categories %v, want kubelink-all", want.resource, r.Categories)
		case r.Namespaced != want.namespaced:
			t.Errorf("%s: namespaced=%v, want %v", want.resource, r.Namespaced, want.namespaced)
		}
		if _, ok := served[want.resource+"/status"]; !ok {
			t.Errorf("%s has no status subresource", want.resource)
		}
	}

	// Status subresource: status sent with create or a main-resource update is
	// dropped; only /status changes it, and that does not bump generation.
	link := &v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: "table-probe"},
		Spec: v1alpha1.KubeLinkSpec{
			CIDR:           "100.64.16.0/20",
			ClusterAddress: "192.168.0.12/24",
			Endpoint:       "kubelink.example.org:8777",
			PublicKey:      wgKey,
		},
		Status: v1alpha1.KubeLinkStatus{State: "Invalid"},
	}
	if err := k8s.Create(ctx, link); err != nil {
		t.Fatalf("create KubeLink: %v", err)
	}
	deleteLater(t, link)
	if link.Status.State != "" {
		t.Errorf("status given on create was stored: %+v", link.Status)
	}
	link.Status = v1alpha1.KubeLinkStatus{
		State:   v1alpha1.StateUp,
		Gateway: "10.0.0.5",
		Message: "connected",
		Health:  &v1alpha1.LinkHealth{RTT: &v1alpha1.RTTStats{Last: &metav1.Duration{Duration: 12 * time.Millisecond}}},
	}
	if err := k8s.Status().Update(ctx, link); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := &v1alpha1.KubeLink{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(link), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.State != v1alpha1.StateUp || got.Status.Gateway != "10.0.0.5" {
		t.Fatalf("status not stored via /status: %+v", got.Status)
	}
	if got.Generation != 1 {
		t.Errorf("status update changed generation to %d", got.Generation)
	}
	got.Spec.Endpoint = "kubelink2.example.org:8777"
	got.Status.State = v1alpha1.StateDown
	if err := k8s.Update(ctx, got); err != nil {
		t.Fatalf("spec update: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(link), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Endpoint != "kubelink2.example.org:8777" || got.Generation != 2 {
		t.Errorf("spec update not applied: endpoint %q generation %d", got.Spec.Endpoint, got.Generation)
	}
	if got.Status.State != v1alpha1.StateUp {
		t.Errorf("main-resource update changed status.state to %q", got.Status.State)
	}

	row := tableRow(t, ctx, "/apis/kubelink.mandelsoft.org/v1alpha1/kubelinks/table-probe")
	for col, want := range map[string]string{
		"Name": "table-probe", "CIDR": "100.64.16.0/20", "Address": "192.168.0.12/24",
		"Endpoint": "kubelink2.example.org:8777", "Gateway": "10.0.0.5", "State": "Up",
		"RTT": "12ms", "Message": "connected",
	} {
		if row[col] != want {
			t.Errorf("KubeLink column %s = %q, want %q (row %v)", col, row[col], want, row)
		}
	}

	// Endpoint mode shows Address, Ports and Endpoints; service mode shows
	// Service. A spec cannot have both, so two objects.
	endpoints := &v1alpha1.MeshService{
		ObjectMeta: metav1.ObjectMeta{Name: "table-probe-endpoints", Namespace: "default"},
		Spec: v1alpha1.MeshServiceSpec{
			MeshAddress: "192.168.0.101",
			Ports:       []v1alpha1.ServicePort{{Port: 80}, {Port: 443}},
			Endpoints:   []v1alpha1.ServiceEndpoint{{Address: "10.250.0.17"}, {Address: "10.250.0.18"}},
		},
	}
	service := &v1alpha1.MeshService{
		ObjectMeta: metav1.ObjectMeta{Name: "table-probe-service", Namespace: "default"},
		Spec:       v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.102", Service: "echoserver"},
	}
	for _, ms := range []*v1alpha1.MeshService{endpoints, service} {
		if err := k8s.Create(ctx, ms); err != nil {
			t.Fatalf("create MeshService %s: %v", ms.Name, err)
		}
		deleteLater(t, ms)
	}
	row = tableRow(t, ctx, "/apis/kubelink.mandelsoft.org/v1alpha1/namespaces/default/meshservices/table-probe-endpoints")
	t.Logf("MeshService row (endpoint mode): %v", row)
	if row["Address"] != "192.168.0.101" {
		t.Errorf("MeshService column Address = %q, want 192.168.0.101", row["Address"])
	}
	// A JSONPath with [*] is rendered by the API server's table convertor,
	// which (as of 1.34) only prints the first match; accept a joined list too.
	if !strings.Contains(row["Ports"], "80") {
		t.Errorf("MeshService column Ports = %q, want it to contain 80", row["Ports"])
	}
	if !strings.Contains(row["Endpoints"], "10.250.0.17") {
		t.Errorf("MeshService column Endpoints = %q, want it to contain 10.250.0.17", row["Endpoints"])
	}
	row = tableRow(t, ctx, "/apis/kubelink.mandelsoft.org/v1alpha1/namespaces/default/meshservices/table-probe-service")
	if row["Service"] != "echoserver" || row["Address"] != "192.168.0.102" {
		t.Errorf("MeshService (service mode) columns Service=%q Address=%q, want echoserver and 192.168.0.102", row["Service"], row["Address"])
	}
}

func crdCondition(crd *apiextensionsv1.CustomResourceDefinition, ct apiextensionsv1.CustomResourceDefinitionConditionType) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == ct {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// tableRow fetches path as a server-side Table (what kubectl get prints) and
// returns the single row as column name -> cell text ("" for empty cells).
func tableRow(t *testing.T, ctx context.Context, path string) map[string]string {
	t.Helper()
	disco, err := discovery.NewDiscoveryClientForConfig(plane.Config())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := disco.RESTClient().Get().AbsPath(path).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET %s as Table: %v: %s", path, err, raw)
	}
	table := &metav1.Table{}
	if err := json.Unmarshal(raw, table); err != nil {
		t.Fatalf("decode Table: %v", err)
	}
	if table.Kind != "Table" || len(table.Rows) != 1 {
		t.Fatalf("GET %s: want a Table with one row, got kind %q with %d rows", path, table.Kind, len(table.Rows))
	}
	cells := table.Rows[0].Cells
	if len(cells) != len(table.ColumnDefinitions) {
		t.Fatalf("%d cells for %d columns", len(cells), len(table.ColumnDefinitions))
	}
	row := map[string]string{}
	for i, col := range table.ColumnDefinitions {
		if cells[i] != nil {
			row[col.Name] = fmt.Sprint(cells[i])
		}
	}
	return row
}

func TestExamplesAreAccepted(t *testing.T) {
	ctx := testContext(t)
	var objects []*unstructured.Unstructured
	for _, doc := range []struct {
		path     string
		required bool
	}{
		// Both promise that their YAML blocks are tested, so both must have some.
		{"../../../docs/examples.md", true},
		{"../../../README.md", true},
		{"../../../docs/meshservices.md", true},
	} {
		data, err := os.ReadFile(doc.path)
		if errors.Is(err, os.ErrNotExist) && !doc.required {
			t.Logf("%s does not exist", doc.path)
			continue
		}
		if err != nil {
			t.Fatalf("read %s: %v", doc.path, err)
		}
		blocks := yamlBlocks(data)
		if doc.required && len(blocks) == 0 {
			t.Fatalf("%s has no ```yaml blocks", doc.path)
		}
		for i, block := range blocks {
			objs, err := decodeObjects(block)
			if err != nil {
				t.Fatalf("%s: yaml block %d: %v", doc.path, i+1, err)
			}
			t.Logf("%s: yaml block %d: %d objects", doc.path, i+1, len(objs))
			objects = append(objects, objs...)
		}
	}
	if len(objects) == 0 {
		t.Fatal("no example objects found")
	}

	for _, obj := range objects {
		what := fmt.Sprintf("%s %s", obj.GetKind(), obj.GetName())
		namespaced, err := k8s.IsObjectNamespaced(obj)
		if err != nil {
			t.Errorf("%s: unknown kind: %v", what, err)
			continue
		}
		if namespaced {
			if obj.GetNamespace() == "" {
				obj.SetNamespace("default")
			}
			ensureNamespace(t, ctx, obj.GetNamespace())
		}
		// Strict field validation: a misspelled field in an example would
		// otherwise be pruned silently and the example would "pass".
		if err := k8s.Create(ctx, obj, client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
			t.Errorf("%s rejected: %v", what, err)
			continue
		}
		deleteLater(t, obj)
	}
}

// yamlBlocks returns the contents of all ```yaml fenced blocks. Fences may be
// indented (inside list items); the fence's indentation is removed from the
// block's lines.
func yamlBlocks(markdown []byte) []string {
	var blocks []string
	var cur *strings.Builder
	indent := ""
	sc := bufio.NewScanner(bytes.NewReader(markdown))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```yaml" || trimmed == "```yml"):
			cur = &strings.Builder{}
			indent = line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(strings.TrimPrefix(line, indent))
			cur.WriteByte('\n')
		}
	}
	return blocks
}

// decodeObjects splits a multi-document YAML stream into objects, skipping
// empty documents.
func decodeObjects(stream string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(obj.Object) == 0 {
			continue
		}
		if obj.GetAPIVersion() == "" || obj.GetKind() == "" || obj.GetName() == "" {
			return nil, fmt.Errorf("document without apiVersion, kind or metadata.name: %v", obj.Object)
		}
		objs = append(objs, obj)
	}
}

// ensureNamespace creates a namespace an example refers to. It is not deleted
// afterwards: without a namespace controller it would stay Terminating.
func ensureNamespace(t *testing.T, ctx context.Context, name string) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// obj is JSON-shaped test data; numbers must be int64 for unstructured.
type obj = map[string]any

type admissionCase struct {
	name    string // subtest name, also documents the rule
	kind    string // KubeLink or MeshService
	objName string // default: derived from the case index
	spec    obj
	want    string // substring of the expected error (invalid cases only)
}

func (c admissionCase) object(i int, prefix string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: obj{"spec": c.spec}}
	u.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	u.SetKind(c.kind)
	name := c.objName
	if name == "" {
		name = fmt.Sprintf("%s-%02d", prefix, i)
	}
	u.SetName(name)
	if c.kind == "MeshService" {
		u.SetNamespace("default")
	}
	return u
}

func list(items ...any) []any { return items }

// endpointMessage is the CEL message of spec.endpoint.
const endpointMessage = "endpoint must be host[:port] (a DNS name, an IPv4 address or a bracketed IPv6 address, port 1-65535), LocalLink or Inbound"

// inboundLink returns a minimal valid remote link spec with one field changed.
func inboundLink(key string, value any) obj {
	spec := obj{"clusterAddress": "192.168.0.12/24", "cidr": "100.64.16.0/20", "endpoint": "Inbound"}
	if value == nil {
		delete(spec, key)
	} else {
		spec[key] = value
	}
	return spec
}

func endpointLink(endpoint string) obj { return inboundLink("endpoint", endpoint) }

var invalidCases = []admissionCase{
	// KubeLink: addresses
	{name: "cidr garbage", kind: "KubeLink", spec: inboundLink("cidr", "garbage"),
		want: "cidr must be a network in CIDR notation with no host bits set"},
	{name: "cidr with host bits", kind: "KubeLink", spec: inboundLink("cidr", "100.64.16.1/20"),
		want: "cidr must be a network in CIDR notation with no host bits set"},
	{name: "clusterAddress without prefix", kind: "KubeLink", spec: inboundLink("clusterAddress", "192.168.0.12"),
		want: "clusterAddress must be an IP address with the mesh prefix length"},
	{name: "clusterAddress is the network address", kind: "KubeLink", spec: inboundLink("clusterAddress", "192.168.0.0/24"),
		want: "clusterAddress must be a host address, not the network address of the mesh"},
	{name: "clusterAddress IPv6 network address", kind: "KubeLink", spec: inboundLink("clusterAddress", "fd00:1::/64"),
		want: "clusterAddress must be a host address, not the network address of the mesh"},
	{name: "clusterAddress garbage", kind: "KubeLink", spec: inboundLink("clusterAddress", "garbage"),
		want: "clusterAddress must be an IP address with the mesh prefix length"},
	{name: "clusterAddress missing", kind: "KubeLink", spec: inboundLink("clusterAddress", nil),
		want: "spec.clusterAddress: Required value"},
	{name: "clusterAddress empty", kind: "KubeLink", spec: inboundLink("clusterAddress", ""),
		want: "spec.clusterAddress in body should be at least 1 chars long"},
	{name: "egress garbage", kind: "KubeLink", spec: inboundLink("egress", list("garbage")),
		want: "egress entries must be an IP or a network CIDR with no host bits set"},
	{name: "egress with host bits", kind: "KubeLink", spec: inboundLink("egress", list("10.10.0.0/16", "10.20.0.1/16")),
		want: "egress entries must be an IP or a network CIDR with no host bits set"},
	{name: "ingress garbage", kind: "KubeLink", spec: inboundLink("ingress", list("garbage")),
		want: "ingress entries must be an IP or a network CIDR (no host bits), optionally prefixed with '!' to deny it"},
	{name: "ingress negated garbage", kind: "KubeLink", spec: inboundLink("ingress", list("!garbage")),
		want: "ingress entries must be an IP or a network CIDR (no host bits)"},
	{name: "ingress negated host bits", kind: "KubeLink", spec: inboundLink("ingress", list("!10.0.0.1/8")),
		want: "ingress entries must be an IP or a network CIDR (no host bits)"},

	// KubeLink: endpoint syntax
	{name: "endpoint port 0", kind: "KubeLink", spec: endpointLink("host:0"), want: endpointMessage},
	{name: "endpoint port 70000", kind: "KubeLink", spec: endpointLink("host:70000"), want: endpointMessage},
	{name: "endpoint with space", kind: "KubeLink", spec: endpointLink("exa mple.org"), want: endpointMessage},
	{name: "endpoint invalid IPv4", kind: "KubeLink", spec: endpointLink("999.1.1.1"), want: endpointMessage},
	{name: "endpoint invalid IPv4 with port", kind: "KubeLink", spec: endpointLink("1.2.3:8777"), want: endpointMessage},
	{name: "endpoint unclosed bracket", kind: "KubeLink", spec: endpointLink("[::1"), want: endpointMessage},
	{name: "endpoint bracketed IPv4", kind: "KubeLink", spec: endpointLink("[1.2.3.4]:80"), want: endpointMessage},
	{name: "endpoint bracketed non-IP", kind: "KubeLink", spec: endpointLink("[abc]:80"), want: endpointMessage},
	{name: "endpoint unbracketed IPv6", kind: "KubeLink", spec: endpointLink("2001:db8::1"), want: endpointMessage},
	{name: "endpoint empty port", kind: "KubeLink", spec: endpointLink("host.example.org:"), want: endpointMessage},
	{name: "endpoint label with leading dash", kind: "KubeLink", spec: endpointLink("-host.example.org"), want: endpointMessage},

	// KubeLink: keys
	{name: "publicKey too short", kind: "KubeLink", spec: inboundLink("publicKey", "4vEkTd2EHwM2mIc7Y0sJ1Fw="),
		want: "publicKey must be a WireGuard key: 32 bytes in base64 (44 characters ending in '=')"},
	{name: "publicKey not base64", kind: "KubeLink", spec: inboundLink("publicKey", "4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI!4ms="),
		want: "publicKey must be a WireGuard key"},
	{name: "publicKey with non-zero padding bits", kind: "KubeLink", spec: inboundLink("publicKey", "4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI/4mt="),
		want: "publicKey must be a WireGuard key"},
	{name: "presharedKey malformed", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "Inbound", "publicKey": wgKey, "presharedKey": "short"},
		want: "presharedKey must be a WireGuard key"},
	{name: "presharedKey without publicKey", kind: "KubeLink", spec: inboundLink("presharedKey", wgKey2),
		want: "presharedKey needs publicKey"},
	{name: "presharedKeySecret without publicKey", kind: "KubeLink", spec: inboundLink("presharedKeySecret", obj{"key": "psk-b"}),
		want: "presharedKeySecret needs publicKey"},
	{name: "presharedKeySecret and presharedKey", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "Inbound", "publicKey": wgKey,
		"presharedKey": wgKey2, "presharedKeySecret": obj{"key": "psk-b"}},
		want: "set presharedKeySecret or the deprecated presharedKey, not both"},
	{name: "presharedKeySecret without key", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "Inbound", "publicKey": wgKey,
		"presharedKeySecret": obj{"name": "wireguard"}},
		want: "spec.presharedKeySecret.key: Required value"},
	{name: "presharedKeySecret naming the private key", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "Inbound", "publicKey": wgKey,
		"presharedKeySecret": obj{"key": "WireguardPrivateKey"}},
		want: "names the broker's own WireGuard key"},
	{name: "LocalLink with presharedKeySecret", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.11/24", "endpoint": "LocalLink", "presharedKeySecret": obj{"key": "psk"}},
		want: "publicKey and presharedKey are not allowed on a LocalLink"},

	// KubeLink: LocalLink restrictions and link references
	{name: "LocalLink with egress", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.11/24", "endpoint": "LocalLink", "egress": list("10.10.0.0/16")},
		want: "egress is not allowed on a LocalLink"},
	{name: "LocalLink with gatewayLink", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.11/24", "endpoint": "LocalLink", "gatewayLink": "other"},
		want: "gatewayLink is not allowed on a LocalLink"},
	{name: "LocalLink with publicKey", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.11/24", "endpoint": "LocalLink", "publicKey": wgKey},
		want: "publicKey and presharedKey are not allowed on a LocalLink"},
	{name: "neither endpoint nor gatewayLink", kind: "KubeLink", spec: inboundLink("endpoint", nil),
		want: "endpoint is required (a host[:port], LocalLink or Inbound) unless gatewayLink is set"},
	{name: "gatewayLink is the link itself", kind: "KubeLink", objName: "adm-self-gateway",
		spec: obj{"clusterAddress": "192.168.0.12/24", "gatewayLink": "adm-self-gateway"},
		want: "spec.gatewayLink: a link cannot be its own gateway link"},
	{name: "gatewayLink not a name", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "gatewayLink": "Bad_Link"},
		want: "spec.gatewayLink in body should match"},
	{name: "dnsIP garbage", kind: "KubeLink", spec: inboundLink("dns", obj{"dnsIP": "garbage"}),
		want: "dns.dnsIP must be an IP address"},
	{name: "baseDomain with underscore", kind: "KubeLink", spec: inboundLink("dns", obj{"baseDomain": "bad_domain"}),
		want: "spec.dns.baseDomain in body should match"},
	{name: "apiAccess without name", kind: "KubeLink", spec: inboundLink("apiAccess", obj{"namespace": "kubelink"}),
		want: "spec.apiAccess.name: Required value"},

	// IPv4 only (an IPv6 prefix once broke the firewall of every link), and
	// a mesh no larger than /16.
	{name: "clusterAddress IPv6", kind: "KubeLink", spec: inboundLink("clusterAddress", "fd00:1::12/64"),
		want: "clusterAddress must be IPv4 (dual stack is not supported yet)"},
	{name: "clusterAddress mesh /4", kind: "KubeLink", spec: inboundLink("clusterAddress", "16.0.0.1/4"),
		want: "clusterAddress: the mesh prefix length must be /16 to /31"},
	{name: "clusterAddress mesh /0", kind: "KubeLink", spec: inboundLink("clusterAddress", "10.0.0.1/0"),
		want: "clusterAddress: the mesh prefix length must be /16 to /31"},
	{name: "clusterAddress mesh /32", kind: "KubeLink", spec: inboundLink("clusterAddress", "10.0.0.1/32"),
		want: "clusterAddress: the mesh prefix length must be /16 to /31"},
	{name: "cidr IPv6", kind: "KubeLink", spec: inboundLink("cidr", "fd00:50::/64"),
		want: "cidr must be IPv4 (dual stack is not supported yet)"},
	{name: "egress IPv6", kind: "KubeLink", spec: inboundLink("egress", list("10.1.2.3", "fd00::/64")),
		want: "egress entries must be IPv4 (dual stack is not supported yet)"},
	{name: "ingress IPv6", kind: "KubeLink", spec: inboundLink("ingress", list("!fd00::1")),
		want: "ingress entries must be IPv4 (dual stack is not supported yet)"},
	{name: "dnsIP IPv6", kind: "KubeLink", spec: inboundLink("dns", obj{"dnsIP": "fd00::10"}),
		want: "dns.dnsIP must be IPv4"},

	// MeshService
	{name: "MeshService without meshAddress and ports", kind: "MeshService",
		spec: obj{"service": "echoserver", "endpoints": list(obj{"portMappings": list(obj{"port": int64(80), "targetPort": "http"})})},
		want: "ports are required when meshAddress is not set"},
	{name: "MeshService with meshAddress and mesh", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "mesh": "lab", "service": "echoserver"},
		want: "mesh selects the cluster address to bind and is only used without meshAddress"},
	{name: "MeshService meshAddress garbage", kind: "MeshService",
		spec: obj{"meshAddress": "garbage", "service": "echoserver"},
		want: "meshAddress must be an IP address"},
	{name: "MeshService meshAddress with prefix", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100/24", "service": "echoserver"},
		want: "meshAddress must be an IP address"},
	{name: "MeshService without service and endpoints", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100"},
		want: "either service or endpoints (with addresses) is required"},
	{name: "MeshService service with two endpoints", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "endpoints": list(
			obj{"portMappings": list(obj{"port": int64(80), "targetPort": int64(8080)})},
			obj{"portMappings": list(obj{"port": int64(81), "targetPort": int64(8081)})})},
		want: "with service, at most one endpoint without address is allowed"},
	{name: "MeshService service with endpoint address", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "endpoints": list(obj{"address": "10.250.0.17"})},
		want: "with service, at most one endpoint without address is allowed"},
	{name: "MeshService endpoint without address and no service", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "endpoints": list(obj{"portMappings": list(obj{"port": int64(80), "targetPort": int64(8080)})})},
		want: "without service, every endpoint needs an address"},
	{name: "MeshService endpoint address garbage", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "endpoints": list(obj{"address": "garbage"})},
		want: "endpoint address must be an IP address"},
	{name: "MeshService endpoint mode with named port", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "endpoints": list(obj{"address": "10.250.0.17",
			"portMappings": list(obj{"port": int64(80), "targetPort": "http"})})},
		want: "without service, port mappings must use port numbers"},
	{name: "MeshService port 0", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "ports": list(obj{"port": int64(0)})},
		want: "spec.ports[0].port: Invalid value: 0: spec.ports[0].port in body should be greater than or equal to 1"},
	{name: "MeshService port 70000", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "ports": list(obj{"port": int64(70000)})},
		want: "spec.ports[0].port in body should be less than or equal to 65535"},
	{name: "MeshService port missing", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "ports": list(obj{"name": "http"})},
		want: "spec.ports[0].port: Required value"},
	{name: "MeshService protocol SCTP", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "ports": list(obj{"port": int64(80), "protocol": "SCTP"})},
		want: "spec.ports[0].protocol in body should match"},
	{name: "MeshService mapping port 0", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "endpoints": list(obj{"address": "10.250.0.17",
			"portMappings": list(obj{"port": int64(0), "targetPort": int64(8080)})})},
		want: "port must be 1-65535 or a port name"},
	{name: "MeshService targetPort bad name", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "endpoints": list(obj{
			"portMappings": list(obj{"port": int64(80), "targetPort": "Bad_Name"})})},
		want: "targetPort must be 1-65535 or a port name"},
	{name: "MeshService targetPort 65536", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "echoserver", "endpoints": list(obj{
			"portMappings": list(obj{"port": int64(80), "targetPort": int64(65536)})})},
		want: "targetPort must be 1-65535 or a port name"},
	{name: "MeshService service without meshAddress and portMappings", kind: "MeshService",
		spec: obj{"service": "echoserver", "ports": list(obj{"port": int64(8800)})},
		want: "with service and without meshAddress, portMappings are required"},
	{name: "MeshService service name invalid", kind: "MeshService",
		spec: obj{"meshAddress": "192.168.0.100", "service": "Echo_Server"},
		want: "spec.service in body should match"},
}

func TestInvalidResourcesRejectedAtAdmission(t *testing.T) {
	if len(invalidCases) < 20 {
		t.Fatalf("only %d invalid cases", len(invalidCases))
	}
	seen := map[string]bool{}
	for i, c := range invalidCases {
		if seen[c.name] || c.want == "" {
			t.Fatalf("case %d %q: duplicate name or no expected message", i, c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			u := c.object(i, "adm-invalid")
			err := k8s.Create(ctx, u)
			if err == nil {
				deleteLater(t, u)
				t.Fatalf("%s accepted, want rejection with %q; spec %v", c.kind, c.want, c.spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error containing %q, got %v", c.want, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not contain %q:\n%v", c.want, err)
			}
		})
	}
}

// Valid edge cases close to the rejected ones: a rule that is too strict
// would turn away real configurations.
var validCases = []admissionCase{
	{name: "endpoint IPv4 without port", kind: "KubeLink", spec: endpointLink("1.2.3.4")},
	{name: "endpoint IPv4 with port", kind: "KubeLink", spec: endpointLink("1.2.3.4:65535")},
	{name: "endpoint DNS name with port", kind: "KubeLink", spec: endpointLink("host.example.org:8777")},
	{name: "endpoint single label", kind: "KubeLink", spec: endpointLink("host")},
	{name: "endpoint fully qualified", kind: "KubeLink", spec: endpointLink("host.example.org.")},
	{name: "endpoint bracketed IPv6 with port", kind: "KubeLink", spec: endpointLink("[2001:db8::1]:51820")},
	{name: "endpoint bracketed IPv6 without port", kind: "KubeLink", spec: endpointLink("[2001:db8::1]")},
	{name: "endpoint Inbound", kind: "KubeLink", spec: endpointLink("Inbound")},
	{name: "LocalLink minimal", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.11/24", "endpoint": "LocalLink",
		"ingress": list("100.64.0.0/20", "!100.64.0.1"), "dns": obj{"baseDomain": "kubelink", "dnsIP": "100.64.0.11", "omitDNSPropagation": false}}},
	{name: "egress single IP", kind: "KubeLink", spec: inboundLink("egress", list("10.1.2.3", "10.10.0.0/16"))},
	{name: "ingress negated network", kind: "KubeLink", spec: inboundLink("ingress", list("!10.0.0.0/8", "10.1.2.3", "!10.1.2.4"))},
	{name: "gatewayLink without endpoint", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.13/24", "cidr": "100.64.32.0/20", "gatewayLink": "kubelink2"}},
	{name: "clusterAddress largest mesh /16", kind: "KubeLink", spec: inboundLink("clusterAddress", "10.20.0.1/16")},
	{name: "clusterAddress point-to-point /31", kind: "KubeLink", spec: inboundLink("clusterAddress", "192.168.0.0/31")},
	{name: "keys and apiAccess", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "kubelink2.example.org",
		"publicKey": wgKey, "presharedKey": wgKey2, "apiAccess": obj{"name": "kubelink2-access", "namespace": "kubelink"}}},
	{name: "presharedKeySecret", kind: "KubeLink", spec: obj{"clusterAddress": "192.168.0.12/24", "endpoint": "kubelink2.example.org",
		"publicKey": wgKey, "presharedKeySecret": obj{"key": "psk-kubelink2"}}},
	{name: "MeshService lowercase protocol and named target", kind: "MeshService", spec: obj{"service": "echoserver",
		"ports":     list(obj{"name": "dns", "port": int64(53), "protocol": "udp"}),
		"endpoints": list(obj{"portMappings": list(obj{"port": int64(53), "targetPort": "dns", "protocol": "udp"})})}},
	{name: "MeshService endpoints in mesh", kind: "MeshService", spec: obj{"mesh": "lab", "ports": list(obj{"port": int64(65535)}),
		"endpoints": list(obj{"address": "10.250.0.17", "portMappings": list(obj{"port": int64(65535), "targetPort": int64(1)})})}},
}

func TestValidEdgeCasesAccepted(t *testing.T) {
	for i, c := range validCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			u := c.object(i, "adm-valid")
			if err := k8s.Create(ctx, u, client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
				t.Fatalf("%s rejected: %v\nspec %v", c.kind, err, c.spec)
			}
			deleteLater(t, u)
		})
	}
}
