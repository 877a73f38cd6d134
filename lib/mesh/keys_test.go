package mesh

import (
	"encoding/hex"
	"testing"
)

func TestPublicKeyMatchesRFC7748(t *testing.T) {
	var priv Key
	hex.Decode(priv[:], []byte("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	if got := hex.EncodeToString(func() []byte { k := PublicKey(priv); return k[:] }()); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Errorf("public key %s", got)
	}
}

func TestGeneratePrivateKeyIsClampedAndRandom(t *testing.T) {
	a, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a.IsZero() {
		t.Fatalf("keys not random: %s %s", a, b)
	}
	if a[0]&7 != 0 || a[31]&0x80 != 0 || a[31]&0x40 == 0 {
		t.Errorf("key %x is not clamped", a)
	}
	if PublicKey(a) == PublicKey(b) {
		t.Error("different private keys give the same public key")
	}
}
