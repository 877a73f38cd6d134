package globaldns

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
)

// AddDirective puts kubelinkglobal into CoreDNS's directive order (before
// "kubernetes", else before "forward", else last), as custom CoreDNS builds
// do without editing plugin.cfg. Call it from main before coremain.Run (or
// before starting CoreDNS in a test); calling it twice is harmless.
func AddDirective() {
	if slices.Contains(dnsserver.Directives, PluginName) {
		return
	}
	for _, before := range []string{"kubernetes", "forward"} {
		if i := slices.Index(dnsserver.Directives, before); i >= 0 {
			dnsserver.Directives = slices.Insert(dnsserver.Directives, i, PluginName)
			return
		}
	}
	dnsserver.Directives = append(dnsserver.Directives, PluginName)
}
