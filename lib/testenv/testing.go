package testenv

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
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

// StartControlPlanesForTest starts several control planes at once (the
// clusters of a simulated multi-cluster lab) and stops them all at once
// when the test ends. On two cores a kube-apiserver spends much of its
// start waiting (etcd, its own readiness, the CRDs becoming served), so
// the planes start in about the time of the slowest rather than their
// sum. Any failure fails the test, after every started plane is stopped.
func StartControlPlanesForTest(t testing.TB, planes ...*ControlPlane) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	errs := concurrently(planes, func(cp *ControlPlane) error { return cp.Start(ctx) })
	t.Cleanup(func() {
		// a plane that never started stops with nil
		if err := errors.Join(concurrently(planes, (*ControlPlane).Stop)...); err != nil {
			t.Errorf("%v", err)
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%v", err)
	}
	for _, cp := range planes {
		t.Logf("%s: control plane up in %s", cp.name(), cp.StartDuration().Round(time.Millisecond))
	}
	t.Logf("%d control planes up in %s", len(planes), time.Since(begin).Round(time.Millisecond))
}

// concurrently runs f on every plane at once and returns the errors in
// the planes' order.
func concurrently(planes []*ControlPlane, f func(*ControlPlane) error) []error {
	errs := make([]error, len(planes))
	var wg sync.WaitGroup
	for i, cp := range planes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(cp)
		}()
	}
	wg.Wait()
	return errs
}

// InstallCRDs installs the CRDs that load returns (e.g. mcs.CRDs, a
// package's embedded crds.CRDs) into the API server of cfg and waits until
// they are served, at most 30 s; it fails the test otherwise, naming what.
// It returns the CRDs installed (to delete them from a shared control
// plane).
func InstallCRDs(t testing.TB, cfg *rest.Config, what string, load func() ([]*apiextensionsv1.CustomResourceDefinition, error)) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	list, err := load()
	if err != nil {
		t.Fatalf("loading the %s CRDs: %v", what, err)
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: list, MaxTime: 30 * time.Second}); err != nil {
		t.Fatalf("installing the %s CRDs: %v", what, err)
	}
	return list
}
