package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// archive collects the initramfs: a newc cpio, which the kernel unpacks into
// its root file system before it starts /init. Entries are written in path
// order after their parent directories (the unpacker creates no parents).
type archive struct {
	dirs  map[string]bool
	files map[string]entry
}

type entry struct {
	mode   uint32 // permission bits
	source string // host file to copy, or
	data   []byte // contents, or
	link   string // symlink target
}

func newArchive() *archive {
	return &archive{dirs: map[string]bool{}, files: map[string]entry{}}
}

// dir adds a directory and its parents.
func (a *archive) dir(p string) {
	for p = path.Clean("/" + p); p != "/"; p = path.Dir(p) {
		a.dirs[p] = true
	}
}

// copy adds the host file src at dst, keeping its permission bits.
func (a *archive) copy(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	a.dir(path.Dir(dst))
	a.files[path.Clean("/"+dst)] = entry{mode: uint32(st.Mode().Perm()), source: src}
	return nil
}

func (a *archive) bytes(dst string, mode uint32, data []byte) {
	a.dir(path.Dir(dst))
	a.files[path.Clean("/"+dst)] = entry{mode: mode, data: data}
}

func (a *archive) symlink(dst, target string) {
	a.dir(path.Dir(dst))
	a.files[path.Clean("/"+dst)] = entry{mode: 0o777, link: target}
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

// write emits the archive.
func (a *archive) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &cpioWriter{w: bw}
	dirs := make([]string, 0, len(a.dirs))
	for d := range a.dirs {
		if _, isFile := a.files[d]; isFile {
			return fmt.Errorf("%s is both a directory and a file", d)
		}
		dirs = append(dirs, d)
	}
	// Shorter paths first puts every parent before its children.
	sort.Slice(dirs, func(i, j int) bool {
		if ci, cj := strings.Count(dirs[i], "/"), strings.Count(dirs[j], "/"); ci != cj {
			return ci < cj
		}
		return dirs[i] < dirs[j]
	})
	for _, d := range dirs {
		if err := cw.header(d, sIFDIR|0o755, 0); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(a.files))
	for n := range a.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := cw.file(n, a.files[n]); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	if err := cw.header("TRAILER!!!", 0, 0); err != nil {
		return err
	}
	return bw.Flush()
}

type cpioWriter struct {
	w   *bufio.Writer
	ino uint32
	n   int64 // bytes written, for the 4-byte alignment
}

func (c *cpioWriter) put(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.n % 4; r != 0 {
		return c.put(make([]byte, 4-r))
	}
	return nil
}

// header writes a newc header and the name; the caller writes size bytes of
// data and pads.
func (c *cpioWriter) header(name string, mode uint32, size int64) error {
	name = strings.TrimPrefix(name, "/")
	c.ino++
	nlink := 1
	if mode&sIFDIR != 0 {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if err := c.put([]byte(h)); err != nil {
		return err
	}
	if err := c.put(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) file(name string, e entry) error {
	switch {
	case e.link != "":
		if err := c.header(name, sIFLNK|0o777, int64(len(e.link))); err != nil {
			return err
		}
		if err := c.put([]byte(e.link)); err != nil {
			return err
		}
	case e.source != "":
		f, err := os.Open(e.source)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if err := c.header(name, sIFREG|e.mode, st.Size()); err != nil {
			return err
		}
		n, err := io.Copy(c.w, f)
		c.n += n
		if err != nil {
			return err
		}
		if n != st.Size() {
			return fmt.Errorf("copied %d of %d bytes (file changed)", n, st.Size())
		}
	default:
		if err := c.header(name, sIFREG|e.mode, int64(len(e.data))); err != nil {
			return err
		}
		if err := c.put(e.data); err != nil {
			return err
		}
	}
	return c.pad()
}
