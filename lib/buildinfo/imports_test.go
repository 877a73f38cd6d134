package buildinfo

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Each binary links only what its job needs (README, "Why this split"):
// the router, meshdns and certwatch link neither wireguard-go nor the
// bridge nor the broker, and certwatch no WireGuard device code either.
// Checked on the real import graph (`go list -deps`) of each cmd module.
func TestBinaryImports(t *testing.T) {
	const (
		wgDevice = "golang.zx2c4.com/wireguard/device"
		bridge   = "github.com/kubelink/kubelink/lib/bridge"
		broker   = "github.com/kubelink/kubelink/lib/broker"
		wgLib    = "github.com/kubelink/kubelink/lib/wireguard"
		meshdns  = "github.com/kubelink/kubelink/lib/meshdns"
	)
	for cmd, forbidden := range map[string][]string{
		"router":    {wgDevice, bridge, broker, meshdns},
		"meshdns":   {wgDevice, bridge, broker, wgLib},
		"certwatch": {wgDevice, bridge, broker, wgLib, meshdns},
		"broker":    {meshdns},
		"bridge":    {meshdns},
		// verify's agent runs in the users' clusters: it links nothing of
		// kubelink's planes, and no Kubernetes client.
		"verifier": {wgDevice, bridge, broker, wgLib, meshdns, "k8s.io/client-go/kubernetes"},
	} {
		c := exec.Command("go", "list", "-deps", ".")
		c.Dir = filepath.Join("..", "..", "cmd", cmd)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps in cmd/%s: %v\n%s", cmd, err, out)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, "github.com/kubelink/kubelink/lib/buildinfo") {
			t.Fatalf("cmd/%s: the import graph lacks lib/buildinfo; not the graph of a kubelink binary:\n%s", cmd, out)
		}
		for _, f := range forbidden {
			if slices.Contains(deps, f) {
				t.Errorf("kubelink-%s links %s", cmd, f)
			}
		}
	}
}
