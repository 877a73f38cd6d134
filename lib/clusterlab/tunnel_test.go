package clusterlab

import (
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/router"
)

// On a node network that drops forwarded traffic (as cloud source and
// destination checks do), --tunnel=vxlan still gets pods to the gateway:
// what the network sees is addressed to the gateway node itself.
func TestRouterVXLANTunnelToTheGateway(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A's gateway accepts on its node interface only packets addressed to it.
	a.GW.Run(t, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "eth0", "!", "-d", a.GWIP.String(), "-j", "DROP")

	a.StartRouter(lab, "--tunnel", "vxlan")
	Start(t, a.GW, "router on the gateway", lab.Bin+"/kubelink-router", "--kubeconfig", a.Kubeconfig(a.GW),
		"--node-cidr", NodeCIDR.String(), "--tunnel", "vxlan", "--resync", "2s")
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)
	Connect(a, b)
	WaitGet(t, a.Pod, b.ServiceIP, 8*time.Second)
	routes := a.Node.Run(t, "ip", "route")
	if !strings.Contains(routes, "100.64.16.0/20 via 10.10.0.1 dev "+router.VXLANDevice) || !strings.Contains(routes, "onlink") {
		t.Errorf("worker routes do not use the tunnel:\n%s", routes)
	}

	// Control: the same traffic routed plainly is dropped by the network.
	a.Node.Run(t, "ip", "route", "add", b.ServiceIP.Addr().String()+"/32", "via", a.GWIP.String(), "dev", "eth0")
	if _, err := Get(a.Pod, b.ServiceIP, "/", 700*time.Millisecond); err == nil {
		t.Fatal("plain routing worked: the drop rule does not emulate the network, the test proves nothing")
	}
	a.Node.Run(t, "ip", "route", "del", b.ServiceIP.Addr().String()+"/32")
	WaitGet(t, a.Pod, b.ServiceIP, 3*time.Second)
}
