package clusterlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// A peer whose certificate comes from another CA never gets a link Up: A
// says why in the link status and counts B's rejected dials; once B gets a
// certificate from the mesh CA (swapped in place, no restart), the link
// comes Up, which shows the CA was the only thing in the way.
func TestBridgeRejectsAPeerOfAnotherCA(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca, other := NewBridgeCA(t), NewBridgeCA(t)
	aCerts := ca.CertDir(t, a)
	bCerts := filepath.Join(t.TempDir(), "certs-b")
	other.WriteCerts(t, bCerts, b) // B trusts and presents the other CA
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, BridgeFlags(aCerts)...)
	b.StartBroker(lab, b.GW, BridgeFlags(bCerts)...)
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))

	// A dialing B: B's certificate does not verify against A's CA.
	var kl *v1alpha1.KubeLink
	waitFor(t, "A's link to B Idle with the certificate error", 8*time.Second, func() bool {
		var err error
		kl, err = a.Link("b")
		return err == nil && kl.Status.State == v1alpha1.StateIdle && strings.Contains(kl.Status.Message, "certificate signed by unknown authority")
	})
	t.Logf("A's link b: %s: %s", kl.Status.State, kl.Status.Message)
	// B dialing A: A refuses B's client certificate and counts it.
	n := WaitMetric(t, a.GW, "kubelink_bridge_rejected_handshakes_total", 5*time.Second, func(v float64) bool { return v > 0 })
	t.Logf("A rejected %v handshakes from B", n)
	// Nothing gets through, for a while.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if kl, err := a.Link("b"); err == nil && kl.Status.State == v1alpha1.StateUp {
			t.Fatalf("A's link to B is Up with B's certificate from another CA")
		}
		if kl, err := b.Link("a"); err == nil && kl.Status.State == v1alpha1.StateUp {
			t.Fatalf("B's link to A is Up with B's certificate from another CA")
		}
		if _, err := Get(a.Pod, b.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("A reached B's service through a bridge with a foreign certificate")
		}
	}
	if v, ok := Metric(a.GW, `kubelink_bridge_rx_bytes_total{link="b"}`); !ok || v != 0 {
		t.Errorf("A received %v bytes (present %v) from B", v, ok)
	}

	fixed := time.Now()
	ca.WriteCerts(t, bCerts, b)
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	t.Logf("with a certificate of the mesh CA, the link is Up %s after the swap", time.Since(fixed).Round(time.Millisecond))
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
}

// Identity is per cluster, not "anyone the CA signed": B presents a
// certificate of the mesh CA with B's own host name (CN and IP SAN) but the
// identity of another member (kubelink://default/c). A's link to B pins
// kubelink://default/b, so A neither accepts B's server certificate nor B's
// dials, counts the rejections, and nothing passes. With its own identity B
// comes Up — the identity was the only thing in the way. Then A's trust
// changes (a new CA): the established connection, whose peer no longer
// verifies, is closed at once instead of living on under the old trust.
func TestBridgeIdentityIsPerCluster(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := NewBridgeCA(t)
	aCerts := ca.CertDir(t, a)
	bCerts := filepath.Join(t.TempDir(), "certs-b")
	ca.WriteCertsAs(t, bCerts, b, mesh.Identity("", "c"))
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, BridgeFlags(aCerts)...)
	b.StartBroker(lab, b.GW, BridgeFlags(bCerts)...)
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))

	var kl *v1alpha1.KubeLink
	waitFor(t, "A's link to B Idle with the identity error", 8*time.Second, func() bool {
		var err error
		kl, err = a.Link("b")
		return err == nil && kl.Status.State == v1alpha1.StateIdle && strings.Contains(kl.Status.Message, "wrong peer identity") &&
			strings.Contains(kl.Status.Message, "kubelink://default/b")
	})
	t.Logf("A's link b: %s: %s", kl.Status.State, kl.Status.Message)
	n := WaitMetric(t, a.GW, "kubelink_bridge_rejected_handshakes_total", 5*time.Second, func(v float64) bool { return v > 0 })
	t.Logf("A rejected %v handshakes from the impostor", n)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if kl, err := a.Link("b"); err == nil && kl.Status.State == v1alpha1.StateUp {
			t.Fatal("A's link to B is Up with a certificate naming another member")
		}
		if _, err := Get(a.Pod, b.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("A reached B's service through a bridge whose peer named another member")
		}
	}
	if v, ok := Metric(a.GW, `kubelink_bridge_rx_bytes_total{link="b"}`); !ok || v != 0 {
		t.Errorf("A received %v bytes (present %v) from the impostor", v, ok)
	}

	ca.WriteCerts(t, bCerts, b)
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)

	// A's trust changes: a new CA (and A's certificate from it). B's
	// certificate no longer verifies at A.
	NewBridgeCA(t).WriteCerts(t, aCerts, a)
	WaitMetric(t, a.GW, "kubelink_bridge_untrusted_connections_total", 5*time.Second, func(v float64) bool { return v > 0 })
	waitFor(t, "A's link to B to leave Up", 5*time.Second, func() bool {
		kl, err := a.Link("b")
		return err == nil && kl.Status.State != v1alpha1.StateUp
	})
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := Get(a.Pod, b.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("traffic still flows over a connection whose peer A no longer trusts")
		}
	}
}

