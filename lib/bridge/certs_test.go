package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCertDir writes cert, its key and ca's certificate into dir, each by
// an atomic rename, the way certwatch swaps them.
func writeCertDir(t *testing.T, dir string, ca *testCA, cert tls.Certificate) {
	t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		CAFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
	}
	for name, data := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func serialOf(t *testing.T, c tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

// tlsPair runs one TLS handshake over loopback between the configs and
// returns the leaf each side saw.
func tlsPair(t *testing.T, server, client *tls.Config) (clientSaw, serverSaw *x509.Certificate, cerr, serr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		cert *x509.Certificate
		err  error
	}
	done := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Read(make([]byte, 1)) // the client's verdict in TLS 1.3
		}
		var cert *x509.Certificate
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			cert = certs[0]
		}
		done <- res{cert, err}
	}()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Write([]byte{1})
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			clientSaw = certs[0]
		}
	}
	c.Close()
	r := <-done
	return clientSaw, r.cert, cerr, r.err
}

func TestCertsReloadAndVerify(t *testing.T) {
	ca := newTestCA(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	first := ca.issue(t, "a.kubelink.test")
	writeCertDir(t, dirA, ca, first)
	writeCertDir(t, dirB, ca, ca.issue(t, "b.kubelink.test"))
	a, err := LoadCerts(dirA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadCerts(dirB)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := a.Reload(); changed || err != nil {
		t.Fatalf("reload of unchanged files: changed %v, %v", changed, err)
	}

	// a as client, b as server: both authenticated.
	cs, ss, cerr, serr := tlsPair(t, b.ServerConfig(), a.ClientConfig("b.kubelink.test:8443", ""))
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if cs.Subject.CommonName != "b.kubelink.test" || ss.SerialNumber.String() != serialOf(t, first) {
		t.Fatalf("client saw %s, server saw serial %s", cs.Subject.CommonName, ss.SerialNumber)
	}

	// The server is not who the client dials.
	if _, _, cerr, _ = tlsPair(t, b.ServerConfig(), a.ClientConfig("c.kubelink.test", "")); cerr == nil || !strings.Contains(cerr.Error(), "not c.kubelink.test") {
		t.Errorf("dialing c but reaching b: %v", cerr)
	}

	// Rotation: the next handshake presents the new client certificate.
	second := ca.issue(t, "a.kubelink.test")
	time.Sleep(10 * time.Millisecond) // a different mtime even on coarse clocks
	writeCertDir(t, dirA, ca, second)
	if changed, err := a.Reload(); !changed || err != nil {
		t.Fatalf("reload after rotation: changed %v, %v", changed, err)
	}
	if _, ss, cerr, serr = tlsPair(t, b.ServerConfig(), a.ClientConfig("b.kubelink.test", "")); cerr != nil || serr != nil {
		t.Fatalf("handshake after rotation: client %v, server %v", cerr, serr)
	}
	if got, want := ss.SerialNumber.String(), serialOf(t, second); got != want {
		t.Errorf("server saw serial %s after rotation, want %s", got, want)
	}

	// A certificate from another CA is refused by both sides.
	other := newTestCA(t)
	dirX := t.TempDir()
	writeCertDir(t, dirX, other, other.issue(t, "b.kubelink.test"))
	x, err := LoadCerts(dirX)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, cerr, _ = tlsPair(t, x.ServerConfig(), a.ClientConfig("b.kubelink.test", "")); cerr == nil || !strings.Contains(cerr.Error(), "unknown authority") {
		t.Errorf("client accepted a server from another CA: %v", cerr)
	}
	// (the client trusts the server, so that the server is the one to judge)
	intruder := ca.clientConfig(other.issue(t, "a.kubelink.test"), "b.kubelink.test")
	if _, _, _, serr = tlsPair(t, b.ServerConfig(), intruder); serr == nil || !strings.Contains(serr.Error(), "unknown authority") {
		t.Errorf("server accepted a client from another CA: %v", serr)
	}

	// A broken set of files keeps the old material.
	if err := os.WriteFile(filepath.Join(dirA, KeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reload(); err == nil || a.Err() == nil {
		t.Error("reload of a broken key succeeded")
	}
	if a.Leaf().SerialNumber.String() != serialOf(t, second) {
		t.Error("a broken reload replaced the certificate")
	}
}

// A revocation list next to the certificates (what certwatch copies from
// the mesh authority) makes a listed certificate fail on both sides of a
// handshake, and in Verify (what Reverify uses for established
// connections), although the CA signed it and it has not expired; another
// certificate of the same member, and the other members, still pass. A
// list that does not parse keeps the previous material.
func TestCertsRevokedCertificates(t *testing.T) {
	ca := newTestCA(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	aCert := ca.issueWithURIs(t, "a.kubelink.test", "kubelink://default/a")
	writeCertDir(t, dirA, ca, aCert)
	bCert := ca.issueWithURIs(t, "b.kubelink.test", "kubelink://default/b")
	writeCertDir(t, dirB, ca, bCert)
	a, err := LoadCerts(dirA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadCerts(dirB)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(c tls.Certificate) *x509.Certificate {
		l, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	bLeaf := leaf(bCert)
	handshakes := func() (asClient, asServer error) {
		// A dials B (B is the server A judges), then B dials A (B is the
		// client A judges).
		_, _, asClient, _ = tlsPair(t, b.ServerConfig(), a.ClientConfig("b.kubelink.test", "kubelink://default/b"))
		_, _, _, asServer = tlsPair(t, a.ServerConfig(), b.ClientConfig("a.kubelink.test", "kubelink://default/a"))
		return asClient, asServer
	}
	if c, s := handshakes(); c != nil || s != nil {
		t.Fatalf("without a list: A dialing %v, A accepting %v", c, s)
	}
	writeRevoked := func(content string) {
		t.Helper()
		tmp := filepath.Join(dirA, ".revoked.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dirA, RevokedFile)); err != nil {
			t.Fatal(err)
		}
	}

	// B's certificate revoked (the list as certwatch writes it, upper-case
	// hex accepted too).
	serial := bLeaf.SerialNumber.Text(16)
	writeRevoked("# revoked by the mesh authority\n" + strings.ToUpper(serial) + " 2030-01-01T00:00:00Z kubelink://default/b\n\nff 2030-01-01T00:00:00Z kubelink://default/z\n")
	if changed, err := a.Reload(); !changed || err != nil {
		t.Fatalf("reload after the list appeared: changed %v, %v", changed, err)
	}
	if a.Revoked() != 2 {
		t.Errorf("%d certificates revoked, want 2", a.Revoked())
	}
	c, s := handshakes()
	for what, err := range map[string]error{"dialing B": c, "accepting B": s} {
		if err == nil || !strings.Contains(err.Error(), serial) || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("A %s with B's certificate revoked: %v", what, err)
		}
	}
	if _, err := a.Verify([]*x509.Certificate{bLeaf}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrRevoked) {
		t.Errorf("Verify of B's certificate: %v, want ErrRevoked", err)
	}
	// B, whose list is empty, still accepts A (the client here trusts B
	// whatever A's list says); a new certificate of B and another member
	// pass at A.
	if _, _, cerr, serr := tlsPair(t, b.ServerConfig(), ca.clientConfig(aCert, "b.kubelink.test")); cerr != nil || serr != nil {
		t.Errorf("B refused A: %v (client %v)", serr, cerr)
	}
	for _, other := range []tls.Certificate{ca.issueWithURIs(t, "b.kubelink.test", "kubelink://default/b"), ca.issueWithURIs(t, "c.kubelink.test", "kubelink://default/c")} {
		if _, err := a.Verify([]*x509.Certificate{leaf(other)}, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("%v, not revoked: %v", leaf(other).URIs, err)
		}
	}

	// A list that does not parse: refused, the previous one stays.
	writeRevoked(serial + "\nnot-a-serial x\n")
	if _, err := a.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("reload of a broken list: %v", err)
	}
	if _, err := a.Verify([]*x509.Certificate{bLeaf}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrRevoked) {
		t.Errorf("after a broken list: %v, want the previous list (B revoked)", err)
	}

	// The certificate expired, the list no longer names it.
	if err := os.Remove(filepath.Join(dirA, RevokedFile)); err != nil {
		t.Fatal(err)
	}
	if changed, err := a.Reload(); !changed || err != nil {
		t.Fatalf("reload after the list went: changed %v, %v", changed, err)
	}
	if c, s := handshakes(); c != nil || s != nil {
		t.Errorf("after the list went: A dialing %v, A accepting %v", c, s)
	}
}
