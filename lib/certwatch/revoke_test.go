package certwatch

import (
	"strings"
	"testing"
	"time"
)

// The record and the list keep their entries through a write and a read,
// sorted by serial; a line that does not parse is set apart (the record)
// or fails the whole list (what the clusters copy), and serials compare in
// canonical lowercase hex.
func TestRevocationListFormat(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	in := map[string]certEntry{
		"1f": {serial: "1f", notAfter: at, identities: []string{"kubelink://lab/b", "kubelink://default/b"}},
		"0a": {serial: "a", notAfter: at},
	}
	in["a"] = in["0a"]
	delete(in, "0a")
	text := formatEntries(in)
	if want := "1f 2030-01-02T03:04:05Z kubelink://lab/b,kubelink://default/b\na 2030-01-02T03:04:05Z -\n"; text != want {
		t.Fatalf("formatted %q, want %q", text, want)
	}
	out, bad := parseEntries(text + "zz 2030-01-02T03:04:05Z x\n1 yesterday x\n2 2030-01-02T03:04:05Z\n")
	if len(bad) != 3 || len(out) != 2 || out["1f"].identities[1] != "kubelink://default/b" || len(out["a"].identities) != 0 || !out["a"].notAfter.Equal(at) {
		t.Errorf("parsed %v, bad %q", out, bad)
	}

	list, err := checkRevoked("# comment\n\n1F 2030-01-02T03:04:05Z kubelink://lab/b\n")
	if err != nil || string(list) != "1F 2030-01-02T03:04:05Z kubelink://lab/b\n" {
		t.Errorf("checkRevoked: %q, %v", list, err)
	}
	if s := revokedSerials(list); !s["1f"] || len(s) != 1 {
		t.Errorf("serials %v, want 1f", s)
	}
	if _, err := checkRevoked("1f x\nkubelink://lab/b\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a list with an identity instead of a serial: %v", err)
	}
	if list, err := checkRevoked(""); err != nil || list == nil || len(list) != 0 {
		t.Errorf("an empty list: %q (nil %v), %v; want an empty, non-nil list", list, list == nil, err)
	}
}
