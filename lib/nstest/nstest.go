// Package nstest creates real network namespaces, veth pairs and bridges for
// tests that exercise kernel networking. Everything it creates is named with a
// per-process prefix and removed when the test ends. It needs root; without it
// tests fail loudly (they never skip).
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

var counter atomic.Int32

// RequireRoot fails the test when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (network namespaces, netlink, iptables); run it as root, e.g. via make test in CI")
	}
}

// Namespace is a named network namespace ("ip netns" style, so
// `ip netns exec <Name>` works for subprocesses).
type Namespace struct {
	Name string
}

// UniqueName returns a short name unique to this process, e.g. "kt12a3-gw".
// Interface names are limited to 15 characters, so keep role short.
//
// The process part has a fixed width: with "%x%x" process 0xce's name
// number 0xff and process 0xcef's number 0xf were both "ktceff", so two
// test binaries of one `go test ./...` could ask for the same namespace,
// veth or WireGuard socket name (names in /var/run/netns and
// /var/run/wireguard are global to the machine).
func UniqueName(role string) string {
	return uniqueName(os.Getpid(), counter.Add(1), role)
}

func uniqueName(pid int, n int32, role string) string {
	return fmt.Sprintf("kt%03x%x-%s", pid&0xfff, n, role)
}

// New creates a namespace with loopback up and removes it at cleanup.
func New(t testing.TB, role string) *Namespace {
	t.Helper()
	RequireRoot(t)
	ns := &Namespace{Name: UniqueName(role)}
	Run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command in the root namespace and fails the test on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside the namespace and fails the test on error.
func (ns *Namespace) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Command returns an unstarted command that runs inside the namespace.
func (ns *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace. Sockets, netlink
// handles and subprocesses created inside fn belong to the namespace.
func (ns *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // still locked: the thread exits with the goroutine
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		err = fn()
		// Switch back before the thread is reused. An exiting locked
		// goroutine normally takes its thread along, but not Go's main
		// thread, which would stay in the namespace for the rest of the
		// process; if switching back fails, the thread stays locked.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Handle opens the namespace (for netlink.NewHandleAt and the like); the
// caller closes it.
func (ns *Namespace) Handle() (netns.NsHandle, error) { return netns.GetFromName(ns.Name) }

// Veth connects two namespaces with a veth pair named ifA (in a) and ifB (in
// b) and assigns the given addresses (CIDR notation, may be empty).
func Veth(t testing.TB, a *Namespace, ifA, addrA string, b *Namespace, ifB, addrB string) {
	t.Helper()
	tmpA, tmpB := UniqueName("va"), UniqueName("vb")
	Run(t, "ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB)
	Run(t, "ip", "link", "set", tmpA, "netns", a.Name)
	Run(t, "ip", "link", "set", tmpB, "netns", b.Name)
	a.Run(t, "ip", "link", "set", tmpA, "name", ifA)
	b.Run(t, "ip", "link", "set", tmpB, "name", ifB)
	for _, e := range []struct {
		ns       *Namespace
		ifc, adr string
	}{{a, ifA, addrA}, {b, ifB, addrB}} {
		if e.adr != "" {
			e.ns.Run(t, "ip", "addr", "add", e.adr, "dev", e.ifc)
		}
		e.ns.Run(t, "ip", "link", "set", e.ifc, "up")
	}
}

// Bridge creates a bridge named name inside ns (a "switch" namespace) and
// returns a function that plugs another namespace into it with a veth whose
// inside end is called ifc with address adr.
func Bridge(t testing.TB, sw *Namespace, name string) func(ns *Namespace, ifc, adr string) {
	t.Helper()
	sw.Run(t, "ip", "link", "add", name, "type", "bridge")
	sw.Run(t, "ip", "link", "set", name, "up")
	n := 0
	return func(ns *Namespace, ifc, adr string) {
		t.Helper()
		n++
		port := fmt.Sprintf("p%d", n)
		Veth(t, ns, ifc, adr, sw, port, "")
		sw.Run(t, "ip", "link", "set", port, "master", name)
	}
}
