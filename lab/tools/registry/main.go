// Command registry is the CNCF distribution registry with only what the
// lab uses: filesystem storage, no authentication, no pull-through proxy.
// The cloud storage drivers (S3, GCS, Azure, CloudFront) of the upstream
// command are left out, and with them their SDKs, which were most of a
// cold build of the lab.
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	// Execute reports a failed command itself and exits non-zero.
	_ = registry.RootCmd.Execute()
}
