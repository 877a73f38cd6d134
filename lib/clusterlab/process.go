package clusterlab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubelink/kubelink/lib/nstest"
	"github.com/kubelink/kubelink/lib/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds kubelink-broker and kubelink-router once per test process
// (or uses $KUBELINK_BIN_DIR) and returns their directory.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if d := os.Getenv("KUBELINK_BIN_DIR"); d != "" {
			binDir = d
			return
		}
		root, err := testenv.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		binDir, buildErr = os.MkdirTemp("", "kubelink-bin-")
		if buildErr != nil {
			return
		}
		// The images' build configuration (static, paths trimmed: the
		// Makefile's STATIC_GO), which make lint compiled the libraries
		// for already; the default one (cgo) compiled them a third time
		// on a cold machine, beside -race.
		cmd := exec.Command("go", "build", "-trimpath", "-o", binDir+"/", "./cmd/broker", "./cmd/router")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building binaries: %v\n%s", err, out)
		}
		for _, n := range []string{"broker", "router"} {
			_ = os.Rename(filepath.Join(binDir, n), filepath.Join(binDir, "kubelink-"+n))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// apiForward makes the control plane reachable from inside ns at
// https://127.0.0.1:<port>: a listener in the namespace's own loopback relays
// to the API server on the root namespace's loopback (a testenv.Proxy, so
// that a test can cut it: Cluster.SetAPIDown). No address outside the
// test's namespaces is involved, and the serving certificate (valid for
// 127.0.0.1) still verifies.
func apiForward(t testing.TB, ns *nstest.Namespace, cp *testenv.ControlPlane) (kubeconfig string, proxy *testenv.Proxy) {
	t.Helper()
	u, err := url.Parse(cp.Config().Host)
	if err != nil {
		t.Fatalf("API server URL: %v", err)
	}
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return }); err != nil {
		t.Fatalf("API forwarder in %s: %v", ns.Name, err)
	}
	proxy = testenv.NewProxy(ln, u.Host)
	t.Cleanup(proxy.Close)
	raw, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + ln.Addr().String()
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), ns.Name+".kubeconfig")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, proxy
}

// Process is a kubelink binary running inside a namespace.
type Process struct {
	Name string
	// Device is the mesh device of a broker.
	Device string
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs bin with args inside ns. The process is stopped at cleanup and
// its output is printed when the test failed.
func Start(t testing.TB, ns *nstest.Namespace, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = ns.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Pdeathsig fires when the forking *thread* exits, and Go may reuse a
	// thread for ns.Do (which ends it). So fork from a goroutine that keeps
	// its thread locked, and alive, for the whole life of the process.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.Output())
		}
	})
	return p
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.log.String() }

// Kill stops the process hard (a crash) and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to terminate and waits up to 10 s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitCtx is a bounded context for harness steps.
func waitCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
