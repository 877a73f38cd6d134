package clusterlab

// API access for kubernetes-mode mesh DNS: a token, and the API server
// exposed as a Service with a certificate of its own.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DNSToken returns a token of the ServiceAccount kubelink/kubelink-dns, which
// has the read access CoreDNS's kubernetes plugin needs (like
// system:coredns). Idempotent.
func (c *Cluster) DNSToken() string {
	c.t.Helper()
	ctx := waitCtx(c.t, 30*time.Second)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "kubelink-dns"}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "namespaces", "pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		// kubelinkgate (as the chart grants the kubelink CoreDNS)
		{APIGroups: []string{"kubelink.mandelsoft.org"}, Resources: []string{"kubelinks"}, Verbs: []string{"get", "list", "watch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-dns"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kubelink-dns"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: Namespace, Name: "kubelink-dns"}}}
	for _, obj := range []client.Object{sa, role, binding} {
		if err := c.Kube.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			c.t.Fatalf("cluster %s: creating %T: %v", c.Name, obj, err)
		}
	}
	exp := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	if err := c.Kube.SubResource("token").Create(ctx, sa, tr); err != nil {
		c.t.Fatalf("cluster %s: token request: %v", c.Name, err)
	}
	return tr.Status.Token
}

// CAData is the PEM CA of the cluster's API server.
func (c *Cluster) CAData() []byte { return c.Plane.Config().CAData }

// ExposeAPIService makes the kubernetes Service address (service CIDR + 1,
// port 443) reach the API server from every node, also for traffic that
// comes through the mesh, and returns the PEM CA to trust for it.
//
// The test API server's certificate is valid only for 127.0.0.1, so the
// Service is fronted by a TLS-terminating reverse proxy on the gateway's
// node address (like a load balancer in front of an API server), with a
// certificate for the Service IP from a CA of its own; it passes requests,
// including the bearer token, on to the API server. Every node DNATs the
// Service address to it.
func (c *Cluster) ExposeAPIService() (caPEM []byte) {
	c.t.Helper()
	svc := c.ServiceAddr(apiServiceOffset)
	caPEM, cert, err := serviceCert(svc)
	if err != nil {
		c.t.Fatal(err)
	}
	rc := c.Plane.Config()
	upstream, err := url.Parse(rc.Host)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rc.CAData) {
		c.t.Fatal("API server CA: no certificate")
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	proxy.FlushInterval = -1 // watches stream
	var ln net.Listener
	addr := netip.AddrPortFrom(c.GWIP, apiRelayPort)
	if err := c.GW.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return }); err != nil {
		c.t.Fatalf("API proxy in %s: %v", c.GW.Name, err)
	}
	// Handlers run on ordinary goroutines: they dial the API server in the
	// root namespace, where it listens on loopback.
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	c.t.Cleanup(func() { _ = srv.Close() })
	c.dnatService(svc, 443, c.GWIP, apiRelayPort, "tcp")
	return caPEM
}

// serviceCert makes a CA and a serving certificate for ip signed by it.
func serviceCert(ip netip.Addr) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clusterlab api-service CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{ip.AsSlice()},
		DNSNames: []string{"kubernetes.default.svc"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
