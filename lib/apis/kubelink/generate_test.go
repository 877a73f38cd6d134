package kubelink_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/testenv"
)

// TestGeneratedFilesUpToDate regenerates the CRDs and deepcopy code and
// compares them byte for byte with the checked-in files, so a change to the
// markers in v1alpha1 cannot be merged without `make generate`.
//
// controller-gen writes deepcopy code next to the sources, so it runs on a
// copy of the lib module's apis tree in a temporary directory (same module
// path, same go.mod/go.sum, so imports resolve exactly as in the checkout);
// the working tree is never written. Deepcopy files are removed from the
// copy first so that a file which should no longer exist is reported too.
func TestGeneratedFilesUpToDate(t *testing.T) {
	bin := os.Getenv("CONTROLLER_GEN")
	if bin == "" {
		bin = filepath.Join(testenv.CacheDir(), "tools", "controller-gen")
	}
	if info, err := os.Stat(bin); err != nil || info.IsDir() {
		t.Fatalf("controller-gen not found at %s (%v): run `make tools` (or set CONTROLLER_GEN)", bin, err)
	}

	libDir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(libDir, f), filepath.Join(work, f))
	}
	copyTree(t, filepath.Join(libDir, "apis"), filepath.Join(work, "apis"))
	crdOut := filepath.Join(t.TempDir(), "crds")

	// Same generators and options as `make generate`, only the CRD output
	// directory differs.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"object:headerFile=", "paths=./apis/...",
		"crd:crdVersions=v1,maxDescLen=400", "output:crd:dir="+crdOut)
	cmd.Dir = work
	// GOWORK=off: the copy is a lone module; the checkout's go.work would
	// point the loader back at the real tree.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen failed: %v\n%s", err, out)
	}

	var stale []string
	compareSets(t, &stale,
		generatedFiles(t, filepath.Join(libDir, "apis"), "zz_generated.deepcopy.go"),
		generatedFiles(t, filepath.Join(work, "apis"), "zz_generated.deepcopy.go"),
		filepath.Join(libDir, "apis"), filepath.Join(work, "apis"), "lib/apis/")
	compareSets(t, &stale,
		yamlFiles(t, filepath.Join(libDir, "apis", "kubelink", "crds")),
		yamlFiles(t, crdOut),
		filepath.Join(libDir, "apis", "kubelink", "crds"), crdOut, "lib/apis/kubelink/crds/")
	if len(stale) > 0 {
		t.Fatalf("generated files are stale: run make generate\n  %s", strings.Join(stale, "\n  "))
	}
}

// compareSets appends to stale every relative path that differs between the
// checked-in set and the regenerated set, including files missing on a side.
func compareSets(t *testing.T, stale *[]string, have, want []string, haveDir, wantDir, label string) {
	t.Helper()
	all := map[string]bool{}
	for _, f := range append(append([]string{}, have...), want...) {
		all[f] = true
	}
	names := make([]string, 0, len(all))
	for f := range all {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		a, errA := os.ReadFile(filepath.Join(haveDir, f))
		b, errB := os.ReadFile(filepath.Join(wantDir, f))
		switch {
		case errA != nil && errB == nil:
			*stale = append(*stale, label+f+" (missing, would be generated)")
		case errA == nil && errB != nil:
			*stale = append(*stale, label+f+" (checked in, but no longer generated)")
		case errA != nil:
			t.Fatalf("%s: %v / %v", f, errA, errB)
		case !bytes.Equal(a, b):
			*stale = append(*stale, label+f+" (differs)")
		}
	}
	if len(all) == 0 {
		t.Fatalf("no generated files found under %s", label)
	}
}

// generatedFiles lists files named name under root, relative to root.
func generatedFiles(t *testing.T, root, name string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == name {
			rel, err := filepath.Rel(root, path)
			out = append(out, rel)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range matches {
		matches[i] = filepath.Base(m)
	}
	return matches
}

// copyTree copies the Go package tree under src to dst, without test files
// (they are not generator input and may import packages outside apis) and
// without deepcopy files (so removed ones are detected).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		name := d.Name()
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case strings.HasSuffix(name, "_test.go"), name == "zz_generated.deepcopy.go":
			return nil
		default:
			copyFile(t, path, target)
			return nil
		}
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The chart's crds/ holds copies of the CRDs (helm packages only files
// inside the chart); `make generate` refreshes them.
func TestChartCRDCopiesAreCurrent(t *testing.T) {
	names, err := filepath.Glob("crds/*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no CRDs found: %v", err)
	}
	for _, n := range names {
		want, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join("..", "..", "..", "deploy", "chart", "kubelink", "crds", filepath.Base(n))
		got, err := os.ReadFile(copyPath)
		if err != nil {
			t.Fatalf("%v (run make generate)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: run make generate", copyPath, n)
		}
	}
}
