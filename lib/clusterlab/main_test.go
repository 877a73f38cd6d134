package clusterlab

import (
	"fmt"
	"os"
	"testing"

	"github.com/kubelink/kubelink/lib/testenv"
)

// TestMain stops the control planes the tests shared (New takes them from
// testenv.SharedControlPlanesForTest) once every test is done.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := testenv.StopSharedControlPlanes(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
