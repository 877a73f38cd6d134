package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// buildInitramfs writes the initramfs for p and fills in p's module and
// binary paths. It returns the file and the kernel version.
func buildInitramfs(kernelDir string, p *plan, modules, execs []string, out string) (string, string, error) {
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
	order, err := tree.loadOrder(modules)
	if err != nil {
		return "", "", err
	}
	for _, rel := range order {
		dst := path.Join("/lib/modules", version, filepath.ToSlash(rel))
		if err := a.copy(filepath.Join(versions[0], rel), dst); err != nil {
			return "", "", err
		}
		p.Modules = append(p.Modules, dst)
	}
	// Programs the tests exec, at the same paths as here, with their
	// libraries and the dynamic loader.
	for _, name := range execs {
		bin, err := exec.LookPath(name)
		if err != nil {
			return "", "", fmt.Errorf("%s (copied into the VM) is not installed here: %w", name, err)
		}
		if err := a.copy(bin, bin); err != nil {
			return "", "", err
		}
		libs, err := sharedLibraries(bin)
		if err != nil {
			return "", "", err
		}
		for _, lib := range libs {
			if err := a.copy(lib, lib); err != nil {
				return "", "", err
			}
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
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "statically linked") {
		return fmt.Errorf("%s is dynamically linked", bin)
	}
	if _, serr := os.Stat(bin); serr != nil {
		return serr
	}
	return nil
}
