package nstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestVethConnectsTwoNamespacesAndDoEntersThem(t *testing.T) {
	a, b := New(t, "a"), New(t, "b")
	Veth(t, a, "eth0", "10.99.0.1/24", b, "eth0", "10.99.0.2/24")
	// A TCP server inside b, reached from a: proves Do switches namespaces
	// for sockets and that the veth carries traffic.
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", "10.99.0.2:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	var got string
	err := a.Do(func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 5)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		got = string(buf[:n])
		return err
	})
	if err != nil || got != "hello" {
		t.Fatalf("dial across veth: %q, %v", got, err)
	}
	// The root namespace must not see the address.
	if out := Run(t, "ip", "-o", "addr"); strings.Contains(out, "10.99.0.1/24") {
		t.Error("address leaked into the root namespace")
	}
}

func TestBridgeJoinsSeveralNamespaces(t *testing.T) {
	sw, a, b := New(t, "sw"), New(t, "a"), New(t, "b")
	plug := Bridge(t, sw, "br0")
	plug(a, "eth0", "10.98.0.1/24")
	plug(b, "eth0", "10.98.0.2/24")
	a.Run(t, "ip", "neigh", "flush", "all")
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", "10.98.0.2:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if err := a.Do(func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("dial across bridge: %v", err)
	}
}

// Two processes must never get the same name: with a variable-width process
// part, process 0xce's 255th name and process 0xcef's 15th were equal.
func TestUniqueNameIsUnambiguousAcrossProcesses(t *testing.T) {
	seen := map[string]string{}
	for _, pid := range []int{0x1, 0xc, 0xce, 0xcef, 0x12, 0x123, 0xfff} {
		for n := int32(1); n <= 0x1000; n++ {
			name := uniqueName(pid, n, "wg")
			if len(name) > 15 {
				t.Fatalf("uniqueName(%#x, %d) = %q: longer than an interface name may be", pid, n, name)
			}
			who := fmt.Sprintf("pid %#x name %d", pid, n)
			if prev, ok := seen[name]; ok {
				t.Fatalf("%s and %s both get %q", prev, who, name)
			}
			seen[name] = who
		}
	}
}
