// Package buildinfo carries the version stamped into every kubelink binary.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/kubelink/kubelink/lib/buildinfo.Version=... -X ...Commit=...".
var (
	Version = "v0.0.0-dev"
	Commit  = ""
)

// String describes the build: "<binary> <version> (commit <c>, <go version>)".
func String(binary string) string {
	commit := Commit
	if commit == "" {
		commit = vcsRevision()
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", binary, Version, commit,
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
