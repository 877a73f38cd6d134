package netapply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// SetAddresses makes the addresses of our own device exactly want: on a
// device kubelink made every address is its own. IPv6 link-local addresses
// are left alone (the kernel manages them) unless wanted.
func SetAddresses(linkName string, want []netip.Prefix) error {
	link, err := linkByName(linkName)
	if err != nil {
		return err
	}
	wanted := map[netip.Prefix]bool{}
	for _, p := range want {
		wanted[p] = true
	}
	have, err := addresses(link)
	if err != nil {
		return err
	}
	var errs []error
	for p, a := range have {
		if wanted[p] || p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("device %s: remove address %s: %w", linkName, p, err))
		}
	}
	// List again: removing a primary IPv4 address also removes the
	// secondaries of its subnet, which may be wanted.
	if have, err = addresses(link); err != nil {
		return err
	}
	for p := range wanted {
		if _, ok := have[p]; ok {
			continue
		}
		// noprefixroute: the kernel would add a connected route for the
		// network; the mesh routes are ours to manage (marked, removable).
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Flags: unix.IFA_F_NOPREFIXROUTE}
		if err := netlink.AddrAdd(link, addr); err != nil {
			errs = append(errs, fmt.Errorf("device %s: add address %s: %w", linkName, p, err))
		}
	}
	return errors.Join(errs...)
}

func addresses(link netlink.Link) (map[netip.Prefix]netlink.Addr, error) {
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("device %s: list addresses: %w", link.Attrs().Name, err)
	}
	out := map[netip.Prefix]netlink.Addr{}
	for _, a := range list {
		out[addrPrefix(a.IPNet)] = a
	}
	return out, nil
}

// SetUp brings a device up.
func SetUp(linkName string) error {
	link, err := linkByName(linkName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("device %s: set up: %w", linkName, err)
	}
	return nil
}

// DeleteLink deletes a device; a missing one is not an error, so cleanup can
// run any number of times.
func DeleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	var missing netlink.LinkNotFoundError
	if errors.As(err, &missing) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("device %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete device %s: %w", name, err)
	}
	return nil
}

// EnableForwarding turns on IP forwarding in the current namespace: the
// files under /proc/sys/net belong to the namespace of the thread that opens
// them.
func EnableForwarding(ipv4, ipv6 bool) error {
	var files []string
	if ipv4 {
		files = append(files, "/proc/sys/net/ipv4/ip_forward")
	}
	if ipv6 {
		files = append(files, "/proc/sys/net/ipv6/conf/all/forwarding")
	}
	for _, f := range files {
		// Already on (e.g. set by the pod's init container or sysctls): no
		// write, so an unprivileged container with a read-only /proc/sys
		// works.
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w (an unprivileged broker needs it set before it starts: the chart's init container (ipForwarding: initContainer), or the pod's sysctls (ipForwarding: sysctl))", err)
		}
	}
	return nil
}

// EnableDeviceForwarding turns on IPv4 forwarding for packets arriving on
// each device, through rtnetlink (the device's inet configuration, as
// net.ipv4.conf.<dev>.forwarding), which needs only CAP_NET_ADMIN in the
// namespace: no write to /proc/sys, which an unprivileged container sees
// read-only, so neither a privileged init container nor the kubelet's
// unsafe sysctl net.ipv4.ip_forward. The kernel forwards a packet when its
// input device has forwarding on, so the devices a gateway forwards
// between are enough.
func EnableDeviceForwarding(devices ...string) error {
	for _, name := range devices {
		link, err := linkByName(name)
		if err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
		req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(link.Attrs().Index)
		req.AddData(msg)
		spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
		conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(iflaInetConf, nil)
		conf.AddRtAttr(ipv4DevconfForwarding, nl.Uint32Attr(1))
		req.AddData(spec)
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
			return fmt.Errorf("enable forwarding on %s: %w (the broker needs CAP_NET_ADMIN)", name, err)
		}
	}
	return nil
}

// From linux/if_link.h and linux/ip.h: IFLA_INET_CONF inside AF_INET of
// IFLA_AF_SPEC, and the index of forwarding in the IPv4 devconf.
const (
	iflaInetConf          = 1
	ipv4DevconfForwarding = 1
)

// Forwarding reports whether IPv4 forwarding is on for every device of the
// current namespace (net.ipv4.ip_forward).
func Forwarding() (bool, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

func linkByName(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	var missing netlink.LinkNotFoundError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("device %q does not exist", name)
	}
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", name, err)
	}
	return link, nil
}

func addrPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// InterfaceIn is the first interface of list with an address inside p, and
// that address (empty when none has one, or p is invalid): how the broker
// finds its node or pod interface and the router its node interface.
func InterfaceIn(list []net.Interface, p netip.Prefix) (string, netip.Addr) {
	if !p.IsValid() {
		return "", netip.Addr{}
	}
	for _, ifc := range list {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && p.Contains(ip.Unmap()) {
					return ifc.Name, ip.Unmap()
				}
			}
		}
	}
	return "", netip.Addr{}
}
