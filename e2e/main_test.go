//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
)

var (
	testenv env.Environment
	lab     *Lab
)

// TestMain connects to the lab the Makefile started. A missing lab is an
// error, not a skip: `make e2e` without `make lab-up` must fail.
func TestMain(m *testing.M) {
	dir := os.Getenv("LAB_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		cache := os.Getenv("KUBELINK_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "kubelink")
		}
		dir = filepath.Join(cache, "lab")
	}
	var err error
	lab, err = OpenLab(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\ne2e: start the lab first: make lab-up\n", err)
		os.Exit(1)
	}
	testenv = env.NewWithConfig(envconf.NewWithKubeConfig(lab.A.Kubeconfig))
	os.Exit(testenv.Run(m))
}
