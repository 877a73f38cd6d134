package wireguard

import (
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
)

// The keys lib/mesh makes are the keys WireGuard (wgctrl) makes of them.
func TestKeysAgreeWithWgctrl(t *testing.T) {
	for range 50 {
		priv, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		want := wgtypes.Key(priv).PublicKey()
		if got := PublicKey(priv); got != mesh.Key(want) {
			t.Fatalf("public key of %s: %s, wgctrl says %s", priv, got, want)
		}
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		if got := PublicKey(mesh.Key(k)); got != mesh.Key(k.PublicKey()) {
			t.Fatalf("public key of wgctrl's %s: %s, wgctrl says %s", k, got, k.PublicKey())
		}
	}
}
