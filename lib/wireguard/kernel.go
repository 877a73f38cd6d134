package wireguard

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelLink is a WireGuard interface of the kernel module.
type kernelLink struct {
	// h was opened on the caller's thread in Open, so it stays in the
	// device's namespace whichever goroutine uses it later.
	h    *netlink.Handle
	name string
}

// openKernel creates the interface, or reuses one of that name left by an
// earlier run (it keeps its peers, so traffic survives restarts).
func openKernel(name string, mtu int) (*kernelLink, error) {
	// Only rtnetlink: without a family NewHandle also opens XFRM and
	// netfilter sockets, and on a node where xfrm_user is not loaded (and
	// cannot be: no modprobe in the container, modules_disabled) that
	// fails with EPROTONOSUPPORT, which auto mode took for "no WireGuard"
	// and fell back to wireguard-go. Found by the first boot under
	// `make test-kernel` (TestKernelModeOpensOnlyRoutingNetlink).
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil && l.Type() != "wireguard":
		h.Close()
		return nil, fmt.Errorf("interface %s exists and is of type %s, not wireguard: delete it or choose another device name", name, l.Type())
	case err == nil:
		if l.Attrs().MTU != mtu {
			if err := h.LinkSetMTU(l, mtu); err != nil {
				h.Close()
				return nil, fmt.Errorf("set MTU %d on WireGuard interface %s: %w", mtu, name, err)
			}
		}
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = name, mtu
		if err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
			h.Close()
			return nil, fmt.Errorf("create kernel WireGuard interface %s: %w", name, err)
		}
	default:
		h.Close()
		return nil, fmt.Errorf("look up interface %s: %w", name, err)
	}
	return &kernelLink{h: h, name: name}, nil
}

func (k *kernelLink) close() error {
	k.h.Close()
	return nil
}

func (k *kernelLink) sessionless([32]byte) bool { return false }

func (k *kernelLink) remove() error {
	l, err := k.h.LinkByName(k.name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up WireGuard interface %s: %w", k.name, err)
	}
	if err := k.h.LinkDel(l); err != nil {
		return fmt.Errorf("delete WireGuard interface %s: %w", k.name, err)
	}
	return nil
}

// missingModuleErrnos are what rtnetlink and genetlink answer when the kernel
// has no WireGuard: an unknown link kind is EOPNOTSUPP after the module
// autoload failed; the others come from kernels or sandboxes (gVisor, old
// container runtimes) that stub netlink families out.
var missingModuleErrnos = []syscall.Errno{
	syscall.EOPNOTSUPP,
	syscall.ENODEV,
	syscall.EPROTONOSUPPORT,
	syscall.EAFNOSUPPORT,
}

// missingModuleTexts catch the same conditions when a library flattened the
// errno into text.
var missingModuleTexts = []string{
	"operation not supported",
	"not supported",
	"no such device",
	"unknown device type",
}

// isMissingKernelModule tells whether creating the kernel interface failed
// because the kernel lacks WireGuard, the one case auto mode falls back on.
// Permission errors and name clashes are not: wireguard-go would fail too.
func isMissingKernelModule(err error) bool {
	if err == nil {
		return false
	}
	for _, errno := range missingModuleErrnos {
		if errors.Is(err, errno) {
			return true
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return false // a different errno: trust it over the text
	}
	msg := strings.ToLower(err.Error())
	for _, text := range missingModuleTexts {
		if strings.Contains(msg, text) {
			return true
		}
	}
	return false
}
