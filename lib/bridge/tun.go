package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// virtioHdrLen is the size of struct virtio_net_hdr, which precedes every
// packet on a tun device opened with IFF_VNET_HDR.
const virtioHdrLen = 10

// The offloads we take from the kernel. Without TUN_F_TSO_ECN the kernel
// segments ECN-marked super-packets itself before handing them over.
const (
	tunTCPOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	tunUDPOffloads = unix.TUN_F_USO4 | unix.TUN_F_USO6 // Linux >= 6.2
)

// errWouldBlock ends a burst of reads: the device has nothing more now.
var errWouldBlock = errors.New("tun: no packet ready")

// TUN is the tun device shared by all peers. wireguard-go's tun package
// creates it (with IFF_VNET_HDR and TCP offloads) and watches its link
// state; the packets themselves are read and written here, on its file
// descriptor, with their virtio-net header. That keeps GSO super-packets
// whole: wireguard-go's own Read would cut them into MTU-sized segments (and
// compute their checksums) that its Write then coalesces again.
type TUN struct {
	dev    tun.Device
	file   *os.File
	raw    syscall.RawConn
	name   string
	events chan struct{} // closed when the event channel is drained
}

// OpenTUN creates the tun device name with the given MTU in the network
// namespace of the calling thread. Unlike lib/wireguard's device, nothing
// here looks the device up by name later (the MTU is only set at creation),
// so it needs no pinning to that namespace.
func OpenTUN(name string, mtu int) (*TUN, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun device %s (needs /dev/net/tun and CAP_NET_ADMIN): %w", name, err)
	}
	t := &TUN{dev: dev, file: dev.File(), events: make(chan struct{})}
	// wireguard-go blocks its link watchers until someone takes the events.
	go func() {
		defer close(t.events)
		for range dev.Events() {
		}
	}()
	if t.name, err = dev.Name(); err == nil {
		t.raw, err = t.file.SyscallConn()
	}
	if err == nil {
		var cerr error
		err = t.raw.Control(func(fd uintptr) { cerr = setupOffloads(int(fd)) })
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	return t, nil
}

// setupOffloads checks that the descriptor carries virtio-net headers of the
// size we parse and sets the offloads we handle, rather than trusting
// whatever the creator chose.
func setupOffloads(fd int) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return fmt.Errorf("read tun flags: %w", err)
	}
	if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
		return errors.New("opened without IFF_VNET_HDR; offloads unavailable")
	}
	if sz, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); err != nil || sz != virtioHdrLen {
		return fmt.Errorf("virtio-net header size %d (%v), want %d", sz, err, virtioHdrLen)
	}
	if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads|tunUDPOffloads) == nil {
		return nil
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads); err != nil {
		return fmt.Errorf("enable TCP offloads: %w", err)
	}
	return nil
}

// Name is the interface name.
func (t *TUN) Name() string { return t.name }

// Close removes the device.
func (t *TUN) Close() error {
	err := t.dev.Close()
	<-t.events
	return err
}

// read reads one packet with its virtio-net header into b. Without wait it
// returns errWouldBlock instead of waiting for a packet.
func (t *TUN) read(b []byte, wait bool) (int, error) {
	var n int
	var rerr error
	err := t.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b)
			if rerr != unix.EINTR {
				break
			}
		}
		return !wait || rerr != unix.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr == unix.EBADFD:
		return 0, os.ErrClosed
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	}
	return n, nil
}

// write writes one packet with its virtio-net header. Peers write
// concurrently: a tun write is one packet and the kernel takes them in
// parallel, so this avoids os.File's per-descriptor write lock.
func (t *TUN) write(b []byte) error {
	var werr error
	err := t.raw.Control(func(fd uintptr) {
		for {
			_, werr = unix.Write(int(fd), b)
			if werr != unix.EINTR {
				return
			}
		}
	})
	if err == nil && werr == unix.EAGAIN {
		// The kernel queue is full (practically never for a tun): wait.
		err = t.raw.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), b)
			return werr != unix.EAGAIN
		})
	}
	if err != nil {
		return err
	}
	if werr != nil {
		return os.NewSyscallError("write", werr)
	}
	return nil
}

// interruptRead makes a waiting read return (with a deadline error) and
// every later one until resumeRead.
func (t *TUN) interruptRead() { _ = t.file.SetReadDeadline(time.Unix(1, 0)) }
func (t *TUN) resumeRead()    { _ = t.file.SetReadDeadline(time.Time{}) }

// The virtio-net header is in the host's byte order (we never switch the
// device to big or little endian explicitly).
var vnet = binary.NativeEndian

// offloadFromVirtio converts the kernel's header of a packet read from the
// device.
func offloadFromVirtio(h []byte) (Offload, error) {
	var o Offload
	if h[0]&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
		o.PartialChecksum = true
		o.CsumStart, o.CsumOffset = vnet.Uint16(h[6:8]), vnet.Uint16(h[8:10])
	}
	switch h[1] {
	case unix.VIRTIO_NET_HDR_GSO_NONE:
		return o, nil
	case unix.VIRTIO_NET_HDR_GSO_TCPV4:
		o.GSO = GSOTCPv4
	case unix.VIRTIO_NET_HDR_GSO_TCPV6:
		o.GSO = GSOTCPv6
	case unix.VIRTIO_NET_HDR_GSO_UDP_L4:
		o.GSO = GSOUDP
	default:
		return o, fmt.Errorf("%w: virtio GSO type %#x", ErrMalformed, h[1])
	}
	o.GSOSize = vnet.Uint16(h[4:6])
	return o, nil
}

// putVirtio writes the header for a packet written to the device; hdrLen is
// the length of its IP and transport headers.
func putVirtio(h []byte, o Offload, hdrLen int) {
	clear(h[:virtioHdrLen])
	if !o.PartialChecksum {
		return
	}
	h[0] = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	switch o.GSO {
	case GSOTCPv4:
		h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV4
	case GSOTCPv6:
		h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV6
	case GSOUDP:
		h[1] = unix.VIRTIO_NET_HDR_GSO_UDP_L4
	}
	vnet.PutUint16(h[2:4], uint16(hdrLen))
	vnet.PutUint16(h[4:6], o.GSOSize)
	vnet.PutUint16(h[6:8], o.CsumStart)
	vnet.PutUint16(h[8:10], o.CsumOffset)
}
