package wireguard

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/kubelink/kubelink/lib/nstest"
)

func TestIsMissingKernelModule(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("create kernel WireGuard interface wg0: %w", syscall.EOPNOTSUPP), true},
		{fmt.Errorf("create: %w", syscall.ENODEV), true},
		{fmt.Errorf("create: %w", syscall.EPROTONOSUPPORT), true},
		{fmt.Errorf("create: %w", syscall.EAFNOSUPPORT), true},
		{errors.New("RTNETLINK answers: Operation not supported"), true},
		{errors.New("Error: Unknown device type."), true},
		{errors.New("no such device"), true},
		{fmt.Errorf("create: %w", syscall.EPERM), false},
		{fmt.Errorf("create: %w", syscall.EEXIST), false},
		{fmt.Errorf("create: %w", syscall.EBUSY), false},
		{errors.New("interface wg0 exists and is of type bridge, not wireguard: delete it or choose another device name"), false},
		{errors.New("permission denied"), false},
	}
	for _, tt := range tests {
		if got := isMissingKernelModule(tt.err); got != tt.want {
			t.Errorf("isMissingKernelModule(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// kernelHasWireGuard tells whether this machine's kernel offers WireGuard;
// tests adjust what they expect rather than skip.
func kernelHasWireGuard() bool {
	_, err := os.Stat("/sys/module/wireguard")
	return err == nil
}

// expectedKind is what auto mode must pick on this kernel.
func expectedKind() string {
	if kernelHasWireGuard() {
		return KindKernel
	}
	return KindUserspace
}

func TestOpenRefusesNonWireGuardInterface(t *testing.T) {
	ns := nstest.New(t, "clash")
	name := nstest.UniqueName("br")
	ns.Run(t, "ip", "link", "add", name, "type", "bridge")
	for _, mode := range []string{ModeKernel, ModeAuto} {
		err := ns.Do(func() error {
			d, err := Open(Options{Name: name, Mode: mode})
			if err == nil {
				_ = d.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "not wireguard") {
			t.Errorf("mode %s: Open over a bridge: %v, want an error naming the clash", mode, err)
		}
	}
	// The admin's interface is untouched.
	ns.Run(t, "ip", "link", "show", name, "type", "bridge")
}

func TestOpenKernelModeWithoutModuleSaysWhy(t *testing.T) {
	ns := nstest.New(t, "kmod")
	name := nstest.UniqueName("wk")
	var kind string
	err := ns.Do(func() error {
		d, err := Open(Options{Name: name, Mode: ModeKernel})
		if err != nil {
			return err
		}
		kind = d.Kind()
		return d.Delete()
	})
	if kernelHasWireGuard() {
		if err != nil || kind != KindKernel {
			t.Fatalf("kernel has WireGuard but Open(kernel) = %q, %v", kind, err)
		}
		return
	}
	if err == nil || !isMissingKernelModule(err) {
		t.Fatalf("Open(kernel) without the module: %v, want a missing-module error", err)
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name the interface", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Name: "", Mode: ModeUserspace},
		{Name: "a-name-longer-than-15", Mode: ModeUserspace},
		{Name: "../etc", Mode: ModeUserspace},
		{Name: "wg0", Mode: "fast"},
	} {
		if d, err := Open(o); err == nil {
			_ = d.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}
