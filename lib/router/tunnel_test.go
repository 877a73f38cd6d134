package router

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestTunnelMACIsDerivedFromTheNodeIP(t *testing.T) {
	got := tunnelMAC(netip.MustParseAddr("10.10.0.1")).String()
	if got != "0a:6b:0a:0a:00:01" {
		t.Errorf("tunnelMAC = %s", got)
	}
	mac := tunnelMAC(netip.MustParseAddr("192.168.7.9"))
	if mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Errorf("%s must be unicast and locally administered", mac)
	}
}

func TestTunnelDeviceConfiguration(t *testing.T) {
	parent := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: 7, MTU: 1500}}
	node := netip.MustParseAddr("10.10.0.3")

	vx := vxlanLink(node, parent)
	if vx.Name != VXLANDevice || vx.VxlanId != VXLANID || vx.Port != VXLANPort || vx.VtepDevIndex != 7 || vx.Learning {
		t.Errorf("vxlan = %+v", vx)
	}
	if vx.MTU != 1450 || !vx.SrcAddr.Equal(net.ParseIP("10.10.0.3")) || vx.HardwareAddr.String() != tunnelMAC(node).String() {
		t.Errorf("vxlan MTU %d, source %s, MAC %s", vx.MTU, vx.SrcAddr, vx.HardwareAddr)
	}

	ip := ipipLink(node, parent)
	if ip.Name != IPIPDevice || ip.MTU != 1480 || !ip.Local.Equal(net.ParseIP("10.10.0.3")) || ip.Remote != nil || ip.Link != 7 || ip.PMtuDisc != 1 {
		t.Errorf("ipip = %+v (must accept from any remote, send from the node IP)", ip)
	}
}
