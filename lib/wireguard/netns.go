package wireguard

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// wireguard-go opens its UDP sockets in Bind.Open, which runs on whatever
// goroutine brings the device up: the tun event reader when the link goes up,
// or the UAPI handler when the listen port changes. It also reads the MTU
// through a fresh socket ioctl by interface name. Both use the namespace of
// the current OS thread, so when Open ran on a thread switched into another
// namespace (tests with nstest's ns.Do), they would land in the process'
// namespace. netnsPin replays those calls in the namespace Open ran in.

// netnsPin runs functions in a fixed network namespace.
type netnsPin struct {
	pinned bool // false: no switch is needed, ns is None
	// mu guards ns against close while a thread enters it: wireguard-go's
	// tun event reader may still ask for the MTU while the device closes.
	// A closed handle is not open (Close makes it None).
	mu sync.RWMutex
	ns netns.NsHandle
}

// errPinClosed: the device closed, its namespace handle with it.
var errPinClosed = errors.New("the WireGuard device is closed")

// pinCurrentNetns captures the calling thread's namespace when it differs
// from the process' one; otherwise (the product: the whole process runs in
// its namespace) it pins nothing and wireguard-go runs unwrapped.
func pinCurrentNetns() (*netnsPin, error) {
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("read network namespace of this thread: %w", err)
	}
	if !processNetns.IsOpen() {
		cur.Close()
		return nil, fmt.Errorf("read network namespace of this process: %w", processNetnsErr)
	}
	if cur.Equal(processNetns) {
		cur.Close()
		return &netnsPin{ns: netns.None()}, nil
	}
	return &netnsPin{pinned: true, ns: cur}, nil
}

// processNetns is the namespace the process started in, read while package
// initialisation runs on the main thread, before anything can switch a
// thread. (/proc/self/ns/net names the main thread's current namespace,
// which is wrong whenever that thread has been switched.)
var processNetns, processNetnsErr = netns.Get()

func (p *netnsPin) active() bool { return p.pinned }

// do runs fn on a thread in the pinned namespace.
func (p *netnsPin) do(fn func() error) error {
	if !p.active() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine instead of
		// returning to the scheduler in a foreign namespace.
		runtime.LockOSThread()
		p.mu.RLock()
		if !p.ns.IsOpen() {
			p.mu.RUnlock()
			errc <- errPinClosed
			return
		}
		err := netns.Set(p.ns)
		p.mu.RUnlock()
		if err != nil {
			errc <- fmt.Errorf("enter network namespace of the WireGuard device: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (p *netnsPin) close() {
	if !p.pinned {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ns.IsOpen() {
		p.ns.Close()
	}
}

// bind makes b open its sockets in the pinned namespace. Note that
// wireguard-go runs its sticky-source route listener only for an unwrapped
// StdNetBind (it would watch the wrong namespace anyway).
func (p *netnsPin) bind(b conn.Bind) conn.Bind {
	if !p.active() {
		return b
	}
	return &pinnedBind{Bind: b, pin: p}
}

// tun makes t's MTU queries resolve its name in the pinned namespace.
func (p *netnsPin) tun(t tun.Device) tun.Device {
	if !p.active() {
		return t
	}
	return &pinnedTUN{Device: t, pin: p}
}

type pinnedBind struct {
	conn.Bind
	pin *netnsPin
}

func (b *pinnedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	var fns []conn.ReceiveFunc
	var actual uint16
	err := b.pin.do(func() error {
		var err error
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

type pinnedTUN struct {
	tun.Device
	pin *netnsPin
}

func (t *pinnedTUN) MTU() (int, error) {
	var mtu int
	err := t.pin.do(func() error {
		var err error
		mtu, err = t.Device.MTU()
		return err
	})
	return mtu, err
}
