package bridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Handshake sends local's HELLO on a fresh connection and reads the peer's,
// both within timeout. Both sides send first, so neither waits for the
// other. When the versions do not overlap it tells the peer with a CLOSE
// frame. The caller then checks the peer's HELLO against what it expects
// (and says CloseRejected with SendClose if it does not want the peer)
// before handing the connection to Pump.AddPeer.
func Handshake(conn net.Conn, local Hello, timeout time.Duration) (Hello, error) {
	frame, err := AppendHello(nil, local)
	if err != nil {
		return Hello{}, err
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Hello{}, err
	}
	defer conn.SetDeadline(time.Time{})
	sent := make(chan error, 1)
	go func() {
		_, err := conn.Write(frame)
		sent <- err
	}()
	remote, rerr := readHello(conn)
	if err := <-sent; err != nil && rerr == nil {
		rerr = fmt.Errorf("send HELLO: %w", err)
	}
	if rerr != nil {
		return Hello{}, rerr
	}
	return negotiated(conn, local, remote)
}

// negotiated checks that local and remote share a version, and tells the
// peer with a CLOSE frame when they do not.
func negotiated(conn net.Conn, local, remote Hello) (Hello, error) {
	if _, err := Negotiate(local, remote); err != nil {
		_, _ = conn.Write(AppendClose(nil, CloseUnsupportedVersion, err.Error()))
		return Hello{}, err
	}
	return remote, nil
}

// HandshakeAnswering is Handshake for an accepting side that announces
// different HELLOs to different peers (one cluster address per mesh): it
// reads the peer's HELLO first and answers with choose(peer's HELLO). The
// frames are those of Handshake; only the accepting side's order differs,
// which a dialing side cannot tell, as it sends its HELLO without waiting.
// It returns the peer's HELLO and the one sent.
func HandshakeAnswering(conn net.Conn, choose func(remote Hello) Hello, timeout time.Duration) (remote, local Hello, err error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Hello{}, Hello{}, err
	}
	defer conn.SetDeadline(time.Time{})
	if remote, err = readHello(conn); err != nil {
		return Hello{}, Hello{}, err
	}
	local = choose(remote)
	frame, err := AppendHello(nil, local)
	if err != nil {
		return Hello{}, Hello{}, err
	}
	if _, err := conn.Write(frame); err != nil {
		return Hello{}, Hello{}, fmt.Errorf("send HELLO: %w", err)
	}
	remote, err = negotiated(conn, local, remote)
	return remote, local, err
}

// maxFramesBeforeHello bounds what a peer may send ahead of its HELLO
// (frames of unknown types are skipped).
const maxFramesBeforeHello = 4

func readHello(conn net.Conn) (Hello, error) {
	var hdr [FrameHeaderLen]byte
	for range maxFramesBeforeHello {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return Hello{}, fmt.Errorf("read HELLO: %w", err)
		}
		t, n, err := ParseFrameHeader(hdr[:])
		if err != nil {
			return Hello{}, fmt.Errorf("read HELLO: %w", err)
		}
		if t == FramePackets {
			return Hello{}, errors.New("read HELLO: got PACKETS before the handshake")
		}
		payload := make([]byte, n) // n is bounded by ParseFrameHeader
		if _, err := io.ReadFull(conn, payload); err != nil {
			return Hello{}, fmt.Errorf("read HELLO: %w", err)
		}
		switch t {
		case FrameHello:
			return ParseHello(payload)
		case FrameClose:
			ce, err := ParseClose(payload)
			if err != nil {
				return Hello{}, fmt.Errorf("read HELLO: %w", err)
			}
			return Hello{}, ce
		}
	}
	return Hello{}, fmt.Errorf("read HELLO: %w: no HELLO in the first %d frames", ErrMalformed, maxFramesBeforeHello)
}

// SendClose tells the peer why the connection ends and closes it.
func SendClose(conn net.Conn, code CloseCode, reason string, timeout time.Duration) error {
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := conn.Write(AppendClose(nil, code, reason))
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return err
}
