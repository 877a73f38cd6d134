// Package e2e holds the end-to-end tests that run against the kind lab of
// lab/scripts/lab-up.sh (make lab-up, then make e2e), written with
// sigs.k8s.io/e2e-framework. They carry the build tag e2e, so `make test`
// compiles this package without them; without a running lab they fail.
package e2e
