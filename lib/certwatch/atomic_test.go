package certwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func dataDirs(t *testing.T, target string) []string {
	t.Helper()
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

func TestWriteAtomicSwapsOnlyOnChange(t *testing.T) {
	target := filepath.Join(t.TempDir(), "tls")
	files := []File{{Name: "tls.crt", Data: []byte("cert1"), Mode: 0o644}, {Name: "tls.key", Data: []byte("key1"), Mode: 0o600}}
	changed, err := WriteAtomic(target, files)
	if err != nil || !changed {
		t.Fatalf("first write: changed %v err %v", changed, err)
	}
	first, _ := os.Readlink(filepath.Join(target, DataLink))
	if b, err := os.ReadFile(filepath.Join(target, "tls.key")); err != nil || string(b) != "key1" {
		t.Fatalf("tls.key: %q %v", b, err)
	}
	if dest, _ := os.Readlink(filepath.Join(target, "tls.key")); dest != "..data/tls.key" {
		t.Errorf("tls.key links to %q", dest)
	}
	if st, _ := os.Stat(filepath.Join(target, "tls.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("tls.key mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(target, "tls.crt")); st.Mode().Perm() != 0o644 {
		t.Errorf("tls.crt mode %v", st.Mode())
	}
	if changed, err := WriteAtomic(target, files); err != nil || changed {
		t.Errorf("same content: changed %v err %v", changed, err)
	}
	files[1].Data = []byte("key2")
	files = files[1:] // tls.crt is dropped
	if changed, err := WriteAtomic(target, files); err != nil || !changed {
		t.Fatalf("new content: changed %v err %v", changed, err)
	}
	second, _ := os.Readlink(filepath.Join(target, DataLink))
	if second == first {
		t.Errorf("..data still points at %s", first)
	}
	if dirs := dataDirs(t, target); len(dirs) != 1 || dirs[0] != second {
		t.Errorf("data dirs %v, want only %s", dirs, second)
	}
	if _, err := os.Lstat(filepath.Join(target, "tls.crt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dropped tls.crt still there: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "tls.key")); string(b) != "key2" {
		t.Errorf("tls.key %q", b)
	}
	if _, err := WriteAtomic(target, []File{{Name: "../x", Data: nil, Mode: 0o600}}); err == nil {
		t.Error("path in a file name accepted")
	}
}

// Readers polling during many swaps see only complete versions, and
// ReadSnapshot always returns a matching pair.
func TestWriteAtomicReadersNeverSeePartialFiles(t *testing.T) {
	target := filepath.Join(t.TempDir(), "tls")
	version := func(i int) []File {
		body := bytes.Repeat([]byte(fmt.Sprintf("v%06d|", i)), 20000) // 160 kB: a torn write would show
		return []File{{Name: "tls.crt", Data: body, Mode: 0o644}, {Name: "tls.key", Data: []byte(fmt.Sprintf("key-v%06d", i)), Mode: 0o600}}
	}
	if _, err := WriteAtomic(target, version(0)); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, snapshots atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(filepath.Join(target, "tls.crt"))
			if errors.Is(err, fs.ErrNotExist) {
				continue // the old directory went away between resolving and opening: retry, as documented
			}
			if err != nil {
				errc <- err
				return
			}
			if len(b) != 160000 || !bytes.Equal(b, bytes.Repeat(b[:8], 20000)) {
				errc <- fmt.Errorf("partial or mixed tls.crt of %d bytes", len(b))
				return
			}
			reads.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for !stop.Load() {
			m, err := ReadSnapshot(target, "tls.crt", "tls.key")
			if err != nil {
				errc <- err
				return
			}
			if want := "key-" + string(m["tls.crt"][:7]); string(m["tls.key"]) != want {
				errc <- fmt.Errorf("snapshot pairs %q with %q", m["tls.key"], m["tls.crt"][:7])
				return
			}
			snapshots.Add(1)
		}
	}()
	for i := 1; i <= 200; i++ {
		if _, err := WriteAtomic(target, version(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if reads.Load() == 0 || snapshots.Load() == 0 {
		t.Errorf("readers did not run: %d reads, %d snapshots", reads.Load(), snapshots.Load())
	}
	if dirs := dataDirs(t, target); len(dirs) != 1 {
		t.Errorf("data dirs left: %v", dirs)
	}
}
