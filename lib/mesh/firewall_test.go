package mesh

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// droppedBy runs a TCP packet (no UDP ports) through the chains.
func droppedBy(t *testing.T, rs RuleSet, src, dst string) bool {
	t.Helper()
	return iptablesDrops(t, rs, Packet{Src: addr(src), Dst: addr(dst)})
}

// iptablesDrops runs a packet through a RuleSet the way the kernel walks our
// mangle chains — FirewallRules uses only -s, -d, -p udp -m udp with
// --sport/--dport, -j RETURN/DROP/<chain> and -g <chain> — and reports whether it is
// dropped. An unknown option fails the test, so the interpreter cannot
// silently drift from the renderer.
func iptablesDrops(t *testing.T, rs RuleSet, p Packet) bool {
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
			match, target, gotoChain := true, "", false
			for i := 0; i < len(r); i += 2 {
				switch v := r[i+1]; r[i] {
				case "-s":
					match = match && netip.MustParsePrefix(v).Contains(p.Src)
				case "-d":
					match = match && netip.MustParsePrefix(v).Contains(p.Dst)
				case "-p":
					if v != "udp" {
						t.Fatalf("unexpected protocol %q", v)
					}
					match = match && p.UDP
				case "-m":
					if v != "udp" {
						t.Fatalf("unexpected match %q", v)
					}
				case "--sport":
					match = match && fmt.Sprint(p.SrcPort) == v
				case "--dport":
					match = match && fmt.Sprint(p.DstPort) == v
				case "-j":
					target = v
				case "-g":
					target, gotoChain = v, true
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
				drop, done := walk(target, depth+1)
				if gotoChain {
					// A RETURN (or the end) of a goto target ends this chain too.
					return drop, true
				}
				if done && drop {
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
	var bChain *Chain
	for i := range rs.Chains {
		if rs.Chains[i].Name == FirewallChain("b") {
			bChain = &rs.Chains[i]
		}
	}
	if bChain == nil {
		t.Fatalf("no chain for b: %+v", rs.Chains)
	}
	if first := bChain.Rules[0]; strings.Join(first, " ") != "-d 192.168.0.11/32 -p udp -m udp --dport 8779 -j RETURN" {
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
		{"192.168.0.13", "10.0.0.1", true, "c has no ingress rule: the secure default does not export 10.0.0.1"},
		{"192.168.0.13", "100.64.0.20", false, "c has no ingress rule: the local service CIDR is exported"},
		{"192.168.0.14", "192.168.0.11", false, "d has no ingress rule: the local cluster address is in the mesh"},
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
		{"192.168.0.12", "192.168.0.11", false}, // the cluster address: decided by KUBELINK-LOCAL
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

// Without ingress a peer reaches what the mesh exports — the mesh network
// and the local service CIDR — and nothing else; the original WireGuard mode
// built no rule at all, so a peer reached the node network, the API server
// and cloud metadata.
func TestNoIngressMeansTheSecureDefault(t *testing.T) {
	m := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "", "b.org", keyB)}, wgOpts)
	rs := m.FirewallRules("kubelink", 8779)
	if len(rs.Hooks) != 1 || len(rs.Chains) != 3 {
		t.Fatalf("got %+v, want the hook, the top chain, the sources chain and b's chain (no transit in a mesh of one)", rs)
	}
	if lp, _ := m.Policy(8779).Link("b"); !lp.Default {
		t.Error("b's policy is not marked as the default")
	}
	for dst, drop := range map[string]bool{"100.64.0.20": false, "192.168.0.11": false, "192.168.0.99": false, "100.64.0.1": true,
		"10.250.0.5": true, "10.96.0.1": true, "169.254.169.254": true, "172.18.0.2": true} {
		if got := droppedBy(t, rs, "192.168.0.12", dst); got != drop {
			t.Errorf("b -> %s dropped=%v, want %v", dst, got, drop)
		}
	}
}

func TestLinkPolicyAllows(t *testing.T) {
	lp := &LinkPolicy{Allow: pfxs("100.64.0.0/20"), Deny: pfxs("100.64.0.1/32")}
	for dst, want := range map[string]bool{"100.64.0.2": true, "100.64.0.1": false, "10.0.0.1": false} {
		if got := lp.Allows(Packet{Src: addr("192.168.0.12"), Dst: addr(dst)}); got != want {
			t.Errorf("Allows(%s) = %v, want %v", dst, got, want)
		}
	}
	// No allow list left after EffectiveIngress means nothing is allowed,
	// never "everything".
	if (&LinkPolicy{}).Allows(Packet{Dst: addr("10.0.0.1")}) {
		t.Error("an empty policy must allow nothing")
	}
}

// The firewall grows linearly with the links: every network appears in a
// bounded number of rules (it was links × links: every link's chain listed
// every other member's networks as transit, issue #33), and transit still
// passes between members while the secure default still holds.
func TestFirewallRulesGrowLinearly(t *testing.T) {
	count := func(n int) (int, RuleSet) {
		links := []v1alpha1.KubeLink{local("a", "192.168.0.1/16", "100.64.0.0/20")}
		for i := 1; i <= n; i++ {
			var k [32]byte
			k[0], k[1], k[31] = byte(i), byte(i>>8), 7
			key := base64.StdEncoding.EncodeToString(k[:])
			links = append(links, peer(fmt.Sprintf("p%d", i), fmt.Sprintf("192.168.1.%d/16", i), fmt.Sprintf("100.100.%d.0/24", i), fmt.Sprintf("p%d.org", i), key))
		}
		m := Build(links, wgOpts)
		for name, v := range m.Verdicts {
			if !v.Accepted() {
				t.Fatalf("%s: %s %s", name, v.State, v.Message)
			}
		}
		rs := m.FirewallRules("kubelink", 8779)
		rules := 0
		for _, c := range rs.Chains {
			rules += len(c.Rules)
		}
		return rules, rs
	}
	r25, _ := count(25)
	r250, rs := count(250)
	if r250 > 20*250 || float64(r250)/float64(r25) > 11 {
		t.Errorf("%d rules at 25 links, %d at 250: want linear growth (at most 20 per link)", r25, r250)
	}
	for _, tt := range []struct {
		src, dst string
		drop     bool
	}{
		{"192.168.1.7", "100.100.200.9", false}, // transit to p200
		{"100.100.7.1", "192.168.1.200", false}, // from p7's services to p200's address
		{"192.168.1.7", "100.100.7.9", true},    // to its own services: not transit, not exported
		{"192.168.1.7", "100.64.0.20", false},   // the local service CIDR: the default
		{"192.168.1.7", "10.0.0.1", true},       // not exported
		{"192.168.1.7", "100.64.0.1", true},     // the API server's Service
	} {
		if got := droppedBy(t, rs, tt.src, tt.dst); got != tt.drop {
			t.Errorf("%s -> %s dropped=%v, want %v", tt.src, tt.dst, got, tt.drop)
		}
	}
}
