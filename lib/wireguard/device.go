// Package wireguard runs the WireGuard device of a cluster: the kernel module
// when the node has it, otherwise the embedded wireguard-go on a tun device.
// Both kinds are configured and read through wgctrl (genetlink for the kernel,
// the UAPI socket for wireguard-go), so there is one code path for
// configuration and statistics.
package wireguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Modes accepted in Options.Mode.
const (
	ModeAuto      = "auto"
	ModeKernel    = "kernel"
	ModeUserspace = "userspace"
)

// Kinds returned by Device.Kind; they appear in status and in a metric.
const (
	KindKernel    = "wireguard-kernel"
	KindUserspace = "wireguard-userspace"
)

// DefaultMTU leaves room for the WireGuard overhead on a 1500-byte underlay.
const DefaultMTU = 1420

// maxNameLen is IFNAMSIZ minus the terminating NUL.
const maxNameLen = 15

// Options select and shape the device.
type Options struct {
	// Name of the interface; with wireguard-go also the name of the UAPI
	// socket in /var/run/wireguard, which network namespaces do not
	// separate, so it must be unique on the machine.
	Name string
	// Mode is auto (kernel, else wireguard-go), kernel or userspace.
	Mode string
	// MTU of the interface; 0 means DefaultMTU.
	MTU int
	// ListenPort is set at open so the device listens as soon as it is up;
	// 0 leaves it to Apply (or a random port).
	ListenPort int
	// Logger receives wireguard-go's messages; nil discards them.
	Logger *slog.Logger
	// LocalAddresses, if set, are the local cluster addresses (with their
	// mesh's prefix length) that wireguard-go gives the ICMP errors it
	// reads from the tun device as their source
	// (mesh.RewriteICMPErrorSource). The kernel module cannot: with it,
	// such errors from node or pod addresses stay dropped at the peer.
	LocalAddresses func() []netip.Prefix
}

// link is what differs between the kernel and the userspace device: how the
// interface comes and goes. Configuration goes through wgctrl for both.
type link interface {
	// close releases what this process holds.
	close() error
	// remove deletes the interface.
	remove() error
	// sessionless reports that packets for the peer would be queued in
	// this process until a handshake (see Device.Sessionless).
	sessionless(key [32]byte) bool
}

// wgClient is the part of *wgctrl.Client the device uses: reading and
// configuring by name works the same for kernel and wireguard-go devices.
type wgClient interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

// Device is an open WireGuard interface.
type Device struct {
	name     string
	kind     string
	fallback string
	link     link

	// mu serializes use of client and the roaming bookkeeping in lastRx.
	mu     sync.Mutex
	client wgClient
	lastRx map[wgtypes.Key]rxMark
	closed bool

	// crossed handshakes (crossing.go)
	pending          map[wgtypes.Key]*pendingPeer
	held             map[wgtypes.Key]*heldPeer
	crossingStop     chan struct{}
	crossingDone     chan struct{}
	crossingRestarts int
}

// Open creates or reuses the interface. It must run in the network namespace
// the device belongs to (for tests: inside nstest's ns.Do); later calls may
// come from any goroutine. The caller assigns addresses and sets the link up.
func Open(opts Options) (*Device, error) {
	if err := validName(opts.Name); err != nil {
		return nil, err
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log := opts.Logger.With("device", opts.Name)
	d := &Device{name: opts.Name}
	var err error
	switch opts.Mode {
	case ModeKernel:
		d.link, err = openKernel(opts.Name, opts.MTU)
		d.kind = KindKernel
	case ModeUserspace:
		d.link, err = openUserspace(opts.Name, opts.MTU, opts.LocalAddresses, log)
		d.kind = KindUserspace
	case ModeAuto, "":
		d.link, d.kind, d.fallback, err = openAuto(opts, log)
	default:
		return nil, fmt.Errorf("WireGuard mode %q: use %s, %s or %s", opts.Mode, ModeAuto, ModeKernel, ModeUserspace)
	}
	if err != nil {
		return nil, err
	}
	// wgctrl opens its genetlink socket here, on the caller's thread, so a
	// kernel device is reached in the caller's namespace later on too.
	client, err := wgctrl.New()
	if err != nil {
		_ = d.link.close()
		return nil, fmt.Errorf("open WireGuard control client: %w", err)
	}
	d.client = client
	if opts.ListenPort != 0 {
		port := opts.ListenPort
		if err := d.client.ConfigureDevice(d.name, wgtypes.Config{ListenPort: &port}); err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("set listen port %d on WireGuard device %s: %w", port, d.name, err)
		}
	}
	return d, nil
}

// openAuto prefers the kernel module and falls back to wireguard-go only when
// the kernel lacks WireGuard; other errors (permissions, name clashes) would
// hit the userspace device too and are returned.
func openAuto(opts Options, log *slog.Logger) (l link, kind, reason string, err error) {
	l, err = openKernel(opts.Name, opts.MTU)
	if err == nil {
		return l, KindKernel, "", nil
	}
	if !isMissingKernelModule(err) {
		return nil, "", "", err
	}
	reason = err.Error()
	log.Info("kernel WireGuard unavailable, using wireguard-go", "reason", reason)
	l, err = openUserspace(opts.Name, opts.MTU, opts.LocalAddresses, log)
	if err != nil {
		return nil, "", "", fmt.Errorf("%w (kernel WireGuard unavailable too: %s)", err, reason)
	}
	return l, KindUserspace, reason, nil
}

func validName(name string) error {
	switch {
	case name == "":
		return errors.New("WireGuard device name is empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("WireGuard device name %q is longer than %d characters", name, maxNameLen)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("WireGuard device name %q is not a valid interface name", name)
	}
	return nil
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// Kind is KindKernel or KindUserspace.
func (d *Device) Kind() string { return d.kind }

// FallbackReason says why auto mode did not use the kernel module; empty
// when it did or when the mode was explicit.
func (d *Device) FallbackReason() string { return d.fallback }

// Close releases the device. A wireguard-go device stops with its socket and
// tun; a kernel device stays (with its peers) so that a restart of this
// process does not interrupt traffic.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	stop, done := d.crossingStop, d.crossingDone
	d.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if d.client != nil {
		errs = append(errs, d.client.Close())
	}
	errs = append(errs, d.link.close())
	return errors.Join(errs...)
}

// Delete removes the interface of either kind (for --cleanup) and closes the
// device.
func (d *Device) Delete() error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return errClosed
	}
	err := d.link.remove()
	return errors.Join(err, d.Close())
}

// Sessionless reports that the embedded device has no session with the
// peer (as of its last check, every 250 ms; a peer added since has none),
// so a packet sent to it now waits in a 64 KiB buffer until a handshake
// (staged.go). It is always false for the kernel device, which queues such
// packets at their own size outside this process.
func (d *Device) Sessionless(peer mesh.Key) bool { return d.link.sessionless(peer) }

// errClosed is returned by methods called after Close.
var errClosed = errors.New("WireGuard device is closed")
