package netapply

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// LoadDatafile reads the destinations a previous run routed (the router's
// --datafile): one CIDR per line, "#" starts a comment. A missing file is a
// first start and yields no prefixes.
func LoadDatafile(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("route datafile: %w", err)
	}
	defer f.Close()
	var out []netip.Prefix
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("route datafile %s:%d: %q is not a CIDR (fix or delete the file)", path, n, line)
		}
		out = append(out, p.Masked())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("route datafile %s: %w", path, err)
	}
	return out, nil
}

// SaveDatafile replaces the file atomically (temporary file in the same
// directory, then rename), so a crash never leaves a half-written list that
// would make the next run forget routes. The file is readable by root only.
func SaveDatafile(path string, prefixes []netip.Prefix) (err error) {
	var b strings.Builder
	b.WriteString("# Destinations routed by kubelink; read at startup to remove routes of a previous run.\n")
	for _, p := range prefixes {
		b.WriteString(p.String() + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("route datafile: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.WriteString(b.String()); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("route datafile %s: %w", path, err)
	}
	return nil
}
