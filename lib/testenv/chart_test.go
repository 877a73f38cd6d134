package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestChartTemplateArgs(t *testing.T) {
	got := ChartTemplateArgs("/c", "/v.yaml", map[string]string{
		"dataPlane":         "bridge",
		"bridge.name":       "",
		"bridge.identities": "kubelink://m/a,kubelink://n/a", // comma escaped
	}, "--namespace", "other")
	want := []string{"template", "kubelink", "/c", "--namespace", "kubelink", "--values", "/v.yaml",
		"--set", `bridge.identities=kubelink://m/a\,kubelink://n/a`,
		"--set", "bridge.name=",
		"--set", "dataPlane=bridge",
		"--namespace", "other"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ChartTemplateArgs:\n got %q\nwant %q", got, want)
	}
}

func TestChartRequiredValuesFile(t *testing.T) {
	p, err := ChartRequiredValuesFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]string
	if err := yaml.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for k, v := range ChartRequiredValues {
		group, key, _ := strings.Cut(k, ".")
		if got[group][key] != v {
			t.Errorf("%s: %q in the file, want %q\n%s", k, got[group][key], v, data)
		}
	}
}

func TestDecodeObjects(t *testing.T) {
	in := "---\n# Source: x/templates/a.yaml\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"
	objs, err := DecodeObjects(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "ConfigMap" || objs[1].GetName() != "b" {
		t.Fatalf("decoded %v", objs)
	}
	if got := ChartObjects(objs, "Secret"); len(got) != 1 || got[0].GetName() != "b" {
		t.Errorf("ChartObjects(Secret) = %v", got)
	}
	if ChartObject(objs, "ConfigMap", "a") == nil || ChartObject(objs, "ConfigMap", "b") != nil {
		t.Error("ChartObject finds the wrong objects")
	}
	if _, err := DecodeObjects(strings.NewReader("metadata: {name: x}\n")); err == nil {
		t.Error("an object without kind decoded without error")
	}
}

func TestChartDirIsTheChart(t *testing.T) {
	dir := ChartDir()
	if dir == "" {
		t.Fatal("ChartDir: go.work not found")
	}
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		t.Fatalf("ChartDir %s: %v", dir, err)
	}
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestHelmBinary(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "helm")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(HelmEnv, fake)
	if got := HelmBinary(t); got != fake {
		t.Errorf("HelmBinary with %s set = %s, want %s", HelmEnv, got, fake)
	}

	t.Setenv(HelmEnv, "")
	t.Setenv(CacheEnv, dir) // no tools/helm in it
	rec := &fatalRecorder{TB: t}
	HelmBinary(rec)
	want := "helm not found at " + filepath.Join(dir, "tools", "helm") + ": run `make tools`"
	if rec.msg != want {
		t.Errorf("missing helm: Fatalf %q, want %q", rec.msg, want)
	}
}
