package broker

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateExplainsBadFlags(t *testing.T) {
	ok := Defaults()
	ok.NodeCIDR = netip.MustParsePrefix("10.250.0.0/16")
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with node CIDR rejected: %v", err)
	}
	tests := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Mode = "tls" }, `--mode="tls"`},
		{func(c *Config) { c.Mode = ModeBridge }, "--cert-dir is required"},
		{func(c *Config) { c.WireGuard = "fast" }, "--wireguard"},
		{func(c *Config) { c.Secret = "" }, "--secret is required"},
		{func(c *Config) { c.NodeCIDR = netip.Prefix{} }, "--node-cidr is required"},
		{func(c *Config) { c.RouteTable = 253 }, "--route-table=253"},
		{func(c *Config) { c.ProbeDownAfter = 1 }, "--probe-down-after"},
		{func(c *Config) { c.Resync = 0 }, "--resync"},
		{func(c *Config) { c.Interface = "a-very-long-interface" }, "--ifce-name"},
		{func(c *Config) { c.RenewDeadline = c.LeaseDuration }, "leader election"},
		{func(c *Config) { c.DNSAdvertisement = true }, "--dns-advertisement works in bridge mode only"},
		{func(c *Config) { c.AdvertisedPort = 30088 }, "--advertised-port works in bridge mode only"},
		{func(c *Config) { c.AutoConnectLargestCIDR = 33 }, "--auto-connect-largest-cidr=33: must be a prefix length 1-32"},
		{func(c *Config) { c.Mode, c.CertDir, c.AdvertisedPort = ModeBridge, "/certs", 70000 }, "--advertised-port=70000"},
		{func(c *Config) {
			c.Mode, c.CertDir, c.DNSAdvertisement, c.ClusterDomain = ModeBridge, "/certs", true, "Cluster.Local"
		}, `--cluster-domain: "Cluster.Local"`},
		{func(c *Config) {
			c.Mode, c.CertDir, c.DNSAdvertisement, c.DNSServiceIP = ModeBridge, "/certs", true, netip.MustParseAddr("::ffff:10.0.0.10")
		}, "--dns-service-ip=::ffff:10.0.0.10"},
	}
	bridgeOK := ok
	bridgeOK.Mode, bridgeOK.CertDir, bridgeOK.DNSAdvertisement, bridgeOK.AdvertisedPort = ModeBridge, "/certs", true, 30088
	if err := bridgeOK.Validate(); err != nil {
		t.Errorf("bridge mode with DNS advertisement and an advertised port rejected: %v", err)
	}
	for _, tt := range tests {
		c := ok
		tt.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want %q", err, tt.want)
		}
	}
}

func TestDetectRunMode(t *testing.T) {
	// The loopback interface has 127.0.0.1: a "node CIDR" of 127.0.0.0/8
	// means node mode on it; anything else means pod mode.
	ifaces := net.Interfaces
	c := Defaults()
	c.NodeCIDR = netip.MustParsePrefix("127.0.0.0/8")
	rm, err := DetectRunMode(&c, ifaces)
	if err != nil || rm.PodMode || rm.NodeIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("node mode: %+v, %v", rm, err)
	}
	c.NodeCIDR = netip.MustParsePrefix("203.0.113.0/24")
	if _, err := DetectRunMode(&c, ifaces); err == nil || !strings.Contains(err.Error(), "needs --node-ip") {
		t.Errorf("pod mode without node IP: %v", err)
	}
	c.NodeIP = netip.MustParseAddr("203.0.113.5")
	if _, err := DetectRunMode(&c, ifaces); err == nil || !strings.Contains(err.Error(), "needs --pod-cidr") {
		t.Errorf("pod mode without pod CIDR: %v", err)
	}
	c.PodCIDR = netip.MustParsePrefix("127.0.0.0/8")
	rm, err = DetectRunMode(&c, ifaces)
	if err != nil || !rm.PodMode || rm.NodeIP != c.NodeIP || rm.PodIP != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("pod mode: %+v, %v", rm, err)
	}
	c.NodeIP = netip.MustParseAddr("198.51.100.1")
	if _, err := DetectRunMode(&c, ifaces); err == nil || !strings.Contains(err.Error(), "not in --node-cidr") {
		t.Errorf("node IP outside node CIDR: %v", err)
	}
}
