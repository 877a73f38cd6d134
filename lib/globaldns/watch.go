package globaldns

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kubelink/kubelink/lib/globaldns/apis/coredns/v1alpha1"
)

// GVR is the CoreDNSEntry resource.
var GVR = v1alpha1.SchemeGroupVersion.WithResource(v1alpha1.ResourceCoreDNSEntries)

// watcher feeds the index from an informer on CoreDNSEntry objects and
// writes their status.
type watcher struct {
	dyn         dynamic.Interface
	informer    cache.SharedIndexInformer
	index       *Index
	writeStatus bool
	queue       workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
}

func newWatcher(rc *rest.Config, namespace string, index *Index, writeStatus bool) (*watcher, error) {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "coredns-" + PluginName
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, namespace, nil)
	w := &watcher{dyn: dyn, informer: f.ForResource(GVR).Informer(), index: index, writeStatus: writeStatus,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	_, err = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.upsert(obj) },
		UpdateFunc: func(_, obj any) { w.upsert(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				w.index.Delete(u.GetNamespace() + "/" + u.GetName())
				w.enqueueAll() // a conflicting entry may become Ok
			}
		},
	})
	return w, err
}

// upsert indexes an object; an object that does not even decode is Invalid.
func (w *watcher) upsert(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	var e v1alpha1.CoreDNSEntry
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &e); err != nil {
		log.Warningf("CoreDNSEntry %s/%s: %v", u.GetNamespace(), u.GetName(), err)
		e = v1alpha1.CoreDNSEntry{ObjectMeta: metav1.ObjectMeta{Namespace: u.GetNamespace(), Name: u.GetName()}}
	}
	w.index.Set(&e)
	w.enqueueAll()
}

func (w *watcher) enqueueAll() {
	if !w.writeStatus {
		return
	}
	for _, k := range w.index.Keys() {
		w.queue.Add(k)
	}
}

func (w *watcher) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return
	}
	w.started = true
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); w.informer.Run(ctx.Done()) }()
		go func() { defer wg.Done(); w.statusLoop(ctx) }()
		wg.Wait()
	}()
}

func (w *watcher) stop() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	w.queue.ShutDown()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Warningf("informer did not stop within 5s")
	}
}

func (w *watcher) synced() bool { return w.informer.HasSynced() }

func (w *watcher) waitSynced(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if w.synced() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return w.synced()
}

// statusLoop writes status.state/message where they differ from the index.
func (w *watcher) statusLoop(ctx context.Context) {
	if !w.writeStatus {
		<-ctx.Done()
		return
	}
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		err := w.syncStatus(ctx, key)
		if err != nil && ctx.Err() == nil {
			log.Warningf("status of CoreDNSEntry %s: %v", key, err)
			w.queue.AddRateLimited(key)
		} else {
			w.queue.Forget(key)
		}
		w.queue.Done(key)
	}
}

func (w *watcher) syncStatus(ctx context.Context, key string) error {
	want, ok := w.index.Status(key)
	if !ok {
		return nil
	}
	obj, exists, err := w.informer.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	u := obj.(*unstructured.Unstructured)
	state, _, _ := unstructured.NestedString(u.Object, "status", "state")
	msg, _, _ := unstructured.NestedString(u.Object, "status", "message")
	if state == want.State && msg == want.Message {
		return nil
	}
	u = u.DeepCopy()
	status := map[string]any{"state": want.State}
	if want.Message != "" {
		status["message"] = want.Message
	}
	if err := unstructured.SetNestedField(u.Object, status, "status"); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = w.dyn.Resource(GVR).Namespace(u.GetNamespace()).UpdateStatus(cctx, u, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or a newer version is on its way through the informer
	}
	return err
}
