package discover

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubelink/kubelink/lib/testenv"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestCoverPerFamily(t *testing.T) {
	for _, tc := range []struct {
		in       []netip.Prefix
		min      int
		want     []netip.Prefix
		describe string
	}{
		{pfx("10.110.0.0/24", "10.110.1.0/24"), 0, pfx("10.110.0.0/23"), "two adjacent node ranges"},
		{pfx("10.110.0.0/24", "10.110.3.0/24"), 0, pfx("10.110.0.0/22"), "a gap widens the cover"},
		{pfx("10.110.0.0/24"), 0, pfx("10.110.0.0/24"), "one range is its own cover"},
		{pfx("172.18.0.2/32", "172.18.0.3/32"), 24, pfx("172.18.0.0/24"), "node IPs: at least a /24"},
		{pfx("172.18.0.2/32", "172.19.0.3/32"), 24, pfx("172.18.0.0/15"), "wider than /24 when the nodes are"},
		{pfx("fd00::1/128", "10.0.0.1/32", "fd00::2/128"), 24, pfx("10.0.0.0/24", "fd00::/64"), "IPv4 first, IPv6 at least /64"},
	} {
		if got := coverPerFamily(tc.in, tc.min); !slices.Equal(got, tc.want) {
			t.Errorf("%s: coverPerFamily(%v, %d) = %v, want %v", tc.describe, tc.in, tc.min, got, tc.want)
		}
	}
}

func TestCheckOutside(t *testing.T) {
	c := &Cluster{
		ServiceCIDRs: Value[[]netip.Prefix]{pfx("10.96.0.0/12"), "ServiceCIDR kubernetes"},
		PodCIDRs:     Value[[]netip.Prefix]{pfx("10.244.0.0/16"), "kube-system/kubeadm-config networking.podSubnet"},
		NodeCIDR:     Value[netip.Prefix]{netip.MustParsePrefix("192.168.1.0/24"), "nodes"},
	}
	if err := c.CheckOutside("mesh CIDR", netip.MustParsePrefix("192.168.0.0/24")); err != nil {
		t.Errorf("a disjoint mesh CIDR: %v", err)
	}
	err := c.CheckOutside("mesh CIDR", netip.MustParsePrefix("10.0.0.0/8"))
	if err == nil {
		t.Fatal("10.0.0.0/8 overlaps the service and pod CIDRs, no error")
	}
	for _, want := range []string{"mesh CIDR 10.0.0.0/8 overlaps the service CIDR 10.96.0.0/12 of this cluster (from ServiceCIDR kubernetes)",
		"overlaps the pod CIDR 10.244.0.0/16", "choose a mesh CIDR outside it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := c.CheckOutside("mesh CIDR", netip.MustParsePrefix("192.168.1.128/25")); err == nil || !strings.Contains(err.Error(), "node network") {
		t.Errorf("inside the node network: %v", err)
	}
}

