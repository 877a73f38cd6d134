package kubeflags

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Serve loads logging and API access, sets the Go memory limit from the
// container's (SetMemoryLimit), builds the component with them, and runs it
// until SIGINT or SIGTERM: the tail every controller main shares.
func (c *Common) Serve(run func(ctx context.Context, rc *rest.Config, log *slog.Logger) error) error {
	log, err := c.Logger()
	if err != nil {
		return err
	}
	RouteLibraryLogs(log)
	SetMemoryLimit(log)
	rc, err := c.RESTConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.PprofAddr != "" {
		if _, err := ServePprof(ctx, c.PprofAddr, log); err != nil {
			return err
		}
	}
	return run(ctx, rc, log)
}

// WatchAndSync registers kick as the handler of every change of the given
// kinds, starts the cache and waits for it to sync. A level-triggered
// controller then re-reads everything from the cache on each kick.
func WatchAndSync(ctx context.Context, c cache.Cache, kick func(), objs ...client.Object) error {
	ws := make([]Watch, len(objs))
	for i, o := range objs {
		ws[i] = Watch{Object: o}
	}
	return WatchAndSyncFiltered(ctx, c, kick, ws...)
}

// WatchAndSyncFiltered is WatchAndSync where each kind's Relevant filters
// the updates that kick.
func WatchAndSyncFiltered(ctx context.Context, c cache.Cache, kick func(), ws ...Watch) error {
	for _, w := range ws {
		inf, err := c.GetInformer(ctx, w.Object)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", w.Object, err)
		}
		relevant := w.Relevant
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { kick() },
			UpdateFunc: func(old, new any) {
				if relevant == nil || relevant(old, new) {
					kick()
				}
			},
			DeleteFunc: func(any) { kick() },
		}); err != nil {
			return err
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("cache did not sync (is the KubeLink CRD installed?)")
	}
	return nil
}
