package mesh

import (
	"fmt"
	"math/big"
	"strings"
)

// The revocation list of a mesh authority: one certificate per line,
// starting with its serial number in hex, then anything (certwatch writes
// "<serial> <notAfter> <identities>"); blank lines and lines starting with
// # are skipped. certwatch publishes and copies it, the bridge refuses the
// certificates it lists (docs/certwatch.md, "Revocation").

// RevokedSerial reads the serial number that starts a line of the list, as
// big.Int.Text(16) prints it (lowercase, no leading zeros).
func RevokedSerial(line string) (string, error) {
	f, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	n, ok := new(big.Int).SetString(f, 16)
	if !ok || n.Sign() < 0 {
		return "", fmt.Errorf("%q does not start with a certificate serial number in hex", line)
	}
	return n.Text(16), nil
}

// ParseRevoked reads a revocation list into the set of its serials. A line
// that does not start with a serial fails the whole list (naming the line
// by its number): half a list would let a revoked certificate back in.
func ParseRevoked(list string) (map[string]bool, error) {
	serials := map[string]bool{}
	for i, line := range strings.Split(list, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := RevokedSerial(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		serials[s] = true
	}
	return serials, nil
}
