package wireguard

import "github.com/kubelink/kubelink/lib/mesh"

// GeneratePrivateKey returns a new clamped Curve25519 private key
// (mesh.GeneratePrivateKey).
func GeneratePrivateKey() (mesh.Key, error) { return mesh.GeneratePrivateKey() }

// PublicKey derives the public key that peers configure for private
// (mesh.PublicKey).
func PublicKey(private mesh.Key) mesh.Key { return mesh.PublicKey(private) }
