package broker

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/bridge"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/probe"
)

// localMesh is the mesh of the LocalLink "a" with the given service CIDR.
func localMesh(t *testing.T, cidr string) *mesh.Mesh {
	t.Helper()
	m := mesh.Build([]v1alpha1.KubeLink{{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: v1alpha1.KubeLinkSpec{Endpoint: v1alpha1.EndpointLocalLink, ClusterAddress: "192.168.0.11/24", CIDR: cidr}}}, mesh.ParseOptions{})
	if len(m.Meshes) != 1 {
		t.Fatalf("no mesh: %+v", m.Verdicts)
	}
	return m.Meshes[0]
}

// What the broker announces, sent over the wire and read back by the peer,
// and what the peer's broker then writes into status.advertised.
func TestLocalHelloRoundTrip(t *testing.T) {
	cfg := Defaults()
	cfg.Mode = ModeBridge
	cfg.ServiceCIDR = netip.MustParsePrefix("100.99.0.0/20")
	ms := localMesh(t, "100.64.0.0/20")

	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		ms     *mesh.Mesh
		port   uint16
		dns    *bridge.DNSInfo
		status *v1alpha1.AdvertisedInfo
	}{
		{"no advertisement: bridge port only", func(*Config) {}, ms, 8088, nil, &v1alpha1.AdvertisedInfo{Port: 8088}},
		{"advertised port", func(c *Config) { c.AdvertisedPort = 30088 }, ms, 30088, nil, &v1alpha1.AdvertisedInfo{Port: 30088}},
		{"DNS defaults: LocalLink cidr + 10", func(c *Config) { c.DNSAdvertisement = true }, ms, 8088,
			&bridge.DNSInfo{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("100.64.0.10")},
			&v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local", DNSIP: "100.64.0.10", Port: 8088}},
		{"DNS flags", func(c *Config) {
			c.DNSAdvertisement, c.ClusterDomain, c.DNSServiceIP, c.AdvertisedPort = true, "a.internal", netip.MustParseAddr("100.64.0.53"), 31000
		}, ms, 31000, &bridge.DNSInfo{ClusterDomain: "a.internal", DNSIP: netip.MustParseAddr("100.64.0.53")},
			&v1alpha1.AdvertisedInfo{ClusterDomain: "a.internal", DNSIP: "100.64.0.53", Port: 31000}},
		{"DNS without a LocalLink cidr: --service-cidr + 10", func(c *Config) { c.DNSAdvertisement = true }, localMesh(t, ""), 8088,
			&bridge.DNSInfo{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("100.99.0.10")},
			&v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local", DNSIP: "100.99.0.10", Port: 8088}},
		{"DNS without any service CIDR: domain only", func(c *Config) { c.DNSAdvertisement, c.ServiceCIDR = true, netip.Prefix{} }, localMesh(t, ""), 8088,
			&bridge.DNSInfo{ClusterDomain: "cluster.local"},
			&v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local", Port: 8088}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mutate(&c)
			h := LocalHello(&c, tc.ms)
			frame, err := bridge.AppendHello(nil, h)
			if err != nil {
				t.Fatal(err)
			}
			got, err := bridge.ParseHello(frame[bridge.FrameHeaderLen:])
			if err != nil {
				t.Fatal(err)
			}
			if got.ClusterAddress != netip.MustParsePrefix("192.168.0.11/24") || got.Port != tc.port {
				t.Errorf("cluster address %s port %d, want 192.168.0.11/24 and %d", got.ClusterAddress, got.Port, tc.port)
			}
			switch {
			case (got.DNS == nil) != (tc.dns == nil):
				t.Errorf("DNS = %+v, want %+v", got.DNS, tc.dns)
			case got.DNS != nil && *got.DNS != *tc.dns:
				t.Errorf("DNS = %+v, want %+v", *got.DNS, *tc.dns)
			}
			if got.API != nil {
				t.Errorf("API info sent: %+v", got.API)
			}
			adv := Advertised(got)
			if (adv == nil) != (tc.status == nil) || adv != nil && *adv != *tc.status {
				t.Errorf("status.advertised = %+v, want %+v", adv, tc.status)
			}
			if !bridge.SameHello(h, got) {
				t.Errorf("SameHello(sent, received) = false: %+v vs %+v", h, got)
			}
		})
	}
}