// Against a real API server shaped like a kubeadm cluster without the
// kubeadm-config ConfigMap: the ServiceCIDR objects, the nodes' pod CIDRs
// and addresses, kube-proxy's and the kubelet's configuration, kube-dns.
// Then the fallbacks, one source removed at a time.
func TestDiscoverRealAPIServer(t *testing.T) {
	cp := &testenv.ControlPlane{Name: "discover", ServiceCIDR: "100.64.32.0/20"}
	testenv.StartControlPlaneForTest(t, cp)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	create := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("creating %s: %v", what, err)
		}
	}
	for i, ip := range []string{"172.18.0.2", "172.18.0.3"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + ip}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.110." + string(rune('0'+i)) + ".0/24"}}}
		n, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		create("node", err)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: n.Name}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		create("node status", err)
	}
	_, err = cs.CoreV1().Services("kube-system").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec:       corev1.ServiceSpec{ClusterIP: "100.64.32.10", Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
	}, metav1.CreateOptions{})
	create("kube-dns", err)
	one := int32(1)
	_, err = cs.AppsV1().Deployments("kube-system").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"k8s-app": "kube-dns"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "coredns", Image: "coredns"}}}}},
	}, metav1.CreateOptions{})
	create("coredns Deployment", err)
	cm := func(name string, data map[string]string) {
		t.Helper()
		_, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
		create("ConfigMap "+name, err)
	}
	cm("kube-proxy", map[string]string{"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n"})
	cm("kubelet-config", map[string]string{"kubelet": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDomain: corp.example\n"})

	c, err := Discover(ctx, cs)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	check := func(what string, got, want any, source string, gotSource string) {
		t.Helper()
		if g, w := strings.TrimSpace(strings.ReplaceAll(fmtAny(got), "\n", " ")), fmtAny(want); g != w {
			t.Errorf("%s = %s, want %s", what, g, w)
		}
		if !strings.Contains(gotSource, source) {
			t.Errorf("%s from %q, want from %q", what, gotSource, source)
		}
	}
	check("service CIDRs", c.ServiceCIDRs.Value, pfx("100.64.32.0/20"), "ServiceCIDR kubernetes", c.ServiceCIDRs.Source)
	check("pod CIDRs", c.PodCIDRs.Value, pfx("10.110.0.0/23"), "spec.podCIDRs of 2 nodes", c.PodCIDRs.Source)
	check("node CIDR", c.NodeCIDR.Value, netip.MustParsePrefix("172.18.0.0/24"), "InternalIPs of 2 nodes", c.NodeCIDR.Source)
	check("kube-proxy mode", c.KubeProxyMode.Value, "nftables", "kube-system/kube-proxy", c.KubeProxyMode.Source)
	check("cluster domain", c.ClusterDomain.Value, "corp.example", "kubelet-config", c.ClusterDomain.Source)
	check("DNS service IP", c.DNSServiceIP.Value, netip.MustParseAddr("100.64.32.10"), "kube-system/kube-dns", c.DNSServiceIP.Source)
	if c.ClusterDNSName != "coredns" {
		t.Errorf("cluster DNS deployment %q, want coredns", c.ClusterDNSName)
	}

	// Fallbacks: the API server names its range when asked for an address
	// outside it (a dry run: nothing is stored).
	v, err := serviceRangeFromDryRun(ctx, cs)
	if err != nil || !slices.Equal(v.Value, pfx("100.64.32.0/20")) {
		t.Errorf("dry-run fallback: %v, %v; want 100.64.32.0/20", v, err)
	}
	if _, err := cs.CoreV1().Services("default").Get(ctx, "kubelink-discover-service-range", metav1.GetOptions{}); err == nil {
		t.Error("the dry-run Service was stored")
	}
	// kubeadm's ClusterConfiguration wins for the pod CIDR and (without
	// kubelet-config) the cluster domain.
	cm("kubeadm-config", map[string]string{"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.110.0.0/16\n  serviceSubnet: 100.64.32.0/20\n  dnsDomain: kubeadm.example\n"})
	create("deleting kubelet-config", cs.CoreV1().ConfigMaps("kube-system").Delete(ctx, "kubelet-config", metav1.DeleteOptions{}))
	create("deleting kube-proxy", cs.CoreV1().ConfigMaps("kube-system").Delete(ctx, "kube-proxy", metav1.DeleteOptions{}))
	c, err = Discover(ctx, cs)
	if err != nil {
		t.Fatalf("Discover with kubeadm-config: %v", err)
	}
	check("pod CIDRs", c.PodCIDRs.Value, pfx("10.110.0.0/16"), "kubeadm-config networking.podSubnet", c.PodCIDRs.Source)
	check("cluster domain", c.ClusterDomain.Value, "kubeadm.example", "kubeadm-config networking.dnsDomain", c.ClusterDomain.Source)
	check("kube-proxy mode", c.KubeProxyMode.Value, "unknown", "no readable kube-system/kube-proxy", c.KubeProxyMode.Source)

	// Nothing to find the cluster DNS by: an error naming it.
	create("deleting kube-dns", cs.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}))
	if _, err := Discover(ctx, cs); err == nil || !strings.Contains(err.Error(), "cluster DNS: no Service kube-system/kube-dns") {
		t.Errorf("without kube-dns: %v", err)
	}
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case []netip.Prefix:
		var s []string
		for _, p := range x {
			s = append(s, p.String())
		}
		return strings.Join(s, ",")
	case interface{ String() string }:
		return x.String()
	case string:
		return x
	}
	return "?"
}
