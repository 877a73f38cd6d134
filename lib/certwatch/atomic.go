package certwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DataLink is the symlink inside a target directory that points at the
// current timestamped data directory. Each visible file is a symlink
// "<name> -> ..data/<name>", so renaming ..data switches all files at once.
const DataLink = "..data"

const dataLinkTmp = "..data_tmp"

// File is one file of an atomic write.
type File struct {
	Name string      // plain file name, no path separators, not starting with ".."
	Data []byte      // content
	Mode fs.FileMode // permission bits, e.g. 0o600 for keys
}

// WriteAtomic makes the directory target hold exactly files, the way the
// kubelet's AtomicWriter does: the files are written into a new directory
// "..<timestamp>.<random>", the symlink ..data is switched to it with a
// rename (atomic on POSIX), and older data directories are removed. A reader
// that opens target/<name> gets either the complete old or the complete new
// content, never a partial file. Nothing is written when the current content
// and modes already equal files; changed reports whether a swap happened.
func WriteAtomic(target string, files []File) (changed bool, err error) {
	for _, f := range files {
		if f.Name == "" || strings.ContainsRune(f.Name, '/') || strings.HasPrefix(f.Name, "..") || f.Name == "." {
			return false, fmt.Errorf("atomic write to %s: invalid file name %q", target, f.Name)
		}
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return false, err
	}
	cur, _ := os.Readlink(filepath.Join(target, DataLink))
	if cur != "" && sameContent(filepath.Join(target, cur), files) && linksInPlace(target, files) {
		return false, nil
	}
	dir, err := os.MkdirTemp(target, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := writeFiles(dir, files); err != nil {
		_ = os.RemoveAll(dir)
		return false, err
	}
	if err := replaceSymlink(target, DataLink, filepath.Base(dir), dataLinkTmp); err != nil {
		_ = os.RemoveAll(dir)
		return false, err
	}
	if err := syncDir(target); err != nil {
		return true, err
	}
	var errs []error
	for _, f := range files {
		want := filepath.Join(DataLink, f.Name)
		if got, err := os.Readlink(filepath.Join(target, f.Name)); err == nil && got == want {
			continue
		}
		errs = append(errs, replaceSymlink(target, f.Name, want, ".."+f.Name+"_tmp"))
	}
	errs = append(errs, cleanup(target, filepath.Base(dir), files))
	return true, errors.Join(errs...)
}

// ReadSnapshot reads names from a directory written by WriteAtomic as one
// consistent set: all files come from the same data directory even when a
// swap happens meanwhile (it retries then). Consumers that need matching
// files, such as tls.crt and tls.key, should read them this way.
func ReadSnapshot(target string, names ...string) (map[string][]byte, error) {
	var lastErr error
	for range 20 {
		d1, err := os.Readlink(filepath.Join(target, DataLink))
		if err != nil {
			return nil, err
		}
		out := make(map[string][]byte, len(names))
		lastErr = nil
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(target, d1, n))
			if err != nil {
				lastErr = err
				break
			}
			out[n] = b
		}
		d2, err := os.Readlink(filepath.Join(target, DataLink))
		if err != nil {
			return nil, err
		}
		if d1 == d2 && lastErr == nil {
			return out, nil
		}
		if lastErr != nil && !errors.Is(lastErr, fs.ErrNotExist) {
			return nil, lastErr
		}
		time.Sleep(time.Millisecond)
	}
	if lastErr == nil {
		lastErr = errors.New("the data directory kept changing")
	}
	return nil, fmt.Errorf("reading a snapshot of %s: %w", target, lastErr)
}

func sameContent(dir string, files []File) bool {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != len(files) {
		return false
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != f.Mode.Perm() {
			return false
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}

func linksInPlace(target string, files []File) bool {
	for _, f := range files {
		if got, err := os.Readlink(filepath.Join(target, f.Name)); err != nil || got != filepath.Join(DataLink, f.Name) {
			return false
		}
	}
	return true
}

func writeFiles(dir string, files []File) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		fh, err := os.OpenFile(filepath.Join(dir, f.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, f.Mode.Perm())
		if err != nil {
			return err
		}
		_, err = fh.Write(f.Data)
		err = errors.Join(err, fh.Chmod(f.Mode.Perm()), fh.Sync(), fh.Close())
		if err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// replaceSymlink points target/name at dest with a symlink created under a
// temporary name and renamed over the old one.
func replaceSymlink(target, name, dest, tmp string) error {
	tmpPath := filepath.Join(target, tmp)
	if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(dest, tmpPath); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, filepath.Join(target, name)); err != nil {
		_ = os.Remove(tmpPath)
		return err
	}
	return nil
}

// cleanup removes old data directories and visible links to files that are
// no longer written.
func cleanup(target, current string, files []File) error {
	entries, err := os.ReadDir(target)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		switch {
		case n == current || n == DataLink:
		case strings.HasPrefix(n, "..") && e.IsDir():
			errs = append(errs, os.RemoveAll(filepath.Join(target, n)))
		case e.Type()&fs.ModeSymlink != 0 && !strings.HasPrefix(n, ".."):
			dest, err := os.Readlink(filepath.Join(target, n))
			if err == nil && strings.HasPrefix(dest, DataLink+"/") &&
				!slices.ContainsFunc(files, func(f File) bool { return f.Name == n }) {
				errs = append(errs, os.Remove(filepath.Join(target, n)))
			}
		}
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
