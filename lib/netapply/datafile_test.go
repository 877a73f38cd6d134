package netapply

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDatafileRoundTripAndAtomicReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "routes")
	if got, err := LoadDatafile(path); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v; want nothing (first start)", got, err)
	}

	// A file written by hand (or by the original router) with comments.
	hand := "# kubelink routes\n10.20.0.0/16\n\n  192.168.0.0/24   # the mesh\nfd00:30::/64\n10.30.1.0/16\n"
	if err := os.WriteFile(path, []byte(hand), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("192.168.0.0/24"),
		netip.MustParsePrefix("fd00:30::/64"), netip.MustParsePrefix("10.30.0.0/16")}
	got, err := LoadDatafile(path)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("LoadDatafile = %v, %v; want %v", got, err, want)
	}

	// A reader that opened the old file keeps reading it whole: the new
	// content arrives by rename, never by rewriting the file in place.
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := SaveDatafile(path, want[:2]); err != nil {
		t.Fatal(err)
	}
	if old, _ := io.ReadAll(reader); string(old) != hand {
		t.Errorf("the old file was changed in place: %q", old)
	}
	if got, err := LoadDatafile(path); err != nil || !slices.Equal(got, want[:2]) {
		t.Errorf("after SaveDatafile: %v, %v; want %v", got, err, want[:2])
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", st.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the datafile (temporary file left behind?)", len(entries))
	}

	if err := SaveDatafile(filepath.Join(dir, "missing", "routes"), want); err == nil {
		t.Error("saving into a missing directory must fail")
	}

	if err := os.WriteFile(path, []byte("10.0.0.0/8\nnot-a-cidr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDatafile(path); err == nil || !strings.Contains(err.Error(), path+":2") {
		t.Errorf("error = %v, want one pointing at line 2", err)
	}
}
