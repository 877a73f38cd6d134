package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Names of the files in a certificate directory, as certwatch writes them
// (the keys of a kubernetes.io/tls Secret).
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
	// RevokedFile (optional) lists the certificates the mesh authority
	// revoked, one per line starting with the serial number in hex:
	// certwatch copies it from the authority's ConfigMap kubelink-mesh-ca.
	// A listed certificate no longer verifies, although the CA signed it
	// and it has not expired.
	RevokedFile = "revoked"
)

// Certs holds this bridge's certificate and the CA it trusts, loaded from a
// directory and reloaded when the files change. The tls.Configs it hands out
// look the current material up per handshake, so a rotation applies to new
// connections at once and leaves established ones alone.
type Certs struct {
	dir string
	cur atomic.Pointer[certMaterial]

	mu      sync.Mutex // serializes reloads
	stamp   string     // file identities of the loaded material
	lastErr error      // of the last failed reload, nil after a good one
}

type certMaterial struct {
	cert    *tls.Certificate
	leaf    *x509.Certificate
	pool    *x509.CertPool
	revoked map[string]bool // serial numbers (hex) no longer accepted
}

// LoadCerts loads tls.crt, tls.key and ca.crt from dir.
func LoadCerts(dir string) (*Certs, error) {
	c := &Certs{dir: dir}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload loads the files again if they changed since the last load (by
// inode, size or modification time) and reports whether it did. On error
// the previous material stays in use; certwatch swaps the files atomically,
// so a half-written set is only seen in passing and fixed by the next call.
func (c *Certs) Reload() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp, err := c.fileStamp()
	if err == nil && stamp == c.stamp {
		return false, nil
	}
	var m *certMaterial
	if err == nil {
		m, err = loadCertMaterial(c.dir)
	}
	if err != nil {
		c.lastErr = err
		return false, err
	}
	c.cur.Store(m)
	c.stamp, c.lastErr = stamp, nil
	return true, nil
}

func (c *Certs) fileStamp() (string, error) {
	var b strings.Builder
	for _, name := range []string{CertFile, KeyFile, CAFile} {
		fi, err := os.Stat(filepath.Join(c.dir, name)) // follows the ..data symlinks of mounted Secrets
		if err != nil {
			return "", err
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%d/%d/%d;", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	// The revocation list is optional: its absence is part of the stamp,
	// so that its appearance or removal is a change too.
	fi, err := os.Stat(filepath.Join(c.dir, RevokedFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		b.WriteString("-")
	case err != nil:
		return "", err
	default:
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// loadRevoked reads the optional revocation list of dir (the format:
// mesh.ParseRevoked). A list that does not parse is an error rather than
// half a list, so the previous material (and its list) stays in use.
func loadRevoked(dir string) (map[string]bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, RevokedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load revocation list: %w", err)
	}
	revoked, err := mesh.ParseRevoked(string(data))
	if err != nil {
		return nil, fmt.Errorf("load revocation list %s: %w", filepath.Join(dir, RevokedFile), err)
	}
	return revoked, nil
}

func loadCertMaterial(dir string) (*certMaterial, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load certificate from %s: %w", dir, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate in %s: %w", dir, err)
	}
	cert.Leaf = leaf
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load CA from %s: no certificate in %s", dir, CAFile)
	}
	revoked, err := loadRevoked(dir)
	if err != nil {
		return nil, err
	}
	return &certMaterial{cert: &cert, leaf: leaf, pool: pool, revoked: revoked}, nil
}

// Watch reloads the files every interval (default 1s) until ctx ends;
// onChange (optional) is called after each successful reload, onError
// (optional) when a reload fails.
func (c *Certs) Watch(ctx context.Context, interval time.Duration, onChange func(), onError func(error)) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := c.Reload()
		switch {
		case err != nil && onError != nil:
			onError(err)
		case changed && onChange != nil:
			onChange()
		}
	}
}

// Err is the error of the last reload, nil if it succeeded.
func (c *Certs) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Leaf is the certificate in use.
func (c *Certs) Leaf() *x509.Certificate { return c.cur.Load().leaf }

