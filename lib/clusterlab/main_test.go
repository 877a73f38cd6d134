package clusterlab

import (
	"os"
	"testing"

	"github.com/kubelink/kubelink/lib/testenv"
)

// TestMain stops the control planes the tests shared (New takes them from
// testenv.SharedControlPlanesForTest) once every test is done.
func TestMain(m *testing.M) { os.Exit(testenv.RunStoppingShared(m)) }
