package main

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// contents is what goes into the initramfs besides init and the tests.
type contents struct {
	modules    []string // required kernel modules (names)
	moduleDirs []string // every module under these, best effort
	execs      []string // programs looked up in PATH
	copies     []string // host paths copied as they are
}

// buildInitramfs writes the initramfs for p and fills in p's module and
// binary paths. It returns the file and the kernel version.
func buildInitramfs(kernelDir string, p *plan, c contents, out string) (string, string, error) {
	a := newArchive()
	self, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	if err := requireStatic(self); err != nil {
		return "", "", fmt.Errorf("kernelvm itself: %w (build it with CGO_ENABLED=0)", err)
	}
	if err := a.copy(self, "/init"); err != nil {
		return "", "", err
	}
	// Kernel modules, in load order.
	versions, err := filepath.Glob(filepath.Join(kernelDir, "lib/modules/*"))
	if err != nil || len(versions) != 1 {
		return "", "", fmt.Errorf("want exactly one lib/modules/<version> in %s, found %v", kernelDir, versions)
	}
	version := filepath.Base(versions[0])
	tree, err := loadModuleTree(versions[0])
	if err != nil {
		return "", "", err
	}
	order, err := tree.loadOrder(c.modules)
	if err != nil {
		return "", "", err
	}
	// addModules copies modules (paths relative to the module directory)
	// that are not in have yet and returns their paths in the initramfs.
	addModules := func(rels, have []string) ([]string, error) {
		var dsts []string
		for _, rel := range rels {
			dst := path.Join("/lib/modules", version, filepath.ToSlash(rel))
			if slices.Contains(have, dst) {
				continue
			}
			if err := a.copy(filepath.Join(versions[0], rel), dst); err != nil {
				return nil, err
			}
			dsts = append(dsts, dst)
		}
		return dsts, nil
	}
	if p.Modules, err = addModules(order, nil); err != nil {
		return "", "", err
	}
	if len(c.moduleDirs) > 0 {
		names := tree.under(c.moduleDirs)
		if len(names) == 0 {
			return "", "", fmt.Errorf("no modules under %v", c.moduleDirs)
		}
		extra, err := tree.loadOrder(names)
		if err != nil {
			return "", "", err
		}
		if p.Optional, err = addModules(extra, p.Modules); err != nil {
			return "", "", err
		}
	}
	// Programs the tests exec, at the same paths as here, with their
	// libraries and the dynamic loader.
	for _, name := range c.execs {
		bin, err := exec.LookPath(name)
		if err != nil {
			return "", "", fmt.Errorf("%s (copied into the VM) is not installed here: %w", name, err)
		}
		if err := a.copyWithLibraries(bin); err != nil {
			return "", "", err
		}
	}
	for _, root := range c.copies {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if _, err := os.Stat(p); err != nil {
					return nil // a dangling link: nothing to copy
				}
			}
			return a.copyWithLibraries(p)
		})
		if err != nil {
			return "", "", fmt.Errorf("copy %s: %w", root, err)
		}
	}
	// The tests.
	for i, t := range p.Tests {
		if err := requireStatic(t.Binary); err != nil {
			return "", "", fmt.Errorf("test %s: %w (build it with CGO_ENABLED=0 go test -c)", t.Name, err)
		}
		dst := path.Join("/kernelvm/tests", t.Name+".test")
		if err := a.copy(t.Binary, dst); err != nil {
			return "", "", err
		}
		p.Tests[i].Binary = dst
	}
	data, err := json.Marshal(p)
	if err != nil {
		return "", "", err
	}
	a.bytes(planPath, 0o644, data)
	// What the tests and iproute2 expect to find.
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root", "/usr/bin", "/usr/sbin"} {
		a.dir(d)
	}
	a.symlink("/var/run", "../run")
	a.bytes("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	a.bytes("/etc/group", 0o644, []byte("root:x:0:\n"))
	a.bytes("/etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost\n"))

	if out == "" {
		f, err := os.CreateTemp("", "kernelvm-*.cpio")
		if err != nil {
			return "", "", err
		}
		f.Close()
		out = f.Name()
	}
	f, err := os.Create(out)
	if err != nil {
		return "", "", err
	}
	if err := a.write(f); err != nil {
		f.Close()
		return "", "", err
	}
	return out, version, f.Close()
}

// copyWithLibraries copies a host file to the same path and, for a
// dynamically linked ELF file, the libraries it loads.
func (a *archive) copyWithLibraries(p string) error {
	if err := a.copy(p, p); err != nil {
		return err
	}
	if !isDynamicELF(p) {
		return nil
	}
	libs, err := sharedLibraries(p)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := a.copy(lib, lib); err != nil {
			return err
		}
	}
	return nil
}

func isDynamicELF(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_DYNAMIC {
			return true
		}
	}
	return false
}

// sharedLibraries lists what ldd says bin loads (absolute paths only).
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// requireStatic refuses a dynamically linked binary: the VM has no libc
// for it unless it is copied as a program.
func requireStatic(bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	if isDynamicELF(bin) {
		return fmt.Errorf("%s is dynamically linked", bin)
	}
	return nil
}