// A member whose certificate the mesh authority revoked (on the list
// certwatch writes next to the certificates) is cut off as soon as the list
// arrives: its established connection is closed, it can connect again from
// neither side, and no traffic passes while it is listed; with a new
// certificate (registered again), it comes back. The revoked certificate is
// signed by the mesh CA and valid throughout: only the list keeps it out.
func TestBridgeRevokedMemberIsCutOff(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := NewBridgeCA(t)
	aCerts := ca.CertDir(t, a)
	bCerts := filepath.Join(t.TempDir(), "certs-b")
	bSerial := ca.WriteCerts(t, bCerts, b)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, BridgeFlags(aCerts)...)
	b.StartBroker(lab, b.GW, BridgeFlags(bCerts)...)
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)

	// A's list names B's certificate (and another).
	WriteRevoked(t, aCerts, "ff 2030-01-01T00:00:00Z kubelink://default/z", bSerial+" 2030-01-01T00:00:00Z kubelink://default/b,kubelink://lab/b")
	start := time.Now()
	WaitMetric(t, a.GW, "kubelink_bridge_untrusted_connections_total", 5*time.Second, func(v float64) bool { return v > 0 })
	waitFor(t, "A's link to B to leave Up", 5*time.Second, func() bool {
		kl, err := a.Link("b")
		return err == nil && kl.Status.State != v1alpha1.StateUp
	})
	t.Logf("A closed the connection of the revoked member after %s", time.Since(start).Round(time.Millisecond))
	// Over 6 s (several redials of both sides): never Up, nothing
	// through either way.
	sawReason := false
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); {
		kl, err := a.Link("b")
		if err == nil && kl.Status.State == v1alpha1.StateUp {
			t.Fatal("A's link to a revoked member is Up again")
		}
		if err == nil && strings.Contains(kl.Status.Message, "revoked") {
			sawReason = true
		}
		if _, err := Get(a.Pod, b.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("A reached B's service after B was revoked")
		}
		if _, err := Get(b.Pod, a.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("B reached A's service after A revoked it")
		}
	}
	if !sawReason {
		t.Error("A's link status never named the revocation")
	}
	kl, _ := a.Link("b")
	t.Logf("A's link b while B is revoked: %s: %s", kl.Status.State, kl.Status.Message)

	// Registered again, B gets a new certificate (the old one stays on
	// the list): back in.
	ca.WriteCerts(t, bCerts, b)
	a.WaitState("b", v1alpha1.StateUp, 15*time.Second)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
}