// Verify checks that chain (leaf first, as received) is signed by the
// current CA for usage and is not on the revocation list, and returns the
// leaf's identities (see Identities).
func (c *Certs) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) ([]string, error) {
	if len(chain) == 0 {
		return nil, errors.New("peer sent no certificate")
	}
	m := c.cur.Load()
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: m.pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, err
	}
	if err := m.checkRevoked(chain[0]); err != nil {
		return nil, err
	}
	return Identities(chain[0]), nil
}

// checkRevoked fails for a certificate on the revocation list: its holder
// was removed at the mesh authority, and it is still within its validity.
func (m *certMaterial) checkRevoked(cert *x509.Certificate) error {
	if serial := cert.SerialNumber.Text(16); m.revoked[serial] {
		return fmt.Errorf("%w: certificate serial %s of %v was revoked by the mesh authority (its holder is no longer registered there; ConfigMap kubelink-mesh-ca, key revoked)",
			ErrRevoked, serial, URIIdentities(cert))
	}
	return nil
}

// ErrRevoked marks a peer whose certificate verified against the CA but is
// on the mesh authority's revocation list.
var ErrRevoked = errors.New("revoked peer certificate")

// Revoked is the number of certificates on the revocation list in use.
func (c *Certs) Revoked() int { return len(c.cur.Load().revoked) }

// Identities are the names a certificate identifies its holder by: the
// common name, the DNS SANs, the IP SANs and the URI SANs. Only a URI SAN is
// an identity a Link pins (Link.Identity); the others name a host and are
// matched only for links without one.
func Identities(cert *x509.Certificate) []string {
	var ids []string
	if cert.Subject.CommonName != "" {
		ids = append(ids, cert.Subject.CommonName)
	}
	ids = append(ids, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		ids = append(ids, ip.String())
	}
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// URIIdentities are the URI SANs of a certificate.
func URIIdentities(cert *x509.Certificate) []string {
	var ids []string
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// CheckIdentity tells whether a verified peer certificate is the peer a link
// wants: with identity set, one of its URI SANs must be exactly identity
// (the CN and host names are no identity: any member the CA signed could
// carry another's host name); without, host must be among its identities.
func CheckIdentity(cert *x509.Certificate, identity, host string) error {
	if identity != "" {
		if !slices.Contains(URIIdentities(cert), identity) {
			return fmt.Errorf("%w: certificate identifies %v, the link wants %s", ErrWrongIdentity, URIIdentities(cert), identity)
		}
		return nil
	}
	if ids := Identities(cert); !MatchIdentity(ids, host) {
		return fmt.Errorf("%w: certificate is for %v, not %s", ErrWrongIdentity, ids, host)
	}
	return nil
}

// ErrWrongIdentity marks a peer whose certificate verified against the CA
// but names someone else.
var ErrWrongIdentity = errors.New("wrong peer identity")

// MatchIdentity reports whether one of ids names host (case-insensitive,
// no wildcards: bridges are named exactly).
func MatchIdentity(ids []string, host string) bool {
	host = strings.TrimSuffix(host, ".")
	for _, id := range ids {
		if strings.EqualFold(strings.TrimSuffix(id, "."), host) {
			return true
		}
	}
	return false
}

// ServerConfig is for accepting bridge connections: TLS 1.3, the current
// certificate, and a client certificate required and verified against the
// current CA. Which link the client is for is up to the caller (the
// Connector matches its identities).
func (c *Certs) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := c.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				// After the standard chain check: the revocation list
				// of the same material.
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return errors.New("peer sent no certificate")
					}
					return m.checkRevoked(cs.PeerCertificates[0])
				},
			}, nil
		},
	}
}

// ClientConfig is for dialing the bridge at host (an endpoint's host, a
// name or an IP address): TLS 1.3, the current certificate as client
// certificate, and the server verified against the current CA and, by
// CheckIdentity, as the peer identity names (host, when identity is empty).
func (c *Certs) ClientConfig(host, identity string) *tls.Config {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName(host),
		// Verification is done below against the CA of the moment and
		// accepts the CN as well as SANs, which the standard check does not.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := c.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			return CheckIdentity(cs.PeerCertificates[0], identity, host)
		},
	}
}

// serverName is the SNI to send: none for an IP address.
func serverName(host string) string {
	if net.ParseIP(host) != nil {
		return ""
	}
	return host
}
