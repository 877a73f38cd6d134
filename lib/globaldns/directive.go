package globaldns

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
)

// AddDirective puts kubelinkglobal into CoreDNS's directive order (before
// "kubernetes", else before "forward", else last), as custom CoreDNS builds
// do without editing plugin.cfg. Call it from main before coremain.Run (or
// before starting CoreDNS in a test); calling it twice is harmless.
func AddDirective() { InsertDirective(PluginName, "kubernetes", "forward") }

// InsertDirective puts plugin into CoreDNS's directive order before the
// first of before that is there, else last; a plugin already there stays.
func InsertDirective(plugin string, before ...string) {
	if slices.Contains(dnsserver.Directives, plugin) {
		return
	}
	for _, b := range before {
		if i := slices.Index(dnsserver.Directives, b); i >= 0 {
			dnsserver.Directives = slices.Insert(dnsserver.Directives, i, plugin)
			return
		}
	}
	dnsserver.Directives = append(dnsserver.Directives, plugin)
}
