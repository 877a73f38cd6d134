package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/kubelink/kubelink/lib/mesh"
)

// userspaceLink is wireguard-go on a tun device, configured through its UAPI
// socket in /var/run/wireguard exactly like wg(8) configures it.
type userspaceLink struct {
	dev  *device.Device
	uapi net.Listener
	pin  *netnsPin
	log  *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	once   sync.Once
	stop   chan struct{} // ends trimStaged
	// sessions are the peers with a session at trimStaged's last check.
	sessions atomic.Pointer[map[device.NoisePublicKey]bool]
}

func openUserspace(name string, mtu int, addrs func() []netip.Prefix, log *slog.Logger) (*userspaceLink, error) {
	pin, err := pinCurrentNetns()
	if err != nil {
		return nil, err
	}
	tunDev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		pin.close()
		return nil, fmt.Errorf("create tun device %s for wireguard-go (needs /dev/net/tun and CAP_NET_ADMIN): %w", name, err)
	}
	var td tun.Device = tunDev
	if addrs != nil {
		td = &icmpTUN{Device: tunDev, addrs: addrs}
	}
	dev := device.NewDevice(pin.tun(td), pin.bind(conn.NewDefaultBind()), wgLogger(log))
	uapi, err := listenUAPI(name)
	if err != nil {
		dev.Close()
		pin.close()
		return nil, err
	}
	u := &userspaceLink{dev: dev, uapi: uapi, pin: pin, log: log, conns: map[net.Conn]struct{}{}, stop: make(chan struct{})}
	u.wg.Add(2)
	go u.serve()
	go u.trimStaged(u.stop)
	return u, nil
}

// icmpTUN gives the ICMP errors read from the tun device a source the
// peers accept (mesh.RewriteICMPErrorSource).
type icmpTUN struct {
	tun.Device
	addrs func() []netip.Prefix
}

func (t *icmpTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		mesh.RewriteICMPErrorSource(bufs[i][offset:offset+sizes[i]], t.addrs)
	}
	return n, err
}

func listenUAPI(name string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("open UAPI socket for WireGuard device %s (is another process serving a device of that name?): %w", name, err)
	}
	// UAPIListen works on a duplicate of the descriptor.
	defer f.Close()
	l, err := ipc.UAPIListen(name, f)
	if err != nil {
		return nil, fmt.Errorf("listen on UAPI socket for WireGuard device %s: %w", name, err)
	}
	return l, nil
}

// serve answers wgctrl and wg(8) on the UAPI socket until close.
func (u *userspaceLink) serve() {
	defer u.wg.Done()
	for {
		c, err := u.uapi.Accept()
		if err != nil {
			u.mu.Lock()
			closed := u.closed
			u.mu.Unlock()
			if !closed {
				// The socket file was removed or broke: the device can no
				// longer be configured, which Apply will report.
				u.log.Error("UAPI socket stopped; WireGuard device cannot be configured until restarted", "error", err)
			}
			return
		}
		if !u.track(c) {
			_ = c.Close()
			return
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer u.untrack(c)
			u.dev.IpcHandle(c)
		}()
	}
}

func (u *userspaceLink) track(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.conns[c] = struct{}{}
	return true
}

func (u *userspaceLink) untrack(c net.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.conns, c)
}

// close stops answering on the socket (removing it), then stops the device,
// which closes the tun and so removes the interface.
func (u *userspaceLink) close() error {
	var err error
	u.once.Do(func() {
		u.mu.Lock()
		u.closed = true
		for c := range u.conns {
			_ = c.Close()
		}
		u.mu.Unlock()
		close(u.stop)
		if cerr := u.uapi.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close UAPI socket: %w", cerr)
		}
		u.wg.Wait()
		u.dev.Close()
		u.pin.close()
	})
	return err
}

// remove is close: a tun interface lives only as long as its descriptor.
func (u *userspaceLink) remove() error { return u.close() }

// wgLogger sends wireguard-go's chatter to debug and its errors to error.
func wgLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			log.Debug(fmt.Sprintf(format, args...), "source", "wireguard-go")
		},
		Errorf: func(format string, args ...any) {
			log.Error(fmt.Sprintf(format, args...), "source", "wireguard-go")
		},
	}
}
