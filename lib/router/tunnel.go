package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelink/kubelink/lib/netapply"
)

// Tunnel device names and parameters. Every node derives the tunnel MAC of
// any other node from that node's IP, so no coordination is needed to reach
// the gateway through VXLAN.
const (
	VXLANDevice = "kubelink-vx"
	VXLANID     = 7477
	VXLANPort   = 4790
	IPIPDevice  = "kubelink-ipip"
)

// tunnel carries node -> gateway traffic for networks that drop forwarded
// packets (e.g. cloud source/destination checks): the packet the network
// sees is addressed to the gateway node itself.
type tunnel interface {
	// ensure creates the device (idempotent) and prepares reaching gateway;
	// it returns the device to route through.
	ensure(gateway netip.Addr) (string, error)
	cleanup() error
}

// tunnelMAC is the VXLAN MAC of the node with IP ip: locally administered,
// unicast, the IPv4 address in the last four bytes.
func tunnelMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x0a, 0x6b, b[0], b[1], b[2], b[3]}
}

// vxlanLink is the desired VXLAN device of a node (pure, for tests).
func vxlanLink(nodeIP netip.Addr, parent netlink.Link) *netlink.Vxlan {
	mtu := parent.Attrs().MTU - 50 // outer IPv4 + UDP + VXLAN + inner Ethernet
	return &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: VXLANDevice, MTU: mtu, HardwareAddr: tunnelMAC(nodeIP)},
		VxlanId:      VXLANID,
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      nodeIP.AsSlice(),
		Port:         VXLANPort,
		Learning:     false,
	}
}

type vxlanTunnel struct {
	nodeIP netip.Addr
	parent string
}

func (v *vxlanTunnel) ensure(gateway netip.Addr) (string, error) {
	parent, err := netlink.LinkByName(v.parent)
	if err != nil {
		return "", fmt.Errorf("vxlan: node interface %s: %w", v.parent, err)
	}
	want := vxlanLink(v.nodeIP, parent)
	link, err := netlink.LinkByName(VXLANDevice)
	if err == nil {
		if _, ok := link.(*netlink.Vxlan); !ok {
			return "", fmt.Errorf("vxlan: a %s device named %s exists and is not ours", link.Type(), VXLANDevice)
		}
	} else {
		if err := netlink.LinkAdd(want); err != nil {
			return "", fmt.Errorf("vxlan: creating %s: %w", VXLANDevice, err)
		}
		if link, err = netlink.LinkByName(VXLANDevice); err != nil {
			return "", err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("vxlan: %w", err)
	}
	if err := prepareReceive(link, v.nodeIP); err != nil {
		return "", fmt.Errorf("vxlan: %w", err)
	}
	if !gateway.IsValid() || gateway == v.nodeIP {
		return VXLANDevice, nil
	}
	mac := tunnelMAC(gateway)
	idx := link.Attrs().Index
	// The gateway's tunnel MAC is reached at the gateway's node IP ...
	fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: gateway.AsSlice(), HardwareAddr: mac}
	if err := netlink.NeighSet(fdb); err != nil {
		return "", fmt.Errorf("vxlan: forwarding entry for %s: %w", gateway, err)
	}
	// ... and the gateway's IP resolves to that MAC on the tunnel.
	neigh := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gateway.AsSlice(), HardwareAddr: mac}
	if err := netlink.NeighSet(neigh); err != nil {
		return "", fmt.Errorf("vxlan: neighbour %s: %w", gateway, err)
	}
	return VXLANDevice, nil
}

func (v *vxlanTunnel) cleanup() error { return netapply.DeleteLink(VXLANDevice) }

// ipipLink is the desired IP-in-IP device of a node (pure, for tests): it
// sends from the node IP and accepts from any remote, so the same device
// serves the gateway and the other nodes.
func ipipLink(nodeIP netip.Addr, parent netlink.Link) *netlink.Iptun {
	return &netlink.Iptun{
		LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice, MTU: parent.Attrs().MTU - 20},
		Local:     nodeIP.AsSlice(),
		Link:      uint32(parent.Attrs().Index),
		PMtuDisc:  1,
	}
}

type ipipTunnel struct {
	nodeIP netip.Addr
	parent string
}

func (t *ipipTunnel) ensure(netip.Addr) (string, error) {
	parent, err := netlink.LinkByName(t.parent)
	if err != nil {
		return "", fmt.Errorf("ipip: node interface %s: %w", t.parent, err)
	}
	link, err := netlink.LinkByName(IPIPDevice)
	if err != nil {
		if err := netlink.LinkAdd(ipipLink(t.nodeIP, parent)); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) {
				return "", fmt.Errorf("ipip: the kernel has no ipip module (%w); use --tunnel=vxlan", err)
			}
			return "", fmt.Errorf("ipip: creating %s: %w", IPIPDevice, err)
		}
		if link, err = netlink.LinkByName(IPIPDevice); err != nil {
			return "", err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", err
	}
	if err := prepareReceive(link, t.nodeIP); err != nil {
		return "", fmt.Errorf("ipip: %w", err)
	}
	return IPIPDevice, nil
}

func (t *ipipTunnel) cleanup() error { return netapply.DeleteLink(IPIPDevice) }

// prepareReceive lets the gateway accept decapsulated packets: they come in
// on the tunnel while the route back to their source leaves on the node
// interface. The kernel's reverse-path check rejects packets on a device
// without IPv4 address whenever rp_filter is on, so the device gets the node
// IP/32 (as the original did for tunl0), and loose mode.
func prepareReceive(link netlink.Link, nodeIP netip.Addr) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(32, 32)}, Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s/32: %w", nodeIP, err)
	}
	path := "/proc/sys/net/ipv4/conf/" + link.Attrs().Name + "/rp_filter"
	if err := os.WriteFile(path, []byte("2"), 0o644); err != nil {
		return fmt.Errorf("loose reverse-path filter: %w", err)
	}
	return nil
}
