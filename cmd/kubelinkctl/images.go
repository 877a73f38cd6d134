package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// checkImages asks the registry for each image's manifest, so that a
// missing image is reported before anything is installed (not as an
// ImagePullBackOff afterwards), with the credentials of the docker
// configuration (docker login). Registries on the loopback are plain HTTP.
func checkImages(ctx context.Context, refs []string, insecure bool) error {
	var errs []error
	for _, r := range refs {
		var opts []name.Option
		if insecure || loopbackRegistry(r) {
			opts = append(opts, name.Insecure)
		}
		ref, err := name.ParseReference(r, opts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s: %v", r, err))
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = remote.Head(ref, remote.WithContext(hctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s is not in its registry (%v)", r, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w\npush the images (make images-push REGISTRY=host:port), or point --registry and --version at where they are; --skip-image-check skips this check", errors.Join(errs...))
	}
	return nil
}

func loopbackRegistry(ref string) bool {
	host, _, ok := strings.Cut(ref, "/")
	if !ok {
		return false
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
