package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// HelmEnv names the environment variable with the path of the helm binary;
// without it, helm is ${KUBELINK_CACHE:-$HOME/.cache/kubelink}/tools/helm
// (built by `make tools`).
const HelmEnv = "KUBELINK_HELM"

// ChartPath is the kubelink Helm chart, relative to the repository root.
var ChartPath = filepath.Join("deploy", "chart", "kubelink")

// ChartNamespace and ChartRelease are the namespace and release name
// RenderChart renders with (the namespace the lab installs into).
const (
	ChartNamespace = "kubelink"
	ChartRelease   = "kubelink"
)

// ChartRequiredValues are valid values for what the chart requires and has
// no default for. RenderChart passes them in a values file below any other
// values, so that whatever the caller gives (a set entry, --set, -f)
// overrides them; a caller sets one to "" to render without it.
var ChartRequiredValues = map[string]string{
	"cluster.podCIDR":     "10.110.0.0/16",
	"cluster.serviceCIDR": "100.64.0.0/20",
	"cluster.nodeCIDR":    "172.18.0.0/16",
	"dns.serviceIP":       "100.64.0.11",
	"bridge.name":         "kubelink-a.example.com",
}

// HelmBinary returns the path of the helm binary: $KUBELINK_HELM, else
// tools/helm in the kubelink cache. A missing binary fails the test, like
// a missing control-plane binary does (skipping would let CI pass without
// ever checking the chart).
func HelmBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(HelmEnv)
	if p == "" {
		p = filepath.Join(CacheDir(), "tools", "helm")
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() {
		t.Fatalf("helm not found at %s: run `make tools`", p)
	}
	return p
}

// RepoRoot returns the root of the checkout: the first directory above the
// working directory (a test's is its package directory) that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory")
		}
		dir = parent
	}
}

// ChartDir returns the absolute path of the kubelink chart, or "" when the
// repository root cannot be found (RenderChart then fails the test saying
// so).
func ChartDir() string {
	root, err := RepoRoot()
	if err != nil {
		return ""
	}
	return filepath.Join(root, ChartPath)
}

// RunHelm runs helm with args and returns its stdout, its stderr and the
// error of the run. helm's config, cache and data directories are a
// temporary directory of the test, so no repository or plugin of the
// machine changes what it does.
func RunHelm(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	helm := HelmBinary(t)
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// ChartTemplateArgs are the arguments of `helm template` for the kubelink
// chart: release ChartRelease in ChartNamespace, the values file
// requiredValues (see ChartRequiredValuesFile; "": none), --set k=v for
// every entry of set (sorted by key; commas in values escaped), then
// extraArgs (last, so that e.g. another --namespace wins). helm ranks
// values by their kind, not their position: every -f file (the required
// values first, so any other file overrides them) below every --set.
func ChartTemplateArgs(chartDir, requiredValues string, set map[string]string, extraArgs ...string) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"template", ChartRelease, chartDir, "--namespace", ChartNamespace}
	if requiredValues != "" {
		args = append(args, "--values", requiredValues)
	}
	for _, k := range keys {
		args = append(args, "--set", k+"="+strings.ReplaceAll(set[k], ",", `\,`))
	}
	return append(args, extraArgs...)
}

// ChartRequiredValuesFile writes ChartRequiredValues as a values file into
// dir and returns its path.
func ChartRequiredValuesFile(dir string) (string, error) {
	values := map[string]any{}
	for k, v := range ChartRequiredValues {
		m := values
		path := strings.Split(k, ".")
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
	}
	data, err := yaml.Marshal(values)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "required-values.yaml")
	return p, os.WriteFile(p, data, 0o644)
}

// chartTemplate runs helm template (ChartTemplateArgs) with the required
// values.
func chartTemplate(t testing.TB, set map[string]string, extraArgs ...string) (args []string, stdout, stderr string, err error) {
	t.Helper()
	dir := ChartDir()
	if dir == "" {
		t.Fatalf("chart %s: go.work not found above the working directory", ChartPath)
	}
	required, err := ChartRequiredValuesFile(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	args = ChartTemplateArgs(dir, required, set, extraArgs...)
	stdout, stderr, err = RunHelm(t, args...)
	return args, stdout, stderr, err
}

// RenderChart renders the kubelink chart with `helm template` (see
// ChartTemplateArgs; valid required values unless the caller gives them)
// and decodes every object, in helm's order. --set types values as helm
// does ("true" is a bool, "2" a number); pass "--set-string", "k=v" in
// extraArgs for a string that looks otherwise. Any helm error fails the
// test with helm's stderr.
func RenderChart(t testing.TB, set map[string]string, extraArgs ...string) []*unstructured.Unstructured {
	t.Helper()
	args, stdout, stderr, err := chartTemplate(t, set, extraArgs...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	objs, err := DecodeObjects(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return objs
}

// RenderChartErr renders the chart as RenderChart does, but returns helm's
// output (stdout and stderr) and its error instead of failing the test:
// for the cases the chart must refuse.
func RenderChartErr(t testing.TB, set map[string]string, extraArgs ...string) (string, error) {
	t.Helper()
	_, stdout, stderr, err := chartTemplate(t, set, extraArgs...)
	return stdout + stderr, err
}

// DecodeObjects decodes a YAML stream of Kubernetes objects; empty
// documents (e.g. a template that rendered to comments) are skipped.
func DecodeObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("object %d: %w", len(objs)+1, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" {
			return nil, fmt.Errorf("object %d has no kind: %v", len(objs)+1, u.Object)
		}
		objs = append(objs, &u)
	}
}

// ChartObjects returns the objects of one kind.
func ChartObjects(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// ChartObject returns the object of that kind and name, or nil.
func ChartObject(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// RBACKinds are the kinds that make up the chart's least privilege: the
// accounts, their roles and bindings, and the Secret admission policy.
var RBACKinds = []string{"ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// ChartRBAC renders the chart with set (see RenderChart) and returns its
// RBACKinds objects, in the chart's order: what a test applies to a bare
// API server to run a component with exactly the chart's permissions.
func ChartRBAC(t testing.TB, set map[string]string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, o := range RenderChart(t, set) {
		if slices.Contains(RBACKinds, o.GetKind()) {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		t.Fatal("the rendered chart has no RBAC objects")
	}
	return out
}
