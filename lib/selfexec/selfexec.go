// Package selfexec lets a command's tests run its real main, with real flags,
// in a child process: the test binary re-executes itself with an environment
// variable set, and TestMain then calls main instead of the tests.
//
//	func TestMain(m *testing.M) { selfexec.Main(m, "KUBELINK_X_RUN_MAIN", main) }
//	out, err := selfexec.Command("KUBELINK_X_RUN_MAIN", "--help").CombinedOutput()
package selfexec

import (
	"os"
	"os/exec"
	"testing"
)

// Main runs main (and exits 0 after it) when the variable env is "1",
// otherwise the tests.
func Main(m *testing.M, env string, main func()) {
	if os.Getenv(env) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Command is the test binary itself acting as the command, with args.
func Command(env string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env+"=1")
	return cmd
}
