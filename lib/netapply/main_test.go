package netapply

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// helperDevicesEnv makes the test binary a helper that only runs
// EnableDeviceForwarding for the listed devices and exits, so that a test
// can run it with fewer privileges than its own (see
// TestEnableDeviceForwardingNeedsOnlyNetAdmin).
const helperDevicesEnv = "KUBELINK_TEST_ENABLE_DEVICE_FORWARDING"

func TestMain(m *testing.M) {
	if devs := os.Getenv(helperDevicesEnv); devs != "" {
		if err := EnableDeviceForwarding(strings.Split(devs, ",")...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
