package mesh

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// verdictOf runs a packet through a RuleSet the way the kernel walks our
// chains (only -s, -d, -j RETURN/DROP/<chain> are used by FirewallRules) and
// reports whether it is dropped.
func droppedBy(t *testing.T, rs RuleSet, src, dst string) bool {
	t.Helper()
	chains := map[string][][]string{}
	for _, c := range rs.Chains {
		chains[c.Name] = c.Rules
	}
	var walk func(name string, depth int) (drop, done bool)
	walk = func(name string, depth int) (bool, bool) {
		if depth > 5 {
			t.Fatalf("chain loop at %s", name)
		}
		for _, r := range chains[name] {
			match, target := true, ""
			for i := 0; i < len(r); i += 2 {
				switch r[i] {
				case "-s":
					match = match && netip.MustParsePrefix(r[i+1]).Contains(addr(src))
				case "-d":
					match = match && netip.MustParsePrefix(r[i+1]).Contains(addr(dst))
				case "-j":
					target = r[i+1]
				case "-p", "-m", "--dport", "--sport":
					match = false // the test packets are not the UDP health probe
				default:
					t.Fatalf("unexpected rule option %q", r[i])
				}
			}
			if !match {
				continue
			}
			switch target {
			case "DROP":
				return true, true
			case "RETURN":
				return false, true
			default:
				if drop, done := walk(target, depth+1); done && drop {
					return true, true
				}
			}
		}
		return false, false
	}
	if len(rs.Hooks) == 0 {
		return false
	}
	drop, _ := walk(ChainFirewall, 0)
	return drop
}

func TestFirewallAllowListRestrictsAndDenyDrops(t *testing.T) {
	b := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)
	b.Spec.Ingress = []string{"100.64.0.0/20", "192.168.0.11", "!100.64.0.10"}
	c := peer("c", "192.168.0.13/24", "100.64.32.0/20", "c.org", keyC)
	open := peer("d", "192.168.0.14/24", "100.64.48.0/20", "d.org", "Yy9nYWhHZmVkY2JhMDEyMzQ1Njc4OWFiY2RlZmdoaWo=")
	m := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), b, c, open}, wgOpts)
	if v := m.Verdicts["d"]; !v.Accepted() {
		t.Fatalf("d: %+v", v)
	}
	rs := m.FirewallRules("kubelink", 8779)
	if first := rs.Chains[1].Rules[0]; strings.Join(first, " ") != "-d 192.168.0.11/32 -p udp -m udp --dport 8779 -j RETURN" {
		t.Errorf("first rule of a link chain = %v, want the health-probe exemption", first)
	}
	if len(rs.Hooks) != 1 || rs.Hooks[0].Table != "mangle" || rs.Hooks[0].Rule[1] != "kubelink" {
		t.Fatalf("hooks = %+v", rs.Hooks)
	}
	tests := []struct {
		src, dst string
		drop     bool
		why      string
	}{
		{"192.168.0.12", "100.64.0.20", false, "allowed service CIDR"},
		{"192.168.0.12", "192.168.0.11", false, "allowed cluster address"},
		{"192.168.0.12", "100.64.0.10", true, "denied inside the allowed range"},
		{"192.168.0.12", "10.0.0.1", true, "not in the allow list (the original bridge let this pass)"},
		{"192.168.0.12", "192.168.0.100", true, "mesh service address not allowed for b"},
		{"100.64.16.7", "10.0.0.1", true, "b's service network as source is b's traffic too"},
		{"192.168.0.12", "100.64.32.5", false, "transit to member c is c's business"},
		{"192.168.0.13", "10.0.0.1", false, "c has no ingress rule"},
		{"192.168.0.14", "10.0.0.1", false, "d has no ingress rule"},
	}
	for _, tt := range tests {
		if got := droppedBy(t, rs, tt.src, tt.dst); got != tt.drop {
			t.Errorf("%s -> %s dropped=%v, want %v (%s)", tt.src, tt.dst, got, tt.drop, tt.why)
		}
	}
}

func TestFirewallMeshWideRuleOnLocalLink(t *testing.T) {
	a := local("a", "192.168.0.11/24", "100.64.0.0/20")
	a.Spec.Ingress = []string{"100.64.0.0/20", "!100.64.0.1"}
	b := peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB)
	c := peer("c", "192.168.0.13/24", "100.64.32.0/20", "c.org", keyC)
	c.Spec.Ingress = []string{"192.168.0.11", "!100.64.0.5"} // own allow list replaces the mesh one
	rs := Build([]v1alpha1.KubeLink{a, b, c}, wgOpts).FirewallRules("kubelink", 8779)
	tests := []struct {
		src, dst string
		drop     bool
	}{
		{"192.168.0.12", "100.64.0.20", false},
		{"192.168.0.12", "100.64.0.1", true},
		{"192.168.0.12", "192.168.0.11", true},
		{"192.168.0.13", "192.168.0.11", false},
		{"192.168.0.13", "100.64.0.20", true},
		{"192.168.0.13", "100.64.0.1", true}, // mesh-wide deny still applies
	}
	for _, tt := range tests {
		if got := droppedBy(t, rs, tt.src, tt.dst); got != tt.drop {
			t.Errorf("%s -> %s dropped=%v, want %v", tt.src, tt.dst, got, tt.drop)
		}
	}
}

func TestNoIngressMeansNoFirewallChains(t *testing.T) {
	rs := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", ""), peer("b", "192.168.0.12/24", "", "b.org", keyB)}, wgOpts).FirewallRules("kubelink", 8779)
	if len(rs.Hooks) != 0 || len(rs.Chains) != 0 {
		t.Errorf("got %+v, want an empty rule set", rs)
	}
}

func TestIngressAllows(t *testing.T) {
	in := Ingress{Allow: pfxs("100.64.0.0/20"), Deny: pfxs("100.64.0.1/32")}
	for dst, want := range map[string]bool{"100.64.0.2": true, "100.64.0.1": false, "10.0.0.1": false} {
		if got := in.Allows(addr(dst)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", dst, got, want)
		}
	}
	if !(Ingress{}).Allows(addr("10.0.0.1")) {
		t.Error("an empty ingress must allow everything")
	}
}
