package clusterlab

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/nstest"
)

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// netState is what kubelink may touch in a namespace, in comparable form.
// It waits until the kernel has settled the namespace's own IPv6
// link-local addresses (duplicate address detection takes a moment after
// an interface comes up, and adds a local route when it ends), so that
// a snapshot taken right after the lab was built compares with a later one.
func netState(t *testing.T, ns *nstest.Namespace) string {
	t.Helper()
	waitFor(t, "IPv6 duplicate address detection in "+ns.Name, 10*time.Second, func() bool {
		return !strings.Contains(ns.Run(t, "ip", "-o", "addr", "show"), "tentative")
	})
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "rule", "show"},
		{"iptables-save"},
	} {
		// Standard output only: ip writes to standard error about the
		// peers of veths in namespaces other tests are removing meanwhile
		// ("Peer netns reference is invalid"), which is no state of this one.
		out, err := ns.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			t.Fatalf("%s in %s: %v", strings.Join(cmd, " "), ns.Name, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") {
				continue // iptables-save timestamps
			}
			// Link lines carry changing counters/flags of unrelated state.
			line = counters.ReplaceAllString(line, "[x]")
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// --cleanup removes everything kubelink created and nothing else: the
// namespace looks exactly as before the broker ran, foreign routes and
// chains included.
func TestCleanupRestoresTheNamespace(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	// Foreign state that must survive.
	a.GW.Run(t, "ip", "route", "add", "10.99.0.0/24", "via", "10.10.0.3", "proto", "static")
	a.GW.Run(t, "iptables", "-t", "nat", "-N", "FOREIGN")
	a.GW.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "FOREIGN")
	a.GW.Run(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-s", "10.98.0.0/16", "-j", "ACCEPT")
	before := netState(t, a.GW)

	ingress := b.LinkTo()
	ingress.Spec.Ingress = []string{a.ServiceCIDR.String()} // firewall chains too
	a.Apply(a.LocalLink(), ingress)
	b.Apply(b.LocalLink(), a.LinkTo())
	// A table of our own with an ip rule, so the rule is covered too.
	broker := a.StartBroker(lab, a.GW, "--route-table", "100", "--rule-priority", "32750")
	b.StartBroker(lab, b.GW)
	a.WaitState("b", v1alpha1.StateUp, 10*time.Second)
	during := a.GW.Run(t, "iptables-save")
	for _, want := range []string{"KUBELINK-NAT", "KUBELINK-FIREWALL", "kubelink snat rules"} {
		if !strings.Contains(during, want) {
			t.Errorf("while running, iptables lacks %s", want)
		}
	}
	if !strings.Contains(a.GW.Run(t, "ip", "route", "show", "table", "100", "proto", "76"), "100.64.16.0/20") {
		t.Error("while running, no kubelink route to B's services in table 100")
	}
	if !strings.Contains(a.GW.Run(t, "ip", "rule"), "32750:\tfrom all lookup 100") {
		t.Errorf("while running, no rule for table 100:\n%s", a.GW.Run(t, "ip", "rule"))
	}
	broker.Stop()

	out, err := a.GW.Command(lab.Bin+"/kubelink-broker", "--cleanup", "--ifce-name", "kubelink", "--route-table", "100").CombinedOutput()
	if err != nil {
		t.Fatalf("--cleanup: %v\n%s", err, out)
	}
	after := netState(t, a.GW)
	if before != after {
		t.Errorf("namespace differs after --cleanup:\n--- before\n%s\n--- after\n%s", before, after)
	}
}
