package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestRewriteDropsCapabilitiesOutsideTheBoundingSet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	spec := `{"ociVersion":"1.0.2","process":{"capabilities":{"bounding":["CAP_NET_ADMIN","CAP_SYS_RESOURCE","CAP_FUTURE"],"effective":["CAP_SYS_RESOURCE"]}}}`
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	mask := uint64(1) << capBits["CAP_NET_ADMIN"]
	if err := rewrite(path, true, mask); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Process struct{ Capabilities map[string][]string } `json:"process"`
	}
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got := doc.Process.Capabilities
	if len(got["bounding"]) != 2 || got["bounding"][0] != "CAP_NET_ADMIN" || got["bounding"][1] != "CAP_FUTURE" {
		t.Errorf("bounding = %v, want [CAP_NET_ADMIN CAP_FUTURE] (unknown names are runc's business)", got["bounding"])
	}
	if len(got["effective"]) != 0 {
		t.Errorf("effective = %v, want empty", got["effective"])
	}
}

func TestParseArgs(t *testing.T) {
	cmd, bundle, process := parseArgs([]string{"--root", "/run/x", "--log", "l", "exec", "--process", "/tmp/p.json", "id"})
	if cmd != "exec" || bundle != "." || process != "/tmp/p.json" {
		t.Errorf("exec: got %q %q %q", cmd, bundle, process)
	}
	cmd, bundle, _ = parseArgs([]string{"create", "--bundle=/b", "id"})
	if cmd != "create" || bundle != "/b" {
		t.Errorf("create: got %q %q", cmd, bundle)
	}
}
