package mesh

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard key (public, private or preshared).
type Key [32]byte

// ParseKey decodes a base64 WireGuard key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("not valid base64: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("decodes to %d bytes, a WireGuard key has 32", len(b))
	}
	copy(k[:], b)
	return k, nil
}

// String returns the base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k Key) IsZero() bool { return k == Key{} }

// GeneratePrivateKey returns a new clamped Curve25519 private key. It lives
// here, not in lib/wireguard, so that a binary that only handles keys
// (certwatch) does not link wireguard-go.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	// Clamping as RFC 7748 and WireGuard do.
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// PublicKey derives the public key that peers configure for private.
func PublicKey(private Key) Key {
	pub, err := curve25519.X25519(private[:], curve25519.Basepoint)
	if err != nil {
		// Only for a low-order result, which a clamped key cannot give;
		// keep the zero key, which every check treats as unset.
		return Key{}
	}
	return Key(pub)
}
