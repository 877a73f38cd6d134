package certwatch

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/mesh"
)

// Revocation. A member removed at the authority (its ServiceAccount
// deleted, as `kubelinkctl leave` does, or its identities annotation
// narrowed) gets no new certificate, but the ones it holds would stay valid
// until they expire (--cert-validity, 10 days by default). So the authority
// keeps a record of the certificates it signed (KeyIssued in CAConfigMap)
// and moves every one that carries an identity no longer registered to the
// revocation list (KeyRevoked), by serial number, until it expires. Every
// cluster's certwatch copies the list next to its certificates (file
// FileRevoked), and the bridge refuses those certificates, closing the
// connections that already use one.
//
// A certificate once revoked stays revoked: registering the member again
// does not let an old certificate back in (it may be the copy a
// compromised cluster kept). The member's certwatch sees its own serial on
// the list and asks for a new certificate at once.
//
// The time from the removal to the bridges is the members' --resync (they
// read the list with the CA, once per sync); the authority reacts to the
// ServiceAccount change at once (it watches them).

// FileRevoked is the revocation list in the TLS directory; the bridge reads
// it with the certificates (bridge.RevokedFile).
const FileRevoked = "revoked"

// certEntry is one line of KeyIssued or KeyRevoked:
// "<serial, hex> <notAfter, RFC 3339> <identity>[,<identity>...]". The
// bridge reads the serial only; the rest is for pruning and for people.
type certEntry struct {
	serial     string // lowercase hex, as big.Int.Text(16)
	notAfter   time.Time
	identities []string
}

func (e certEntry) String() string {
	ids := strings.Join(e.identities, ",")
	if ids == "" {
		ids = "-"
	}
	return fmt.Sprintf("%s %s %s", e.serial, e.notAfter.UTC().Format(time.RFC3339), ids)
}

// publish keeps ConfigMap CAConfigMap (created when missing) holding the
// CA certificate, KeyIssued updated from the certificates of csrs (the
// requests of SignerName, signed now or before), and KeyRevoked: the
// recorded certificates whose holder is no longer registered for all of
// their identities, until they expire; expired entries leave both. One
// read and at most one write. It reports whether KeyRevoked changed. If
// the registrations cannot be read, the rest is still published but
// nothing is revoked: a list computed from a partial view could revoke
// every member.
func (c *Controller) publish(ctx context.Context, caPEM []byte, ca *x509.Certificate, csrs []certificatesv1.CertificateSigningRequest) (bool, error) {
	ref := c.cfg.Namespace + "/" + CAConfigMap
	registered, regErr := c.registeredIdentities(ctx)
	var cm corev1.ConfigMap
	err := c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: CAConfigMap}, &cm)
	create := apierrors.IsNotFound(err)
	switch {
	case create:
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: CAConfigMap,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubelink-certwatch"}}}
	case err != nil:
		return false, errors.Join(regErr, fmt.Errorf("reading ConfigMap %s: %w", ref, err))
	}
	now := c.now()
	issued, bad1 := parseEntries(cm.Data[KeyIssued])
	revoked, bad2 := parseEntries(cm.Data[KeyRevoked])
	for _, line := range append(bad1, bad2...) {
		c.log.Warn("dropping a line of the certificate record that does not parse", "configmap", ref, "line", line)
	}
	for i := range csrs {
		csr := &csrs[i]
		if csr.Spec.SignerName != SignerName || len(csr.Status.Certificate) == 0 {
			continue
		}
		cert, err := ParseCertificate(csr.Status.Certificate)
		if err != nil || cert.CheckSignatureFrom(ca) != nil {
			continue // not one of ours (another CA, an older CA): nothing to record
		}
		e := certEntry{serial: cert.SerialNumber.Text(16), notAfter: cert.NotAfter, identities: uriStrings(cert.URIs)}
		if _, done := revoked[e.serial]; !done {
			issued[e.serial] = e
		}
	}
	var newly []certEntry
	for serial, e := range issued {
		switch {
		case !e.notAfter.After(now):
			delete(issued, serial) // expired: refused everywhere anyway
		case regErr == nil && slices.ContainsFunc(e.identities, func(id string) bool { return !registered[id] }):
			delete(issued, serial)
			revoked[serial] = e
			newly = append(newly, e)
		}
	}
	var expired []certEntry
	for serial, e := range revoked {
		if !e.notAfter.After(now) {
			delete(revoked, serial)
			expired = append(expired, e)
		}
	}
	wantIssued, wantRevoked := formatEntries(issued), formatEntries(revoked)
	if !create && cm.Data[KeyCACert] == string(caPEM) && cm.Data[KeyIssued] == wantIssued && cm.Data[KeyRevoked] == wantRevoked {
		return false, regErr
	}
	changed := cm.Data[KeyRevoked] != wantRevoked
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[KeyCACert], cm.Data[KeyIssued], cm.Data[KeyRevoked] = string(caPEM), wantIssued, wantRevoked
	if create {
		err = c.api.Create(ctx, &cm)
	} else {
		err = c.api.Update(ctx, &cm)
	}
	if err != nil {
		return false, errors.Join(regErr, fmt.Errorf("publishing the CA and the certificate record in ConfigMap %s: %w", ref, err))
	}
	for _, e := range newly {
		c.log.Info("revoked a member certificate: no registered member holds all of its identities", "serial", e.serial,
			"identities", e.identities, "until", e.notAfter.Format(time.RFC3339))
	}
	for _, e := range expired {
		c.log.Info("a revoked certificate expired and left the list", "serial", e.serial, "identities", e.identities)
	}
	return changed, regErr
}

