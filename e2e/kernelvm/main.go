// Command kernelvm runs test binaries inside a VM that boots a real Debian
// kernel, for the code paths this machine's kernel cannot run (kernel
// WireGuard). It builds an initramfs from the test binaries, the programs
// they exec (with their shared libraries), the kernel modules they need and
// itself as /init, boots it under qemu-system-x86_64 (software emulation
// works; KVM is tried first when /dev/kvm opens, and a VM that prints
// nothing under it, within 30 s or before qemu ends, as where /dev/kvm
// exists but cannot run a guest, is booted again under emulation) and
// exits with the tests'
// result. Nothing of the host's userland runs in the VM besides what is
// copied.
//
//	kernelvm -kernel DIR -modules wireguard,veth -exec ip,ss wireguard=lib/wireguard/wireguard.test
//
// DIR holds vmlinuz and lib/modules/<version> (lab/scripts/vm-kernel.sh).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	if os.Getpid() == 1 {
		runInit()
	}
	os.Exit(host())
}

func host() int {
	kernelDir := flag.String("kernel", "", "directory with vmlinuz and lib/modules/<version> (lab/scripts/vm-kernel.sh prints it)")
	modules := flag.String("modules", "wireguard", "comma-separated kernel modules to load at boot (their dependencies are added)")
	execs := flag.String("exec", "ip,ss", "comma-separated programs the tests run, copied from this machine's PATH with their libraries")
	moduleDirs := flag.String("module-dirs", "", "comma-separated directories under lib/modules/<version> whose modules are all loaded too (best effort: one that does not load is logged)")
	copies := flag.String("copy", "", "comma-separated files or directories copied to the same path in the VM (ELF files with their libraries)")
	testArgs := flag.String("test-args", "-test.v -test.count=1", "arguments for every test binary")
	env := flag.String("env", "", "comma-separated NAME=VALUE pairs for the tests' environment")
	timeout := flag.Duration("timeout", 20*time.Minute, "limit for the whole VM run")
	memory := flag.Int("memory", 2048, "VM memory in MiB")
	cpus := flag.Int("cpus", 2, "VM CPUs")
	defaultRoute := flag.Bool("default-route", false, "give the VM a default route through a dummy interface (needs the dummy module)")
	keep := flag.String("initramfs", "", "write the initramfs here (default: a temporary file, removed)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: kernelvm [flags] NAME=TEST-BINARY[#ARG,ARG...]...\n\nBoots a kernel under qemu and runs the test binaries inside it, each with -test-args and its own ARGs.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *kernelDir == "" || flag.NArg() == 0 {
		flag.Usage()
		return 2
	}
	p := plan{Env: splitList(*env), DefaultRoute: *defaultRoute}
	for _, arg := range flag.Args() {
		name, bin, ok := strings.Cut(arg, "=")
		if !ok || name == "" || strings.ContainsAny(name, "/ ") {
			fmt.Fprintf(os.Stderr, "kernelvm: %q: want NAME=TEST-BINARY\n", arg)
			return 2
		}
		// NAME=BINARY#ARG,ARG adds arguments for this binary only.
		bin, own, _ := strings.Cut(bin, "#")
		args := append(strings.Fields(*testArgs), splitList(own)...)
		p.Tests = append(p.Tests, planTest{Name: name, Binary: bin, Args: args, Timeout: *timeout})
	}
	start := time.Now()
	initrd, version, err := buildInitramfs(*kernelDir, &p, contents{
		modules: splitList(*modules), moduleDirs: splitList(*moduleDirs),
		execs: splitList(*execs), copies: splitList(*copies),
	}, *keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kernelvm: %v\n", err)
		return 1
	}
	if *keep == "" {
		defer os.Remove(initrd)
	}
	fmt.Printf("kernelvm: initramfs for %s with %d modules and %d tests built in %.1fs\n", version, len(p.Modules), len(p.Tests), time.Since(start).Seconds())
	res, err := boot(filepath.Join(*kernelDir, "vmlinuz"), initrd, *memory, *cpus, *timeout)
	fmt.Printf("kernelvm: VM ran %.1fs\n", time.Since(start).Seconds())
	if err != nil {
		fmt.Fprintf(os.Stderr, "kernelvm: FAIL: %v\n", err)
		return 1
	}
	return report(res, p)
}

