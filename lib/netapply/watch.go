package netapply

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// resubscribeDelay bounds how fast a broken subscription is renewed.
const resubscribeDelay = time.Second

// Watch calls onChange whenever a route of our protocol in our table is
// deleted (by an administrator, or by the kernel when a link goes down), so
// the caller can run Set again at once instead of waiting for the next
// resync. It watches the calling thread's namespace until ctx ends. If the
// subscription breaks (for example the socket buffer overran), events may
// have been lost: Watch then calls onChange and subscribes again. onChange
// runs on Watch's goroutine and should return quickly.
func (r *Routes) Watch(ctx context.Context, onChange func()) error {
	// Pin the namespace now: later resubscriptions run on other threads.
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("watch routes: current network namespace: %w", err)
	}
	ch, done, err := subscribeRoutes(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("watch routes: %w", err)
	}
	go func() {
		defer ns.Close()
		for {
			select {
			case <-ctx.Done():
				stopSubscription(ch, done)
				return
			case u, ok := <-ch:
				if ok {
					if u.Type == unix.RTM_DELROUTE && int(u.Protocol) == r.proto && u.Table == r.table {
						onChange()
					}
					continue
				}
				stopSubscription(ch, done)
				if ch, done = r.resubscribe(ctx, ns); ch == nil {
					return
				}
				onChange()
			}
		}
	}()
	return nil
}

// resubscribe retries until it succeeds or ctx ends (then it returns nil).
func (r *Routes) resubscribe(ctx context.Context, ns netns.NsHandle) (chan netlink.RouteUpdate, chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(resubscribeDelay):
		}
		if ch, done, err := subscribeRoutes(ns); err == nil {
			return ch, done
		}
	}
}

func subscribeRoutes(ns netns.NsHandle) (chan netlink.RouteUpdate, chan struct{}, error) {
	ch := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns})
	if err != nil {
		close(done)
		return nil, nil, err
	}
	return ch, done, nil
}

// stopSubscription closes the socket and drains ch, so netlink's receiving
// goroutine cannot block on a send nobody reads.
func stopSubscription(ch chan netlink.RouteUpdate, done chan struct{}) {
	close(done)
	go func() {
		for range ch {
		}
	}()
}