// In bridge mode the receiving side enforces, in user space, that a peer
// only uses its own source addresses (anti-spoofing) and only reaches what
// the link's ingress allows (allow list and "!" entries), and counts the
// drops; the health probe still passes.
func TestBridgeAntiSpoofingAndIngress(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// A second ClusterIP in A, to deny while the first stays allowed.
	for _, ns := range []*nstest.Namespace{a.GW, a.Node} {
		ns.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", "100.64.0.21", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", a.PodIP.String()+":8080")
	}
	ca := NewBridgeCA(t)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, BridgeFlags(ca.CertDir(t, a))...)
	b.StartBroker(lab, b.GW, BridgeFlags(ca.CertDir(t, b))...)
	a.Apply(a.LocalLink(), BridgeLinkTo(b))
	b.Apply(b.LocalLink(), BridgeLinkTo(a))
	WaitGet(t, b.Pod, a.ServiceIP, 10*time.Second)
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)

	t.Run("spoofed source dropped and counted", func(t *testing.T) {
		// B's gateway injects UDP to A's cluster address, from an address
		// that is not B's (untracked, so B's SNAT leaves it alone), then
		// from its own cluster address as the control.
		spoofed := netip.MustParseAddr("10.99.0.1")
		target := netip.AddrPortFrom(a.MeshAddress.Addr(), 7777)
		before, _ := Metric(a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="spoofed"}`)
		const n = 20
		if got := injectSpoofed(t, b, a, spoofed, target, n); len(got) != 1 || got[0] != "control" {
			t.Fatalf("A received %q; want only the control datagram (0 spoofed delivered)", got)
		}
		after := WaitMetric(t, a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="spoofed"}`, 3*time.Second,
			func(v float64) bool { return v >= before+n })
		t.Logf("0 of %d spoofed datagrams delivered, the control was; spoofed drops %v -> %v", n, before, after)
	})

	t.Run("ingress allow list and deny entries", func(t *testing.T) {
		// Without rules B reaches both ClusterIPs. A's cluster address is
		// closed but for the probe and MeshService ports (the gateway's own
		// sockets are not the mesh's): dropped, where it was refused.
		for addr, want := range map[string]string{"100.64.0.20:80": "ok", "100.64.0.21:80": "ok", "192.168.0.11:80": "dropped"} {
			if got := dialResult(b.Pod, addr); got != want {
				t.Fatalf("before the rules, B -> %s: %s, want %s", addr, got, want)
			}
		}
		before, _ := Metric(a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="ingress-denied"}`)
		updateLink(t, a, "b", func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = []string{"100.64.0.0/20", "!100.64.0.21"} })
		waitFor(t, "the denied ClusterIP to be dropped", 5*time.Second, func() bool { return dialResult(b.Pod, "100.64.0.21:80") == "dropped" })
		for addr, want := range map[string]string{"100.64.0.20:80": "ok", "192.168.0.11:80": "dropped"} {
			if got := dialResult(b.Pod, addr); got != want {
				t.Errorf("B -> %s: %s, want %s", addr, got, want)
			}
		}
		// The probe passes: both links stay Up all through a window well
		// past the probe timeout.
		holdsFor(t, "links a→b and b→a Up under the ingress rules", 2*time.Second, func() bool {
			return linkIs(a, "b", v1alpha1.StateUp) && linkIs(b, "a", v1alpha1.StateUp)
		})
		after := WaitMetric(t, a.GW, `kubelink_bridge_dropped_packets_total{link="b",reason="ingress-denied"}`, 3*time.Second,
			func(v float64) bool { return v > before })
		fw := WaitMetric(t, a.GW, `kubelink_firewall_dropped_packets{link="b"}`, 5*time.Second, func(v float64) bool { return v > 0 })
		t.Logf("ingress-denied drops %v -> %v, kubelink_firewall_dropped_packets %v", before, after, fw)
		// Note: this allow list leaves out A's cluster address, so the
		// replies to A's own (SNATed) connections to B are dropped too; the
		// check is stateless, as the kernel rules in WireGuard mode are.
	})
}

// injectSpoofed has from's gateway send n UDP datagrams to target from
// spoofed (an address it adds and leaves untracked, so its SNAT leaves the
// source alone), then one "control" from its own cluster address, and
// returns what arrives at target in to's gateway up to the control.
func injectSpoofed(t *testing.T, from, to *Cluster, spoofed netip.Addr, target netip.AddrPort, n int) []string {
	t.Helper()
	// The target is on to's cluster address, which admits nothing new but
	// the probe and MeshService ports (KUBELINK-LOCAL). For as long as the
	// datagrams fly, to's mesh-wide allow list names the address, which
	// opens it to every member: so only the source check under test can
	// keep a spoofed datagram out, whichever member's source it carries.
	local := to.MeshAddress.Addr()
	updateLink(t, to, to.Name, func(kl *v1alpha1.KubeLink) {
		// (not the mesh CIDR: the allow list is merged, and the address
		// would be named only as part of it)
		kl.Spec.Ingress = []string{to.ServiceCIDR.String(), local.String() + "/32"}
	})
	opened := func() bool {
		return strings.Contains(to.GW.Run(t, "iptables", "-t", "mangle", "-S", mesh.ChainLocal), "-d "+local.String()+"/32 -j RETURN")
	}
	waitFor(t, "the cluster address to be opened to the members", 5*time.Second, opened)
	defer func() {
		updateLink(t, to, to.Name, func(kl *v1alpha1.KubeLink) { kl.Spec.Ingress = nil })
		waitFor(t, "the cluster address to be closed again", 5*time.Second, func() bool { return !opened() })
	}()
	from.GW.Run(t, "ip", "addr", "add", spoofed.String()+"/32", "dev", "lo")
	from.GW.Run(t, "iptables", "-t", "raw", "-A", "OUTPUT", "-s", spoofed.String(), "-j", "NOTRACK")
	var pc net.PacketConn
	must(t, to.GW.Do(func() (err error) { pc, err = net.ListenPacket("udp4", target.String()); return }))
	defer pc.Close()
	for i := range n {
		from.GW.SendRawUDP(t, spoofed, target, fmt.Sprintf("spoofed %d", i))
	}
	from.GW.SendRawUDP(t, from.MeshAddress.Addr(), target, "control")
	var got []string
	buf := make([]byte, 2048)
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:k]))
		if string(buf[:k]) == "control" {
			return got
		}
	}
}

// --auto-connect: A has no link to B; B dials A with a certificate of the
// mesh CA, and A proposes the KubeLink from B's HELLO. The proposal routes
// nothing and stays Stale until an admin approves it; then it connects and
// the link comes Up with traffic both ways.
func TestBridgeAutoConnect(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := NewBridgeCA(t)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, append(BridgeFlags(ca.CertDir(t, a)), "--auto-connect")...)
	b.StartBroker(lab, b.GW, BridgeFlags(ca.CertDir(t, b))...)
	applied := time.Now()
	a.Apply(a.LocalLink())
	b.Apply(b.LocalLink(), BridgeLinkTo(a))

	name := "b" // from the identity in B's certificate, kubelink://default/b
	var kl *v1alpha1.KubeLink
	waitFor(t, "A to create a KubeLink from B's HELLO", 10*time.Second, func() bool {
		var err error
		kl, err = a.Link(name)
		return err == nil
	})
	if kl.Spec.ClusterAddress != b.MeshAddress.String() || kl.Spec.CIDR != b.ServiceCIDR.String() || kl.Spec.Endpoint != b.InetIP.String()+":8088" ||
		kl.Annotations["kubelink.mandelsoft.org/auto-connected"] != b.InetIP.String()+",kubelink://default/b,kubelink://lab/b" {
		t.Errorf("auto-connected link %+v %v", kl.Spec, kl.Annotations)
	}
	_, pending := a.WaitState(name, v1alpha1.StateStale, 5*time.Second)
	if !strings.Contains(pending.Status.Message, "not approved") {
		t.Errorf("the proposal says %q, want that it waits for approval", pending.Status.Message)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := Get(a.Pod, b.ServiceIP, "/", 300*time.Millisecond); err == nil {
			t.Fatal("A reached B through a link that was only proposed")
		}
		if kl, err := a.Link(name); err == nil && kl.Status.State != v1alpha1.StateStale {
			t.Fatalf("the unapproved proposal went %s", kl.Status.State)
		}
	}
	approved := time.Now()
	updateLink(t, a, name, func(kl *v1alpha1.KubeLink) { kl.Annotations[v1alpha1.AnnotationApproved] = "true" })
	up, _ := a.WaitState(name, v1alpha1.StateUp, 10*time.Second)
	t.Logf("A proposed %s %s after the apply; approved, it was Up %s later", name, approved.Sub(applied).Round(time.Millisecond), up.Round(time.Millisecond))
	b.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	if body, _ := WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second); !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q", body)
	}
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.KubeLinkList
	must(t, a.Kube.List(ctx, &list))
	if len(list.Items) != 2 {
		t.Errorf("A has %d KubeLinks, want its LocalLink and one auto-connected", len(list.Items))
	}
}
