package mesh

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// TestLocalRulesOpenOnlyProbeMeshServicesAndNamedAllows: the local cluster
// address admits tracked connections, the probe, the MCS exchange, the ports a MeshService
// binds on it and the links whose allow list names it; the rest to it is
// dropped. Another mesh's address gets its own rules; a plan without peers
// has none.
func TestLocalRulesOpenOnlyProbeMeshServicesAndNamedAllows(t *testing.T) {
	b := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)
	c := peer("c", "192.168.0.13/24", "100.64.32.0/20", "c.org", keyC)
	c.Spec.Ingress = []string{"100.64.0.0/20", "192.168.0.11"} // names the address
	m := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), b, c}, wgOpts)
	plan := m.Plan(PlanOptions{Transport: TransportWireGuard, Device: "kubelink", ProbePort: 8778, MCSPort: 8779})
	bindings := []*ServiceBinding{
		{Key: "default/ssh", Address: netip.MustParseAddr("192.168.0.11"), Ports: []BoundPort{{Protocol: "tcp", Port: 22}, {Protocol: "udp", Port: 53}}},
		{Key: "default/web", Address: netip.MustParseAddr("192.168.0.100"), Ports: []BoundPort{{Protocol: "tcp", Port: 80}}},
	}
	got := plan.LocalRules(bindings)
	want := RuleSet{
		Hooks: []Hook{{Table: "mangle", Chain: "PREROUTING", Rule: []string{"-i", "kubelink", "-m", "comment", "--comment", "kubelink cluster address", "-j", ChainLocal}}},
		Chains: []Chain{{Table: "mangle", Name: ChainLocal, Rules: [][]string{
			{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"},
			{"-d", "192.168.0.11/32", "-p", "udp", "-m", "udp", "--dport", "8778", "-j", "RETURN"},
			{"-d", "192.168.0.11/32", "-p", "tcp", "-m", "tcp", "--dport", "8779", "-j", "RETURN"},
			{"-d", "192.168.0.11/32", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "RETURN"},
			{"-d", "192.168.0.11/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "RETURN"},
			{"-s", "192.168.0.13/32", "-d", "192.168.0.11/32", "-j", "RETURN"},
			{"-s", "100.64.32.0/20", "-d", "192.168.0.11/32", "-j", "RETURN"},
			{"-d", "192.168.0.11/32", "-j", "DROP"},
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("one mesh:\n got %+v\nwant %+v", got, want)
	}

	// A deny of the address wins over an allow that names it.
	c.Spec.Ingress = []string{"192.168.0.11", "!192.168.0.11"}
	m = Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), b, c}, wgOpts)
	rs := m.Plan(PlanOptions{Transport: TransportBridge, Device: "kubelink"}).LocalRules(nil)
	for _, r := range rs.Chains[0].Rules {
		if r[0] == "-s" || r[0] == "-d" && r[2] == "-p" {
			t.Errorf("rule %v: nothing but tracked traffic may pass (no probe port, no binding, the allow denied)", r)
		}
	}

	// A network holding the address (the mesh CIDR, 0.0.0.0/0) does not
	// open it: only the host address itself does.
	c.Spec.Ingress = []string{"192.168.0.0/24", "0.0.0.0/0"}
	m = Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), b, c}, wgOpts)
	for _, r := range m.Plan(PlanOptions{Transport: TransportWireGuard, Device: "kubelink"}).LocalRules(nil).Chains[0].Rules {
		if r[0] == "-s" {
			t.Errorf("rule %v: an allow list naming a network holding the address opened it", r)
		}
	}

	// Two meshes: each local address is guarded.
	two := Build(twoMeshes(), wgOpts).Plan(PlanOptions{Transport: TransportWireGuard, Device: "kubelink"}).LocalRules(nil)
	drops := map[string]bool{}
	for _, r := range two.Chains[0].Rules {
		if r[len(r)-1] == "DROP" {
			drops[r[1]] = true
		}
	}
	if !drops["192.168.0.11/32"] || !drops["10.200.0.1/32"] || len(drops) != 2 {
		t.Errorf("two meshes: drops to %v, want both local addresses", drops)
	}

	if rs := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "")}, wgOpts).Plan(PlanOptions{Device: "kubelink"}).LocalRules(nil); len(rs.Chains)+len(rs.Hooks) != 0 {
		t.Errorf("no peers: %+v, want empty rule set (cleanup)", rs)
	}
}
