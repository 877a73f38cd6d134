// Package selfexec lets a command's tests run its real main, with real flags,
// in a child process: the test binary re-executes itself with an environment
// variable set, and TestMain then calls main instead of the tests.
//
//	func TestMain(m *testing.M) { selfexec.Main(m, "KUBELINK_X_RUN_MAIN", main) }
//	out, err := selfexec.Command("KUBELINK_X_RUN_MAIN", "--help").CombinedOutput()
package selfexec

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
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

// Process is a command started by Start.
type Process struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	exited chan error
}

// Start runs the test binary as the command with args, its output captured.
// When the test ends the process is killed, and on failure its output is
// logged under name.
func Start(t *testing.T, env, name string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: Command(env, args...), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// Terminate sends SIGTERM and fails the test unless the process exits
// cleanly within d.
func (p *Process) Terminate(t *testing.T, d time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(d):
		t.Errorf("no exit within %s of SIGTERM", d)
	}
}

// FreeAddr is a loopback address with a port that was free a moment ago.
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Get returns the body at url; a failed request is a test error and "".
func Get(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
