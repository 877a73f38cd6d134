package netapply

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// TestLocalChainGuardsTheClusterAddress: in node mode the local cluster
// address is on the gateway node, so without the rule a peer reaches every
// socket listening on all addresses there. With it, the peer opens only
// the port a MeshService binds on the address and the probe responder,
// and the replies to the gateway's own connections (which leave with the
// address) still come back. A second Set writes nothing: the rules are in
// the form iptables lists them.
func TestLocalChainGuardsTheClusterAddress(t *testing.T) {
	g, p := nstest.New(t, "gw"), nstest.New(t, "peer")
	nstest.Veth(t, g, "kubelink", "192.168.0.11/24", p, "eth0", "192.168.0.12/24")
	serve(t, g, "0.0.0.0:2222", "sshd") // a node's own service
	serve(t, g, "0.0.0.0:22", "bound")  // the port a MeshService binds
	serve(t, p, "192.168.0.12:9000", "peer")
	udpEcho(t, g, "0.0.0.0:8778") // the probe responder
	udpEcho(t, g, "0.0.0.0:8779") // a node's own UDP service

	dialUDP := func(ns *nstest.Namespace, to string) error {
		return ns.Do(func() error {
			c, err := net.Dial("udp", to)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			b := make([]byte, 16)
			_, err = c.Read(b)
			return err
		})
	}
	// Without the rule: the node's own service is open to the peer.
	if _, err := dial(p, "192.168.0.11:2222", time.Second); err != nil {
		t.Fatalf("control: the node's port is closed before the rule: %v", err)
	}
	if err := dialUDP(p, "192.168.0.11:8779"); err != nil {
		t.Fatalf("control: the node's UDP port is closed before the rule: %v", err)
	}

	plan := oneMesh(t).Plan(mesh.PlanOptions{Transport: mesh.TransportWireGuard, Device: "kubelink", ProbePort: 8778})
	rs := plan.LocalRules([]*mesh.ServiceBinding{{Key: "default/ssh", Address: netip.MustParseAddr("192.168.0.11"), Ports: []mesh.BoundPort{{Protocol: "tcp", Port: 22}}}})
	c := newChains(t, LocalChains)
	t.Cleanup(func() { _ = g.Do(c.CleanUp) })
	set(t, g, c, rs)

	if reply, err := dial(p, "192.168.0.11:2222", 500*time.Millisecond); err == nil {
		t.Errorf("the peer reached the node's own port 2222 on the cluster address (reply %q)", reply)
	}
	if reply, err := dial(p, "192.168.0.11:22", 2*time.Second); err != nil || reply != "bound" {
		t.Errorf("the MeshService port on the cluster address: reply %q, %v", reply, err)
	}
	if err := dialUDP(p, "192.168.0.11:8778"); err != nil {
		t.Errorf("the probe responder on the cluster address: %v", err)
	}
	if err := dialUDP(p, "192.168.0.11:8779"); err == nil {
		t.Error("the node's own UDP port on the cluster address answered the peer")
	}
	// The gateway's own connection from the cluster address: its replies
	// are tracked and pass.
	if reply, err := dialFrom(g, "192.168.0.11", "192.168.0.12:9000", 2*time.Second); err != nil || reply != "peer" {
		t.Errorf("the gateway's own connection to the peer: reply %q, %v", reply, err)
	}

	before := c.rewrites
	set(t, g, c, rs)
	if c.rewrites != before {
		t.Errorf("a second Set of the same rules wrote %d chains; the rendering differs from iptables' listing", c.rewrites-before)
	}

	do(t, g, c.CleanUp)
	if _, err := dial(p, "192.168.0.11:2222", time.Second); err != nil {
		t.Errorf("after CleanUp the port is still closed: %v", err)
	}
}

// udpEcho answers every datagram on addr inside ns with its payload.
func udpEcho(t *testing.T, ns *nstest.Namespace, addr string) {
	t.Helper()
	var pc net.PacketConn
	do(t, ns, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(b[:n], from)
		}
	}()
}
