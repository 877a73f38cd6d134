package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readNewc parses a newc archive the way the kernel's unpacker does: a
// 110-byte header, the name, data, each padded to 4 bytes.
func readNewc(t *testing.T, b []byte) (names []string, modes map[string]uint64, data map[string]string) {
	t.Helper()
	modes, data = map[string]uint64{}, map[string]string{}
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		off += 110 + int(namesize)
		align()
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return
		}
		names = append(names, name)
		modes[name] = mode
		data[name] = string(b[off : off+int(size)])
		off += int(size)
		align()
	}
}

func TestArchiveIsReadableNewcWithParentsFirst(t *testing.T) {
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("#!binary"), 0o751); err != nil {
		t.Fatal(err)
	}
	a := newArchive()
	if err := a.copy(src, "/usr/sbin/ip"); err != nil {
		t.Fatal(err)
	}
	a.bytes("/kernelvm/plan.json", 0o644, []byte(`{"x":1}`))
	a.symlink("/var/run", "../run")
	a.dir("/tmp")
	var buf bytes.Buffer
	if err := a.write(&buf); err != nil {
		t.Fatal(err)
	}
	names, modes, data := readNewc(t, buf.Bytes())
	seen := map[string]bool{}
	for _, n := range names {
		if parent := filepath.Dir(n); parent != "." && !seen[parent] {
			t.Errorf("%s comes before its directory %s", n, parent)
		}
		seen[n] = true
	}
	for name, want := range map[string]struct {
		mode uint64
		data string
	}{
		"usr/sbin/ip":        {sIFREG | 0o751, "#!binary"},
		"kernelvm/plan.json": {sIFREG | 0o644, `{"x":1}`},
		"var/run":            {sIFLNK | 0o777, "../run"},
		"tmp":                {sIFDIR | 0o755, ""},
		"usr":                {sIFDIR | 0o755, ""},
	} {
		if modes[name] != want.mode || data[name] != want.data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, modes[name], data[name], want.mode, want.data)
		}
	}
	if strings.Join(names, " ") == "" {
		t.Fatal("empty archive")
	}
}

func TestArchiveRefusesAFileUsedAsDirectory(t *testing.T) {
	a := newArchive()
	a.bytes("/etc", 0o644, nil)
	a.bytes("/etc/hosts", 0o644, nil)
	if err := a.write(&bytes.Buffer{}); err == nil {
		t.Error("an archive with /etc as file and directory was written")
	}
}

func TestModuleNamesTreatDashAndUnderscoreAlike(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/arch/x86/crypto/curve25519-x86_64.ko": "curve25519_x86_64",
		"curve25519-x86_64":                           "curve25519_x86_64",
		"ip6_udp_tunnel":                              "ip6_udp_tunnel",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}
