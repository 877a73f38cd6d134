package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeQEMU writes an executable shell script standing in for qemu.
func fakeQEMU(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A qemu that gives up before the guest prints (as KVM's "failed to set
// MSR" abort did) is errSilent, so boot falls back to emulation, and so is
// one that hangs without output; a guest that printed and then crashed is
// not: that is the tests' failure, not the accelerator's.
func TestRunTellsAnAcceleratorFailureFromAGuestFailure(t *testing.T) {
	cases := []struct {
		name, script string
		silent       bool
	}{
		{"qemu aborts before the console", "echo 'qemu: assertion failed' >&2; exit 134", true},
		{"qemu hangs silently", "exec sleep 30", true},
		{"the guest printed, then died", "echo 'Linux version 6.1'; exit 1", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := run(fakeQEMU(t, c.script), nil, 20*time.Second, time.Second)
			if err == nil {
				t.Fatal("run returned no error for a VM without a result line")
			}
			if got := errors.Is(err, errSilent); got != c.silent {
				t.Fatalf("errors.Is(err, errSilent) = %v, want %v (err: %v)", got, c.silent, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("run took %v: the first-output bound of 1 s did not end it", d)
			}
		})
	}
}
