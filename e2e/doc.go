// Package e2e holds the end-to-end tests that run against the kind lab
// (make e2e, sigs.k8s.io/e2e-framework). They land with issue #6.
package e2e
