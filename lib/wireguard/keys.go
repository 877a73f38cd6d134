package wireguard

import (
	"fmt"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
)

// GeneratePrivateKey returns a new clamped Curve25519 private key.
func GeneratePrivateKey() (mesh.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return mesh.Key{}, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	return mesh.Key(k), nil
}

// PublicKey derives the public key that peers configure for private.
func PublicKey(private mesh.Key) mesh.Key {
	return mesh.Key(wgtypes.Key(private).PublicKey())
}
