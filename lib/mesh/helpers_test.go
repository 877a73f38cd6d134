package mesh

import (
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// Keys used across the tests (valid 32-byte base64).
const (
	keyB   = "4vEkTd2EHwM2mIc7Y0sJ1FwLcDr7mvjV8m0JmnI/4ms="
	keyC   = "0hNZgTv4lV2YkRB3O7nUoQ8xh0xHkqOQp2G0kYQ3yFw="
	pskOne = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
	pskTwo = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY="
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// link builds a KubeLink created `age` minutes after epoch.
func link(name string, age int, spec v1alpha1.KubeLinkSpec) v1alpha1.KubeLink {
	return v1alpha1.KubeLink{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))},
		Spec:       spec,
	}
}

func local(name, addr, cidr string) v1alpha1.KubeLink {
	return link(name, 0, v1alpha1.KubeLinkSpec{Endpoint: "LocalLink", ClusterAddress: addr, CIDR: cidr})
}

func peer(name, addr, cidr, endpoint, key string) v1alpha1.KubeLink {
	return link(name, 1, v1alpha1.KubeLinkSpec{ClusterAddress: addr, CIDR: cidr, Endpoint: endpoint, PublicKey: key})
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

var wgOpts = ParseOptions{DefaultPort: 8777}

type (
	netipAddr     = netip.Addr
	netipAddrPort = netip.AddrPort
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func netipAddrPortFrom(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
