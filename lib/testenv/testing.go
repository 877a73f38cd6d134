package testenv

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts a control plane for one test (or benchmark) and stops
// it when the test ends. Any failure, including a missing binary, fails the
// test with t.Fatalf: skipping would let CI pass without ever running the
// API-server checks, which is exactly what these tests exist to prevent.
// The control plane is named after the test.
func StartForTest(t testing.TB) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{Name: t.Name()}
	StartControlPlaneForTest(t, cp)
	return cp
}

// StartControlPlaneForTest is StartForTest for a caller-configured
// ControlPlane (e.g. with a ServiceCIDR).
func StartControlPlaneForTest(t testing.TB, cp *ControlPlane) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.Start(ctx); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	t.Logf("%s: control plane up in %s", cp.name(), cp.StartDuration().Round(time.Millisecond))
}
