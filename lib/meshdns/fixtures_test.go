package meshdns

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/<name>.golden (or writes it with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs from the rendering (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// klink builds a KubeLink with a status state (what the broker would write).
func klink(name, state string, spec v1alpha1.KubeLinkSpec) v1alpha1.KubeLink {
	return v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch)},
		Spec:       spec,
		Status:     v1alpha1.KubeLinkStatus{State: state},
	}
}

func ptr[T any](v T) *T { return &v }

// The local cluster "a" (service CIDR 100.64.0.0/20) in the default mesh
// 192.168.0.0/24, and its peers b, c, d.
func localA(dns *v1alpha1.KubeLinkDNS) v1alpha1.KubeLink {
	return klink("a", v1alpha1.StateUp, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "192.168.0.11/24",
		CIDR: "100.64.0.0/20", DNS: dns})
}

func peerB(state string) v1alpha1.KubeLink {
	return klink("b", state, v1alpha1.KubeLinkSpec{Endpoint: "b.example.com", ClusterAddress: "192.168.0.12/24",
		CIDR: "100.64.16.0/20", APIAccess: &v1alpha1.SecretReference{Name: "b-access"}})
}

// peerC has its own cluster domain and DNS IP.
func peerC(state string, omit bool) v1alpha1.KubeLink {
	return klink("c", state, v1alpha1.KubeLinkSpec{Endpoint: "c.example.com", ClusterAddress: "192.168.0.13/24",
		CIDR: "100.64.32.0/20", DNS: &v1alpha1.KubeLinkDNS{DNSIP: "100.64.32.53", BaseDomain: "c.internal", OmitDNSPropagation: ptr(omit)}})
}

func peerD(state string) v1alpha1.KubeLink {
	return klink("d", state, v1alpha1.KubeLinkSpec{Endpoint: "d.example.com", ClusterAddress: "192.168.0.14/24", CIDR: "100.64.48.0/20"})
}

// The mesh "blue" (10.10.0.0/24, domain blue.mesh) with the peer e.
func blueLocal() v1alpha1.KubeLink {
	return klink("blue--a", v1alpha1.StateUp, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: "10.10.0.1/24",
		DNS: &v1alpha1.KubeLinkDNS{BaseDomain: "blue.mesh"}})
}

func blueE(state string) v1alpha1.KubeLink {
	return klink("blue--e", state, v1alpha1.KubeLinkSpec{Endpoint: "e.example.com", ClusterAddress: "10.10.0.5/24",
		CIDR: "100.65.0.0/20", APIAccess: &v1alpha1.SecretReference{Name: "e-access", Namespace: "other"}})
}

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n-----END CERTIFICATE-----\n"
