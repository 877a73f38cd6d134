package wireguard

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/nstest"
)

// childEnv makes the test binary act as a whole "broker" process started
// inside a namespace (ip netns exec), the way the product runs: no thread
// switching, wireguard-go unwrapped.
const childEnv = "KUBELINK_WIREGUARD_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// childSpec is what the parent tells the child process to set up.
type childSpec struct {
	Name, Inner string
	Private     mesh.Key
	Port        int
	Peer        ResolvedPeer
}

// runChild opens the device, serves a sink on the tunnel address, prints
// "ready <kind> <sink port>" and runs until stdin closes.
func runChild(specJSON string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("error", err)
		return 1
	}
	d, err := Open(Options{Name: spec.Name, Mode: ModeAuto, ListenPort: spec.Port})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer d.Close()
	for _, args := range [][]string{{"addr", "add", spec.Inner + "/24", "dev", spec.Name}, {"link", "set", spec.Name, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Println("error", err, strings.TrimSpace(string(out)))
			return 1
		}
	}
	if err := d.Apply(spec.Private, spec.Port, []ResolvedPeer{spec.Peer}); err != nil {
		fmt.Println("error", err)
		return 1
	}
	s, stop, err := serveSink()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer stop()
	fmt.Println("ready", d.Kind(), s.port)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // returns at EOF
	return 0
}

func TestDeviceInProcessRunningInsideNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	a := &tunnelEnd{ns: nstest.New(t, "pa"), port: 51830, underlay: "10.78.0.1", inner: "192.168.78.1"}
	b := &tunnelEnd{ns: nstest.New(t, "pb"), port: 51831, underlay: "10.78.0.2", inner: "192.168.78.2"}
	a.name, b.name = nstest.UniqueName("wg"), nstest.UniqueName("wg")
	t.Cleanup(func() { assertNothingLeft(t, a.name, b.name) })
	nstest.Veth(t, a.ns, "eth0", a.underlay+"/24", b.ns, "eth0", b.underlay+"/24")
	var err error
	if a.priv, err = GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	if b.priv, err = GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	// Both devices run in child processes that live wholly inside their
	// namespaces, as the broker does. (Opening a device from a thread
	// switched into a namespace, the in-process path of tunnel_test.go,
	// has shown a rare race in wireguard-go's MTU lookup under load.)
	startChild(t, a, childSpec{Name: a.name, Inner: a.inner, Private: a.priv, Port: a.port, Peer: b.asPeer()})
	kind, port := startChild(t, b, childSpec{Name: b.name, Inner: b.inner, Private: b.priv, Port: b.port, Peer: a.asPeer()})
	if want := expectedKind(); kind != want {
		t.Errorf("child device kind %s, want %s", kind, want)
	}
	if err := retry(10*time.Second, func() error { return sendAndVerify(a.ns, b.inner, sink{port: port}, 1<<20, 5*time.Second) }); err != nil {
		t.Fatalf("1 MiB to the child process through the tunnel: %v", err)
	}
	if out := b.ns.Run(t, "ss", "-Hlun", "sport = :"+strconv.Itoa(b.port)); strings.TrimSpace(out) == "" {
		t.Errorf("the child's WireGuard socket is not in its namespace")
	}
}

// startChild runs the test binary as the device process of end e and
// returns the kind it reports and the port of its sink. The child stops
// (closing its device) when the test ends.
func startChild(t *testing.T, e *tunnelEnd, spec childSpec) (string, int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.ns.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(specJSON))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("child: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("child did not stop within 10s after stdin closed")
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(line)
		done <- cmd.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(15 * time.Second):
		t.Fatal("child not ready within 15s")
	}
	var kind string
	var port int
	if _, err := fmt.Sscanf(line, "ready %s %d", &kind, &port); err != nil {
		t.Fatalf("child: %q", line)
	}
	return kind, port
}

// serveSink is startSink for the child, which has no testing.T.
func serveSink() (sink, func(), error) {
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return sink{}, nil, err
	}
	var wg sync.WaitGroup
	go acceptSink(l, &wg)
	return sink{port: l.Addr().(*net.TCPAddr).Port}, func() { l.Close(); wg.Wait() }, nil
}
