package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kubelink/kubelink/lib/netapply"
)

// Cleanup removes everything a broker creates in its network namespace: the
// device, routes of our protocol and our rule, every KUBELINK- chain and hook.
// Foreign devices, routes and chains are left alone.
func Cleanup(cfg Config) error {
	var errs []error
	if err := netapply.DeleteLink(cfg.Interface); err != nil {
		errs = append(errs, fmt.Errorf("device %s: %w", cfg.Interface, err))
	}
	routes, err := netapply.NewRoutes(netapply.RouteConfig{Table: cfg.RouteTable, RulePriority: cfg.RulePriority})
	if err == nil {
		err = routes.CleanUp()
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	if err := netapply.CleanUpAll(false); err != nil {
		errs = append(errs, fmt.Errorf("iptables: %w", err))
	}
	// A crashed embedded wireguard-go leaves its UAPI socket behind.
	sock := filepath.Join("/var/run/wireguard", cfg.Interface+".sock")
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("socket %s: %w", sock, err))
	}
	return errors.Join(errs...)
}
