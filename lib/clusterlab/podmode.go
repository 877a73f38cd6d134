package clusterlab

import (
	"fmt"
	"net/netip"

	"github.com/kubelink/kubelink/lib/nstest"
)

// BrokerPod adds a pod on the gateway node for a broker in pod mode, with
// what a CNI (ptp) and a Service would provide: the pod's subnet is routed to the
// gateway node from the other nodes, pod egress to the internet is
// masqueraded to the node, and the WireGuard port (UDP 8777) and the bridge
// port (TCP 8088) of the node's internet address are forwarded to the pod
// (like a NodePort or LoadBalancer).
func (c *Cluster) BrokerPod() (*nstest.Namespace, netip.Addr) {
	t := c.t
	pod := nstest.New(t, c.Name+"bpod")
	podIP := netip.MustParseAddr(fmt.Sprintf("10.%d.2.2", 100+10*c.Index))
	hostSide := fmt.Sprintf("10.%d.2.1", 100+10*c.Index)
	// Laid out like the CNI ptp plugin: the node side holds the pod's
	// gateway address as /32 and reaches the pod through a scope host
	// route; a router that ignores that (a plain "via pod" route) loses
	// every packet (the kernel then ARPs for the final destination).
	nstest.Veth(t, pod, "eth0", podIP.String()+"/24", c.GW, "vbroker", hostSide+"/32")
	c.GW.Run(t, "ip", "route", "add", podIP.String()+"/32", "dev", "vbroker", "scope", "host")
	pod.Run(t, "ip", "route", "replace", hostSide+"/32", "dev", "eth0", "scope", "link")
	pod.Run(t, "ip", "route", "add", "default", "via", hostSide)
	// As in a pod of a cluster whose nodes do not pass ip_forward on: the
	// broker turns forwarding on for its own devices (pod mode, rtnetlink).
	pod.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	c.Node.Run(t, "ip", "route", "add", fmt.Sprintf("10.%d.2.0/24", 100+10*c.Index), "via", c.GWIP.String())
	c.GW.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", c.PodCIDR.String(), "-o", "inet0", "-j", "MASQUERADE")
	c.GW.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "inet0", "-p", "udp", "--dport", "8777",
		"-j", "DNAT", "--to-destination", podIP.String()+":8777")
	c.GW.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "inet0", "-p", "tcp", "--dport", "8088",
		"-j", "DNAT", "--to-destination", podIP.String()+":8088")
	return pod, podIP
}

// StartBrokerInPod runs a broker in pod mode in the given broker pod.
func (c *Cluster) StartBrokerInPod(lab *Lab, pod *nstest.Namespace, extra ...string) *Process {
	return c.StartBroker(lab, pod, append([]string{"--node-ip", c.GWIP.String(), "--pod-cidr", c.PodCIDR.String()}, extra...)...)
}

// StartRouterOn runs a router on a given node namespace (e.g. the gateway).
func (c *Cluster) StartRouterOn(lab *Lab, node *nstest.Namespace, extra ...string) *Process {
	args := []string{"--kubeconfig", c.Kubeconfig(node), "--node-cidr", NodeCIDR.String(), "--resync", "2s"}
	return Start(c.t, node, "router "+node.Name, lab.Bin+"/kubelink-router", append(args, extra...)...)
}