// registeredIdentities are the identities the members' ServiceAccounts
// list (AnnotationIdentities) and the authority's own.
func (c *Controller) registeredIdentities(ctx context.Context) (map[string]bool, error) {
	var sas metav1.PartialObjectMetadataList
	sas.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccountList"))
	if err := c.api.List(ctx, &sas, client.InNamespace(c.cfg.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the members (ServiceAccounts of %s) to find removed ones: %w; nothing revoked until it works", c.cfg.Namespace, err)
	}
	ids := map[string]bool{}
	for _, sa := range sas.Items {
		if sa.DeletionTimestamp != nil {
			continue
		}
		for _, id := range splitList(sa.Annotations[AnnotationIdentities]) {
			ids[id] = true
		}
	}
	for _, id := range c.cfg.IdentityList() {
		ids[id] = true
	}
	return ids, nil
}

// revocationList is the content of FileRevoked for this sync, and whether
// this cluster has one: the authority's own ConfigMap, or (csr mode) what
// authorityCA read from the authority's in this sync. Clusters without an
// authority have none.
func (c *Controller) revocationList(ctx context.Context) ([]byte, bool, error) {
	switch {
	case c.cfg.Mode == ModeCSR:
		if c.memberRevoked == nil {
			if c.memberListErr != nil {
				return nil, false, c.memberListErr
			}
			return nil, false, errors.New("no revocation list read from the authority in this sync")
		}
		return c.memberRevoked, true, nil
	case c.cfg.Sign:
		var cm corev1.ConfigMap
		err := c.api.Get(ctx, client.ObjectKey{Namespace: c.cfg.Namespace, Name: CAConfigMap}, &cm)
		if apierrors.IsNotFound(err) {
			return []byte{}, true, nil // nothing signed yet
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading the revocation list from ConfigMap %s/%s: %w", c.cfg.Namespace, CAConfigMap, err)
		}
		list, err := checkRevoked(cm.Data[KeyRevoked])
		if err != nil {
			return nil, false, fmt.Errorf("ConfigMap %s/%s: %w", c.cfg.Namespace, CAConfigMap, err)
		}
		return list, true, nil
	}
	return nil, false, nil
}

// previousRevoked is the list written last (the file), for a sync that
// could not read a new one: the certificates are still written, with the
// list they had.
func (c *Controller) previousRevoked() ([]byte, bool) {
	b, err := os.ReadFile(filepath.Join(c.cfg.Dir, TLSDir, FileRevoked))
	return b, err == nil
}

// writeRevokedOnly puts a new revocation list next to the certificates
// already written, for a sync whose certificate request failed (a denied
// renewal, the authority's answer pending): the list must not wait for it.
func (c *Controller) writeRevokedOnly(list []byte) error {
	dir := filepath.Join(c.cfg.Dir, TLSDir)
	cur, err := ReadSnapshot(dir, KeyTLSCert, KeyTLSKey, KeyCACert)
	if err != nil {
		return nil // no certificate written yet: nothing for the list to go with
	}
	changed, err := WriteAtomic(dir, append(tlsFiles(cur), File{Name: FileRevoked, Data: list, Mode: 0o644}))
	if err != nil {
		return fmt.Errorf("writing the revocation list into %s: %w", dir, err)
	}
	if changed {
		c.metrics.writes.WithLabelValues(TLSDir).Inc()
		c.metrics.revoked.Set(float64(len(parseLines(string(list)))))
		c.log.Info("revocation list swapped", "dir", dir, "revoked", len(parseLines(string(list))))
	}
	return nil
}

// checkRevoked checks a revocation list (KeyRevoked; the format:
// mesh.ParseRevoked) and returns it as the file's content. One bad line
// fails the whole list: a partial list would silently let a revoked
// certificate back in.
func checkRevoked(s string) ([]byte, error) {
	if _, err := mesh.ParseRevoked(s); err != nil {
		return nil, fmt.Errorf("key %s: %w", KeyRevoked, err)
	}
	return append([]byte{}, formatLines(parseLines(s))...), nil // never nil: nil means no list
}

// revokedSerials is the set of serials of a list checkRevoked accepted.
func revokedSerials(list []byte) map[string]bool {
	s, _ := mesh.ParseRevoked(string(list))
	return s
}

// parseEntries reads KeyIssued or KeyRevoked by serial; lines that do not
// parse are returned apart.
func parseEntries(s string) (map[string]certEntry, []string) {
	out := map[string]certEntry{}
	var bad []string
	for _, l := range parseLines(s) {
		f := strings.Fields(l)
		if len(f) != 3 {
			bad = append(bad, l)
			continue
		}
		serial, err1 := mesh.RevokedSerial(f[0])
		at, err2 := time.Parse(time.RFC3339, f[1])
		if err1 != nil || err2 != nil {
			bad = append(bad, l)
			continue
		}
		var ids []string
		if f[2] != "-" {
			ids = splitList(f[2])
		}
		out[serial] = certEntry{serial: serial, notAfter: at, identities: ids}
	}
	return out, bad
}

func formatEntries(m map[string]certEntry) string {
	var b strings.Builder
	for _, serial := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(m[serial].String())
		b.WriteByte('\n')
	}
	return b.String()
}

// parseLines splits a list into its non-empty, trimmed lines, without
// comments (lines starting with #).
func parseLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func formatLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
