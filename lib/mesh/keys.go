package mesh

import (
	"encoding/base64"
	"fmt"
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
