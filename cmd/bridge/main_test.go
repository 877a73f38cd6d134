package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/clusterlab"
	"github.com/kubelink/kubelink/lib/selfexec"
	"github.com/kubelink/kubelink/lib/testenv"
)

// runMainEnv makes the test binary act as the command (lib/selfexec), so
// the tests run the real main with real flags in a child process.
const runMainEnv = "KUBELINK_BRIDGE_RUN_MAIN"

// TestMain also stops the control planes clusterlab keeps for reuse (the
// two-cluster test): they would outlive the test binary otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		selfexec.Main(m, runMainEnv, main)
	}
	os.Exit(testenv.RunStoppingShared(m))
}

func runBinary(args ...string) *exec.Cmd { return selfexec.Command(runMainEnv, args...) }

// The bridge has the broker's bridge flags and no WireGuard or mode flags.
func TestFlags(t *testing.T) {
	out, err := runBinary("--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, flag := range []string{"--cert-dir", "--bridge-port", "--auto-connect", "--advertised-port", "--dns-advertisement", "--cluster-domain", "--dns-service-ip", "--node-cidr", "--service-cidr", "--ifce-name",
		"--probe-interval", "--leader-elect", "--metrics-addr", "--served-links", "--cleanup", "--kubeconfig"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s", flag)
		}
	}
	for _, flag := range []string{"--mode string", "--wireguard string", "--listen-port int", "--secret string", "--keepalive duration"} {
		if strings.Contains(string(out), flag) {
			t.Errorf("--help offers %s, which the bridge does not use", flag)
		}
	}
	out, err = runBinary("--node-cidr=10.0.0.0/24", "--kubeconfig=/nonexistent").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--cert-dir is required in bridge mode") {
		t.Errorf("without --cert-dir: %v\n%s", err, out)
	}
	out, err = runBinary("--mode=wireguard").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown flag: --mode") {
		t.Errorf("--mode: %v\n%s", err, out)
	}
}

// kubelink-bridge in cluster B against kubelink-broker --mode=bridge in
// cluster A, in the two-cluster harness: pods reach each other's services
// both ways and both links are Up on the bridge data plane.
func TestBridgeBinaryBetweenTwoClusters(t *testing.T) {
	lab := clusterlab.New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	ca := clusterlab.NewBridgeCA(t)
	a.StartRouter(lab)
	b.StartRouter(lab)
	a.StartBroker(lab, a.GW, clusterlab.BridgeFlags(ca.CertDir(t, a))...)
	t.Setenv(runMainEnv, "1") // children started from here run main
	bridge := b.StartBrokerBinary(b.GW, os.Args[0], "--cert-dir", ca.CertDir(t, b), "--bridge-port", "8088")
	a.Apply(a.LocalLink(), clusterlab.BridgeLinkTo(b))
	b.Apply(b.LocalLink(), clusterlab.BridgeLinkTo(a))
	if body, _ := clusterlab.WaitGet(t, a.Pod, b.ServiceIP, 10*time.Second); !strings.Contains(body, "echo b from 192.168.0.11:") {
		t.Errorf("A -> B answered %q", body)
	}
	if body, _ := clusterlab.WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second); !strings.Contains(body, "echo a from 192.168.0.12:") {
		t.Errorf("B -> A answered %q", body)
	}
	_, kl := b.WaitState("a", v1alpha1.StateUp, 5*time.Second)
	if kl.Status.DataPlane != "bridge" {
		t.Errorf("B's link a: dataPlane %q, want bridge", kl.Status.DataPlane)
	}
	a.WaitState("b", v1alpha1.StateUp, 5*time.Second)
	clusterlab.WaitMetric(t, b.GW, `kubelink_bridge_rx_bytes_total{link="a"}`, 5*time.Second, func(v float64) bool { return v > 0 })
	if bridge.Exited() {
		t.Fatalf("kubelink-bridge exited:\n%s", bridge.Output())
	}
}
