package certwatch

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/testenv"
	"github.com/kubelink/kubelink/lib/wireguard"
)

type env struct {
	t    *testing.T
	cp   *testenv.ControlPlane
	kube client.Client
}

func (e *env) start(cfg Config) *Controller {
	e.t.Helper()
	return startController(e.t, cfg, e.cp.Config())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) ns(name string) string {
	e.t.Helper()
	if err := e.kube.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *env) secret(ns, name string) *corev1.Secret {
	var s corev1.Secret
	if err := e.kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return nil
	}
	return &s
}

// eventually polls cond for up to 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func fileIs(path string, want []byte) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Equal(b, want)
}

func tlsData(t *testing.T, cn string) map[string][]byte {
	t.Helper()
	now := time.Now()
	caCrt, caKey, err := NewCA(now, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := IssueCert(caCrt, caKey, cn, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{KeyTLSCert: crt, KeyTLSKey: key, KeyCACert: caCrt}
}

func TestController(t *testing.T) {
	cp := testenv.StartForTest(t)
	kube, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("none mode materialises and swaps atomically", func(t *testing.T) {
		e := &env{t: t, cp: cp, kube: kube}
		ns := e.ns("none")
		dir := t.TempDir()
		data := tlsData(t, "a.example.com")
		tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls"}, Data: data}
		must(t, kube.Create(ctx, tlsSecret))
		k, _ := wireguard.GeneratePrivateKey()
		// The README's spelling is accepted too.
		must(t, kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wg"},
			Data: map[string][]byte{KeyWireGuardPrivateAlt: []byte(k.String())}}))
		cfg := Defaults()
		cfg.Namespace, cfg.TLSSecret, cfg.WireGuardSecret, cfg.Dir, cfg.MetricsAddr = ns, "tls", "wg", dir, ""
		e.start(cfg)

		tdir := filepath.Join(dir, TLSDir)
		eventually(t, "TLS files", func() bool {
			return fileIs(filepath.Join(tdir, "tls.crt"), data[KeyTLSCert]) && fileIs(filepath.Join(tdir, "tls.key"), data[KeyTLSKey]) &&
				fileIs(filepath.Join(tdir, "ca.crt"), data[KeyCACert])
		})
		eventually(t, "WireGuard files", func() bool {
			return fileIs(filepath.Join(dir, WireGuardDir, FilePrivateKey), []byte(k.String()+"\n")) &&
				fileIs(filepath.Join(dir, WireGuardDir, FilePublicKey), []byte(wireguard.PublicKey(k).String()+"\n"))
		})
		if st, err := os.Stat(filepath.Join(tdir, "tls.key")); err != nil || st.Mode().Perm() != KeyFileMode {
			t.Errorf("tls.key: %v %v", st, err)
		}
		if st, err := os.Stat(filepath.Join(dir, WireGuardDir, FilePrivateKey)); err != nil || st.Mode().Perm() != KeyFileMode {
			t.Errorf("privatekey: %v %v", st, err)
		}
		if s := e.secret(ns, "wg"); s == nil || len(s.Data) != 1 {
			t.Errorf("an existing key was rewritten: %v", s)
		}
		first, _ := os.Readlink(filepath.Join(tdir, DataLink))

		// Rotate several times while a reader polls the files.
		stop := make(chan struct{})
		readerErr := make(chan error, 1)
		go func() {
			defer close(readerErr)
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := ReadSnapshot(tdir, "tls.crt", "tls.key")
				if err != nil {
					readerErr <- err
					return
				}
				if _, err := CheckCert(m["tls.crt"], m["tls.key"], nil, "", time.Now()); err != nil && strings.Contains(err.Error(), "tls.crt/tls.key") {
					readerErr <- err
					return
				}
				if b, err := os.ReadFile(filepath.Join(tdir, "tls.crt")); err == nil {
					if _, err := ParseCertificate(b); err != nil {
						readerErr <- errors.New("partial tls.crt")
						return
					}
				} else if !errors.Is(err, fs.ErrNotExist) {
					readerErr <- err
					return
				}
			}
		}()
		var last map[string][]byte
		for i := range 3 {
			last = tlsData(t, "a.example.com")
			s := e.secret(ns, "tls")
			s.Data = last
			must(t, kube.Update(ctx, s))
			eventually(t, "rotation "+string(rune('1'+i)), func() bool { return fileIs(filepath.Join(tdir, "tls.crt"), last[KeyTLSCert]) })
		}
		close(stop)
		if err := <-readerErr; err != nil {
			t.Errorf("reader during rotation: %v", err)
		}
		if now, _ := os.Readlink(filepath.Join(tdir, DataLink)); now == first {
			t.Error("..data did not change")
		}
		if _, err := os.Stat(filepath.Join(tdir, first)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("old data dir %s still there: %v", first, err)
		}
		if !fileIs(filepath.Join(tdir, "tls.key"), last[KeyTLSKey]) || !fileIs(filepath.Join(tdir, "ca.crt"), last[KeyCACert]) {
			t.Error("tls.key/ca.crt not swapped with tls.crt")
		}
		// none mode never writes the TLS Secret.
		if s := e.secret(ns, "tls"); s == nil || len(s.Data[KeyCAKey]) != 0 {
			t.Error("none mode wrote the Secret")
		}
	})

	t.Run("self mode creates CA, certificate and WireGuard key and renews", func(t *testing.T) {
		e := &env{t: t, cp: cp, kube: kube}
		ns := e.ns("self")
		dir := t.TempDir()
		cfg := Defaults()
		cfg.Namespace, cfg.TLSSecret, cfg.WireGuardSecret, cfg.Dir, cfg.MetricsAddr = ns, "tls", "wg", dir, ""
		cfg.Mode, cfg.DNSName, cfg.CertValidity = ModeSelf, "kubelink.cluster-a.example.com", 9*time.Second
		e.start(cfg)

		var s *corev1.Secret
		eventually(t, "TLS Secret", func() bool { s = e.secret(ns, "tls"); return s != nil })
		for _, k := range []string{KeyTLSCert, KeyTLSKey, KeyCACert, KeyCAKey} {
			if len(s.Data[k]) == 0 {
				t.Fatalf("Secret lacks %s", k)
			}
		}
		cert, err := CheckCert(s.Data[KeyTLSCert], s.Data[KeyTLSKey], s.Data[KeyCACert], cfg.DNSName, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		tdir := filepath.Join(dir, TLSDir)
		eventually(t, "TLS files", func() bool { return fileIs(filepath.Join(tdir, "tls.crt"), s.Data[KeyTLSCert]) })
		if _, err := os.Stat(filepath.Join(tdir, KeyCAKey)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ca.key written to disk: %v", err)
		}
		var wg *corev1.Secret
		eventually(t, "WireGuard Secret", func() bool { wg = e.secret(ns, "wg"); return wg != nil })
		priv, err := mesh.ParseKey(string(wg.Data[KeyWireGuardPrivate]))
		if err != nil {
			t.Fatal(err)
		}
		if string(wg.Data[KeyWireGuardPublic]) != wireguard.PublicKey(priv).String() {
			t.Error("WireguardPublicKey does not match")
		}
		eventually(t, "WireGuard file", func() bool {
			return fileIs(filepath.Join(dir, WireGuardDir, FilePrivateKey), []byte(priv.String()+"\n"))
		})

		// Renewal: with 9s validity (backdated 0.9s), a new certificate comes about 6.6s after issue.
		deadline := cert.NotAfter.Add(-time.Second)
		var renewed *corev1.Secret
		for time.Now().Before(deadline) {
			if r := e.secret(ns, "tls"); r != nil && !bytes.Equal(r.Data[KeyTLSCert], s.Data[KeyTLSCert]) {
				renewed = r
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if renewed == nil {
			t.Fatalf("no renewal before %s", deadline)
		}
		if !bytes.Equal(renewed.Data[KeyCACert], s.Data[KeyCACert]) || !bytes.Equal(renewed.Data[KeyCAKey], s.Data[KeyCAKey]) {
			t.Error("renewal replaced the CA")
		}
		if _, err := CheckCert(renewed.Data[KeyTLSCert], renewed.Data[KeyTLSKey], s.Data[KeyCACert], cfg.DNSName, time.Now()); err != nil {
			t.Errorf("renewed certificate: %v", err)
		}
		eventually(t, "renewed files", func() bool { return fileIs(filepath.Join(tdir, "tls.crt"), renewed.Data[KeyTLSCert]) })
		// The WireGuard key stays.
		if wg2 := e.secret(ns, "wg"); !bytes.Equal(wg2.Data[KeyWireGuardPrivate], wg.Data[KeyWireGuardPrivate]) {
			t.Error("WireGuard key changed")
		}
	})

	t.Run("self mode uses a given CA; WireGuard key added to an existing Secret", func(t *testing.T) {
		e := &env{t: t, cp: cp, kube: kube}
		ns := e.ns("given")
		caCrt, caKey, _ := NewCA(time.Now(), CAValidity)
		must(t, kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls"},
			Data: map[string][]byte{KeyCACert: caCrt, KeyCAKey: caKey}}))
		must(t, kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wg"},
			Data: map[string][]byte{"other": []byte("kept")}}))
		// A Secret with only ca.crt cannot be used for signing: clear error, nothing replaced.
		must(t, kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nokey"},
			Data: map[string][]byte{KeyCACert: caCrt}}))
		dir := t.TempDir()
		cfg := Defaults()
		cfg.Namespace, cfg.TLSSecret, cfg.WireGuardSecret, cfg.Dir, cfg.MetricsAddr = ns, "tls", "wg", dir, ""
		cfg.Mode, cfg.DNSName = ModeSelf, "b.example.com"
		e.start(cfg)
		eventually(t, "certificate from the given CA", func() bool {
			s := e.secret(ns, "tls")
			_, err := CheckCert(s.Data[KeyTLSCert], s.Data[KeyTLSKey], caCrt, "b.example.com", time.Now())
			return err == nil && bytes.Equal(s.Data[KeyCAKey], caKey)
		})
		eventually(t, "key in the existing Secret", func() bool {
			s := e.secret(ns, "wg")
			_, err := mesh.ParseKey(string(s.Data[KeyWireGuardPrivate]))
			return err == nil && string(s.Data["other"]) == "kept"
		})

		c2 := cfg
		c2.TLSSecret, c2.WireGuardSecret, c2.Dir = "nokey", "", t.TempDir()
		ctrl := e.start(c2)
		eventually(t, "a sync", func() bool { return ctrl.Syncs() > 0 })
		_, err := ctrl.sync(ctx)
		if err == nil || !strings.Contains(err.Error(), "has ca.crt but no ca.key") {
			t.Errorf("ca.crt without ca.key: %v", err)
		}
		if s := e.secret(ns, "nokey"); len(s.Data) != 1 || !bytes.Equal(s.Data[KeyCACert], caCrt) {
			t.Error("Secret without ca.key was changed")
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