// splitList splits a flag's value at commas (and blanks).
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// report prints the summary and tells whether every test passed.
func report(res *result, p plan) int {
	fmt.Printf("kernelvm: kernel %s, %d modules loaded\n", res.Kernel, res.Modules)
	if res.Error != "" {
		fmt.Printf("kernelvm: FAIL: init: %s\n", res.Error)
		return 1
	}
	rc := 0
	if len(res.Tests) != len(p.Tests) {
		fmt.Printf("kernelvm: FAIL: %d of %d tests ran\n", len(res.Tests), len(p.Tests))
		rc = 1
	}
	for _, t := range res.Tests {
		status := "PASS"
		if t.ExitCode != 0 {
			status, rc = fmt.Sprintf("FAIL (exit %d)", t.ExitCode), 1
		}
		fmt.Printf("kernelvm: %s %s in %.1fs\n", status, t.Name, t.Seconds)
	}
	return rc
}

// boot runs qemu with the console on a pipe, echoes it and returns the
// result line init printed.
func boot(kernel, initrd string, memory, cpus int, timeout time.Duration) (*result, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("qemu-system-x86_64 not found: install Debian's qemu-system-x86 (lab/scripts/deps.sh kernel)")
	}
	if _, err := os.Stat(kernel); err != nil {
		return nil, fmt.Errorf("kernel image: %w (lab/scripts/vm-kernel.sh fetches it)", err)
	}
	args := []string{
		"-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
		"-serial", "stdio",
		"-m", fmt.Sprint(memory), "-smp", fmt.Sprint(cpus),
		"-kernel", kernel, "-initrd", initrd,
		// panic=-1: a crash of init or the kernel ends the VM at once.
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		fmt.Println("kernelvm: booting with KVM")
		res, err := run(qemu, append(slices.Clone(args), "-accel", "kvm", "-cpu", "host"), timeout, kvmFirstOutput)
		if !errors.Is(err, errSilent) {
			return res, err
		}
		// A /dev/kvm that opens but cannot run a guest (nested
		// virtualisation the host does not offer) hangs the VM silently,
		// or qemu gives up before the guest prints (seen: "failed to set
		// MSR 0x10a" and an assertion abort with -cpu host).
		fmt.Printf("kernelvm: %v under KVM; booting again under software emulation\n", err)
	} else {
		fmt.Println("kernelvm: booting under software emulation (no /dev/kvm)")
	}
	return run(qemu, append(args, "-accel", "tcg,thread=multi", "-cpu", "max"), timeout, 0)
}

// kvmFirstOutput bounds the wait for the first console line of a VM under
// KVM, where the kernel and init print within seconds; software emulation
// has no such bound (its whole boot takes tens of seconds).
const kvmFirstOutput = 30 * time.Second

// errSilent: the VM printed nothing on its console, within its
// first-output bound or before qemu ended.
var errSilent = errors.New("the VM printed nothing on its console")

// run starts qemu with args, echoes the console and returns the result line
// init printed. With firstOutput > 0, a VM that prints no console line
// within it is killed and errSilent returned; so is one whose qemu ends
// before the first line.
func run(qemu string, args []string, timeout, firstOutput time.Duration) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	var gotLine, silent atomic.Bool
	if firstOutput > 0 {
		watchdog := time.AfterFunc(firstOutput, func() {
			if !gotLine.Load() {
				silent.Store(true)
				cancel()
			}
		})
		defer watchdog.Stop()
	}
	var res *result
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		gotLine.Store(true)
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, resultMarker); i >= 0 {
			var r result
			if err := json.Unmarshal([]byte(line[i+len(resultMarker):]), &r); err == nil {
				res = &r
			}
		}
		fmt.Println(line)
	}
	scanErr := sc.Err()
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	switch {
	case silent.Load():
		return nil, fmt.Errorf("%w within %v", errSilent, firstOutput)
	case firstOutput > 0 && !gotLine.Load() && ctx.Err() == nil:
		return nil, fmt.Errorf("%w: qemu ended first (%v)", errSilent, werr)
	case scanErr != nil && res == nil:
		return nil, fmt.Errorf("reading the VM console: %w", scanErr)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("the VM did not finish within %v (killed)", timeout)
	case res == nil:
		return nil, fmt.Errorf("the VM ended without a result line (init crashed or the kernel panicked; see the console above): %v", werr)
	case werr != nil:
		return nil, fmt.Errorf("qemu: %w", werr)
	}
	return res, nil
}
