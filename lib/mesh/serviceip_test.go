package mesh

import (
	"net/netip"
	"testing"
)

func TestServiceIP(t *testing.T) {
	for _, c := range []struct {
		cidr string
		n    int
		want string
	}{
		{"100.64.0.0/20", 1, "100.64.0.1"},
		{"100.64.0.0/20", DNSServiceOffset, "100.64.0.10"},
		{"100.64.16.7/20", 11, "100.64.16.11"}, // an unmasked CIDR counts from its network
		{"10.0.0.250/24", 10, "10.0.0.10"},
		{"100.64.0.0/24", 300, "100.64.1.44"}, // beyond the CIDR: no wrap, plain arithmetic
	} {
		if got := ServiceIP(netip.MustParsePrefix(c.cidr), c.n); got.String() != c.want {
			t.Errorf("ServiceIP(%s, %d) = %s, want %s", c.cidr, c.n, got, c.want)
		}
	}
	if got := DNSServiceIP(netip.Prefix{}); got.IsValid() {
		t.Errorf("DNSServiceIP without a CIDR = %s, want invalid", got)
	}
}