// A peer's announcement reaches the status only in forms the CRD and the
// Corefile accept.
func TestAdvertisedDropsUnusableValues(t *testing.T) {
	base := bridge.Hello{MinVersion: 1, MaxVersion: 1, ClusterAddress: netip.MustParsePrefix("192.168.0.12/24")}
	for _, tc := range []struct {
		name string
		dns  *bridge.DNSInfo
		port uint16
		want *v1alpha1.AdvertisedInfo
	}{
		{"nothing", nil, 0, nil},
		{"upper case and trailing dot", &bridge.DNSInfo{ClusterDomain: "B.Internal."}, 0, &v1alpha1.AdvertisedInfo{ClusterDomain: "b.internal"}},
		{"Corefile injection", &bridge.DNSInfo{ClusterDomain: "x {\n log\n}", DNSIP: netip.MustParseAddr("100.64.16.10")}, 8088,
			&v1alpha1.AdvertisedInfo{DNSIP: "100.64.16.10", Port: 8088}},
		{"unspecified IP", &bridge.DNSInfo{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("0.0.0.0")}, 0, &v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local"}},
		{"multicast IP", &bridge.DNSInfo{DNSIP: netip.MustParseAddr("ff02::1")}, 0, nil},
		{"IPv6 DNS", &bridge.DNSInfo{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("fd00:10::a")}, 0,
			&v1alpha1.AdvertisedInfo{ClusterDomain: "cluster.local", DNSIP: "fd00:10::a"}},
	} {
		h := base
		h.DNS, h.Port = tc.dns, tc.port
		got := Advertised(h)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: Advertised = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// status.advertised follows the connection: written while connected,
// gone when not, never on links that are not accepted; a change is
// written at once, not throttled like health figures.
func TestDesiredStatusAdvertised(t *testing.T) {
	kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 1}}
	adv := &v1alpha1.AdvertisedInfo{ClusterDomain: "b.internal", DNSIP: "100.64.16.53", Port: 30088}
	up := &probe.Result{Up: true, Received: 1, LastReply: t0}
	st := DesiredStatus(kl, Observation{DataPlane: DataPlaneBridge, Probe: up, Advertised: adv}, t0)
	if st.State != v1alpha1.StateUp || st.Advertised == nil || *st.Advertised != *adv {
		t.Fatalf("connected: state %s advertised %+v", st.State, st.Advertised)
	}
	if st.Advertised == adv {
		t.Error("status shares the observation's pointer")
	}
	idle := DesiredStatus(kl, Observation{DataPlane: DataPlaneBridge, IdleReason: "connection refused"}, t0)
	if idle.Advertised != nil {
		t.Errorf("idle link keeps advertised %+v", idle.Advertised)
	}
	invalid := DesiredStatus(kl, Observation{Verdict: mesh.Verdict{State: v1alpha1.StateInvalid, Message: "bad"}, Advertised: adv}, t0)
	if invalid.Advertised != nil {
		t.Errorf("invalid link has advertised %+v", invalid.Advertised)
	}
	if !NeedsWrite(idle, st, t0, t0.Add(time.Millisecond), time.Hour) {
		t.Error("a new advertisement is not written at once")
	}
	if NeedsWrite(st, DesiredStatus(kl, Observation{DataPlane: DataPlaneBridge, Probe: up, Advertised: adv.DeepCopy()}, t0), t0, t0, time.Hour) {
		t.Error("the same advertisement is written again")
	}
}
