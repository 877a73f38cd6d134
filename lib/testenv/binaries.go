// Package testenv runs real Kubernetes control planes (etcd + kube-apiserver
// as local processes on loopback) with the kubelink CRDs installed.
//
// It exists so that admission rules, printer columns and, later, multi-cluster
// network tests run against the same API server code that production uses,
// instead of fake clients that know nothing about OpenAPI or CEL validation.
// The binaries are built from source by lab/scripts/k8s-bins.sh (make
// test-bins) and cached outside the checkout; nothing is downloaded here.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
)

// KubernetesVersion is the version of the control-plane binaries. It must match
// K8S_VERSION in lab/scripts/k8s-bins.sh and the k8s.io modules in go.mod, so
// that tests exercise the API server whose client libraries we link.
const KubernetesVersion = "v1.34.4"

// CacheEnv names the environment variable that relocates the kubelink cache
// (default $HOME/.cache/kubelink); the binaries live in its bin/<version>.
const CacheEnv = "KUBELINK_CACHE"

// Binary names inside BinDir.
const (
	BinAPIServer = "kube-apiserver"
	BinEtcd      = "etcd"
	BinKubectl   = "kubectl"
)

// CacheDir returns ${KUBELINK_CACHE:-$HOME/.cache/kubelink}.
func CacheDir() string {
	if dir := os.Getenv(CacheEnv); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		// Without a home directory there is no sensible default; a relative
		// path makes the "missing binary" error point somewhere visible.
		home = "."
	}
	return filepath.Join(home, ".cache", "kubelink")
}

// BinDir returns the directory holding kube-apiserver, etcd and kubectl:
// ${KUBELINK_CACHE:-$HOME/.cache/kubelink}/bin/v1.34.4.
func BinDir() string {
	return filepath.Join(CacheDir(), "bin", KubernetesVersion)
}

// BinPath returns the path of one control-plane binary in BinDir.
func BinPath(name string) string {
	return filepath.Join(BinDir(), name)
}

// MissingBinaryError reports a control-plane binary that has not been built.
// It is a distinct type so that callers can tell "not set up" from "broken".
type MissingBinaryError struct {
	Path string
	Err  error
}

func (e *MissingBinaryError) Error() string {
	return fmt.Sprintf("testenv: control-plane binary %s is missing or not executable (%v): "+
		"run `make test-bins` (lab/scripts/k8s-bins.sh) to build kube-apiserver, etcd and kubectl %s",
		e.Path, e.Err, KubernetesVersion)
}

func (e *MissingBinaryError) Unwrap() error { return e.Err }

// CheckBinaries verifies that the named binaries (default: kube-apiserver and
// etcd, the ones a control plane needs) exist in BinDir and are executable.
// envtest itself would only fail later with a vague "fork/exec" error after
// several retries, so we check first and name the exact file.
func CheckBinaries(names ...string) error {
	if len(names) == 0 {
		names = []string{BinEtcd, BinAPIServer}
	}
	for _, name := range names {
		path := BinPath(name)
		info, err := os.Stat(path)
		switch {
		case err != nil:
			return &MissingBinaryError{Path: path, Err: err}
		case info.IsDir():
			return &MissingBinaryError{Path: path, Err: fmt.Errorf("is a directory")}
		case info.Mode().Perm()&0o111 == 0:
			return &MissingBinaryError{Path: path, Err: fmt.Errorf("not executable")}
		}
	}
	return nil
}
