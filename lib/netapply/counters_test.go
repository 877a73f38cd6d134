package netapply

import "testing"

func TestSumDropsCountsOnlyDropRules(t *testing.T) {
	lines := []string{
		"-N KUBELINK-FW-X",
		"-A KUBELINK-FW-X -d 192.168.0.11/32 -p udp -m udp --dport 8779 -c 40 2000 -j RETURN",
		"-A KUBELINK-FW-X -d 100.64.0.21/32 -c 3 180 -j DROP",
		"-A KUBELINK-FW-X -d 100.64.0.0/20 -c 9 500 -j RETURN",
		"-A KUBELINK-FW-X -c 5 300 -j DROP",
	}
	if got := sumDrops(lines); got != 8 {
		t.Errorf("sumDrops = %d, want 8", got)
	}
}
