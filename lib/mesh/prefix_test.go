package mesh

import (
	"slices"
	"testing"
)

// The original's containment helper compared the second mask with itself, so a
// bigger network counted as "contained" in a smaller one.
func TestContainsComparesBothMasks(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.0.0.0/16", "10.0.0.0/8", false}, // the old bug said true
		{"10.0.0.0/16", "10.0.0.0/16", true},
		{"10.0.0.0/16", "10.1.0.0/16", false},
		{"192.168.0.0/24", "192.168.0.7/32", true},
		{"2001:db8::/32", "2001:db8:1::/48", true},
		{"10.0.0.0/8", "2001:db8::/32", false},
	}
	for _, tt := range tests {
		if got := contains(pfx(tt.outer), pfx(tt.inner)); got != tt.want {
			t.Errorf("contains(%s, %s) = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

func TestMergePrefixesDropsCoveredAndDuplicatesAndSorts(t *testing.T) {
	got := mergePrefixes(pfxs("10.1.0.0/16", "192.168.0.5/32", "10.0.0.0/8", "10.1.0.0/16", "100.64.0.0/20", "192.168.0.5/32"))
	want := pfxs("10.0.0.0/8", "100.64.0.0/20", "192.168.0.5/32")
	if !slices.Equal(got, want) {
		t.Errorf("mergePrefixes = %v, want %v", got, want)
	}
}

func TestParsePrefixOrAddr(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.3": "10.1.2.3/32", "10.0.0.0/8": "10.0.0.0/8", "2001:db8::1": "2001:db8::1/128"} {
		got, err := parsePrefixOrAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parsePrefixOrAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.1/8", "garbage", "10.0.0.0/33", ""} {
		if _, err := parsePrefixOrAddr(bad); err == nil {
			t.Errorf("parsePrefixOrAddr(%q) accepted", bad)
		}
	}
}
