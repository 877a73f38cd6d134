package kubeflags

import (
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name    string
		files   []string
		want    int64
		wantErr bool
	}{
		{"v2 limit", []string{write("v2", "268435456\n")}, 268435456, false},
		{"v2 without a limit", []string{write("v2max", "max\n")}, 0, false},
		{"v1 after a missing v2", []string{missing, write("v1", "134217728\n")}, 134217728, false},
		{"v1 without a limit", []string{write("v1max", "9223372036854771712\n")}, 0, false},
		{"garbage", []string{write("bad", "lots\n")}, 0, true},
		{"no file", []string{missing}, 0, true},
	} {
		got, _, err := cgroupMemoryLimit(tc.files)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %d, %v; want %d, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSetMemoryLimitFromTheContainer(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	saved := cgroupMemoryFiles
	t.Cleanup(func() { cgroupMemoryFiles = saved })
	f := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(f, []byte("100000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cgroupMemoryFiles = []string{f}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("GOMEMLIMIT", "")
	if got := SetMemoryLimit(log); got != 90000000 {
		t.Errorf("SetMemoryLimit = %d, want 90%% of the container's 100000000", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 90000000 {
		t.Errorf("the runtime's limit is %d, want 90000000", got)
	}

	// An operator's GOMEMLIMIT wins: nothing is changed.
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "50MiB")
	if got := SetMemoryLimit(log); got != 0 {
		t.Errorf("with GOMEMLIMIT set, SetMemoryLimit = %d, want 0 (left alone)", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the runtime's limit became %d", got)
	}
}
