package certwatch

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesTheFlags(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Mode = "bogus" }, `--secret-manage-mode="bogus": must be none, self or csr`},
		{func(c *Config) { c.Sign = true }, "--sign-requests needs --secret-manage-mode=self"},
		{func(c *Config) { c.Mode, c.DNSName, c.Identities = ModeCSR, "a.b", "kubelink://m/a" }, "needs --authority-secret or --authority-kubeconfig"},
		{func(c *Config) { c.Mode, c.DNSName, c.AuthorityKubeconfig = ModeCSR, "a.b", "/k" }, "csr needs --identities"},
		{func(c *Config) {
			c.Mode, c.DNSName, c.AuthorityKubeconfig, c.Identities, c.AuthorityNamespace = ModeCSR, "a.b", "/k", "kubelink://m/a", "Bad"
		}, `--authority-namespace="Bad"`},
		{func(c *Config) { c.Mode, c.AuthorityKubeconfig, c.Identities = ModeCSR, "/k", "kubelink://m/a" }, "csr needs --dns-name"},
		{func(c *Config) {
			c.Mode, c.DNSName, c.Identities, c.AuthorityKubeconfig, c.AuthoritySecret = ModeCSR, "a.b", "kubelink://m/a", "/k", "s"
		}, "--authority-secret and --authority-kubeconfig: give one"},
		{func(c *Config) {
			c.Mode, c.DNSName, c.Identities, c.AuthoritySecret = ModeCSR, "a.b", "kubelink://m/a", "Not_A_Name"
		}, `--authority-secret="Not_A_Name"`},
		{func(c *Config) { c.Mode = "cert" }, "not supported"},
		{func(c *Config) { c.Mode = ModeSelf }, "needs --dns-name"},
		{func(c *Config) { c.Mode, c.DNSName = ModeSelf, "Not_A_Name" }, `--dns-name="Not_A_Name"`},
		{func(c *Config) { c.Mode, c.DNSName, c.CertValidity = ModeSelf, "a.b", time.Second }, "--cert-validity=1s"},
		{func(c *Config) { c.Mode, c.DNSName, c.TLSSecret = ModeSelf, "a.b", "" }, "needs --tls-secret"},
		{func(c *Config) { c.TLSSecret, c.WireGuardSecret = "", "" }, "nothing to do"},
		{func(c *Config) { c.Dir = "" }, "--dir"},
		{func(c *Config) { c.TLSSecret = "Bad Name" }, `--tls-secret="Bad Name"`},
		{func(c *Config) { c.Resync = 0 }, "--resync"},
	} {
		c := Defaults()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want %q, got %v", tc.want, err)
		}
	}
}
