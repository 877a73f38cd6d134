package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// runInit is the VM's PID 1: it mounts what the tests need, loads the
// modules, runs the tests with their output on the console, prints the
// result line and powers the VM off. It never returns; if it panicked
// instead, the kernel panics and qemu (-no-reboot) exits without a result
// line, which the host reports as a failure.
func runInit() {
	res := result{}
	if err := initVM(&res); err != nil {
		res.Error = err.Error()
		fmt.Printf("kernelvm: %v\n", err)
	}
	out, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", resultMarker, out)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // PID 1 must not exit
}

func initVM(res *result) error {
	// The kernel starts init with HOME and TERM only.
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	os.Setenv("HOME", "/root")
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	res.Kernel = unix.ByteSliceToString(uts.Release[:])
	fmt.Printf("kernelvm: kernel %s\n", res.Kernel)

	data, err := os.ReadFile(planPath)
	if err != nil {
		return err
	}
	var p plan
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("%s: %w", planPath, err)
	}
	for _, m := range p.Modules {
		if err := loadModule(m); err != nil {
			return err
		}
		res.Modules++
	}
	for _, m := range p.Optional {
		if err := loadModule(m); err != nil {
			if len(res.Failed) < 5 {
				fmt.Printf("kernelvm: optional: %v\n", err)
			}
			res.Failed = append(res.Failed, filepath.Base(m))
			continue
		}
		res.Modules++
	}
	fmt.Printf("kernelvm: loaded %d modules\n", res.Modules)
	if len(res.Failed) > 0 {
		fmt.Printf("kernelvm: %d optional modules did not load: %v\n", len(res.Failed), res.Failed)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	if p.DefaultRoute {
		for _, args := range [][]string{
			{"link", "add", "kvm0", "type", "dummy"},
			{"addr", "add", "10.254.0.1/24", "dev", "kvm0"},
			{"link", "set", "kvm0", "up"},
			{"route", "add", "default", "via", "10.254.0.254", "dev", "kvm0"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("default route: ip %v: %v: %s", args, err, out)
			}
		}
	}
	for _, t := range p.Tests {
		res.Tests = append(res.Tests, runTest(t, p.Env))
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil // built in or loaded as a dependency already
	}
	if err != nil {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

func runTest(t planTest, env []string) testResult {
	fmt.Printf("kernelvm: --- %s: %s %v\n", t.Name, t.Binary, t.Args)
	ctx, cancel := context.WithTimeout(context.Background(), t.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.Binary, t.Args...)
	dir := filepath.Join("/tmp", t.Name)
	_ = os.MkdirAll(dir, 0o755)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	start := time.Now()
	err := cmd.Run()
	r := testResult{Name: t.Name, Seconds: time.Since(start).Seconds()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.ExitCode = exit.ExitCode()
		if ctx.Err() != nil {
			fmt.Printf("kernelvm: %s killed after %v\n", t.Name, t.Timeout)
		}
	default:
		fmt.Printf("kernelvm: %s: %v\n", t.Name, err)
		r.ExitCode = -1
	}
	fmt.Printf("kernelvm: --- %s exit %d after %.1fs\n", t.Name, r.ExitCode, r.Seconds)
	return r
}
