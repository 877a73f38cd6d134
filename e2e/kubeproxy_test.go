//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Each cluster of the lab runs kube-proxy in the mode lab-up gave it
// (nftables in a, iptables in b by default; LAB_KUBE_PROXY forces one), and
// kube-proxy programs that mode on every node: its `kube-proxy` nftables
// table, or its KUBE-SERVICES iptables chain. The other e2e tests go both
// ways across the clusters (ClusterIPs, mesh DNS, MeshServices, the
// firewall, failover), so one pass covers both modes at both ends.
func TestKubeProxyMode(t *testing.T) {
	t.Logf("LAB_MODE=%s, kube-proxy: a %s, b %s", lab.Mode, lab.A.KubeProxy, lab.B.KubeProxy)
	for _, c := range []*Cluster{lab.A, lab.B} {
		want := c.KubeProxy
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var cm corev1.ConfigMap
		err := c.Res.Get(ctx, "kube-proxy", "kube-system", &cm)
		cancel()
		if err != nil {
			t.Fatalf("cluster %s: kube-proxy ConfigMap: %v", c.Name, err)
		}
		mode := ""
		for _, l := range strings.Split(cm.Data["config.conf"], "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "mode:" {
				mode = strings.Trim(f[1], `"`)
			}
		}
		if mode != want {
			t.Errorf("cluster %s: kube-proxy mode %q, want %q", c.Name, mode, want)
		}
		for _, node := range LabNodes(c) {
			nft := nodeRun(t, node, "nft", "list", "table", "ip", "kube-proxy")
			ipt := nodeRun(t, node, "iptables-save", "-t", "nat")
			if ipt.err != nil {
				t.Errorf("%s: iptables-save: %v\n%s", node, ipt.err, ipt.out)
				continue
			}
			hasNft, hasIpt := nft.err == nil && strings.Contains(nft.out, "services"), strings.Contains(ipt.out, ":KUBE-SERVICES")
			switch {
			case want == "nftables" && (!hasNft || hasIpt):
				t.Errorf("%s: nftables mode, but nft table kube-proxy with services = %v (%v) and iptables KUBE-SERVICES = %v", node, hasNft, nft.err, hasIpt)
			case want == "iptables" && (!hasIpt || hasNft):
				t.Errorf("%s: iptables mode, but iptables KUBE-SERVICES = %v and nft table kube-proxy = %v", node, hasIpt, hasNft)
			}
		}
	}
}

// LabNodes are the node containers of a cluster of the lab.
func LabNodes(c *Cluster) []string {
	if c.Name == "a" {
		return []string{"lab-a-control-plane", "lab-a-worker"}
	}
	return []string{"lab-" + c.Name + "-control-plane"}
}

type runResult struct {
	out string
	err error
}

func nodeRun(t *testing.T, node string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/docker", append([]string{"exec", node}, args...)...).CombinedOutput()
	return runResult{string(out), err}
}
