package linkgate

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kubelink/kubelink/lib/globaldns"
)

// GVR is the KubeLink resource (cluster-scoped).
var GVR = schema.GroupVersionResource{Group: "kubelink.mandelsoft.org", Version: "v1alpha1", Resource: "kubelinks"}

// watch keeps the state of every KubeLink from one informer. Blocks share it
// (reference counted: in a reload, CoreDNS may set up the new server blocks
// before or after it shuts the old ones down); a stopped informer cannot run
// again, so each start makes a new one.
type watch struct {
	dyn dynamic.Interface

	mu     sync.Mutex
	inf    cache.SharedIndexInformer // nil while stopped
	refs   int
	cancel context.CancelFunc
	done   chan struct{}
}

var (
	watchesMu sync.Mutex
	watches   = map[string]*watch{}
)

func sharedWatch(cfg Config) (*watch, error) {
	key := cfg.Kubeconfig + "\x00" + cfg.Context
	watchesMu.Lock()
	defer watchesMu.Unlock()
	if w, ok := watches[key]; ok {
		return w, nil
	}
	rc, err := globaldns.RestConfig(cfg.Kubeconfig, cfg.Context)
	if err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "coredns-" + PluginName
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	w := &watch{dyn: dyn}
	watches[key] = w
	return w, nil
}

// keepState drops everything of a KubeLink but its name and status.state
// before it reaches the store.
func keepState(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	state, _, _ := unstructured.NestedString(u.Object, "status", "state")
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
		"metadata": map[string]any{"name": u.GetName(), "resourceVersion": u.GetResourceVersion(), "uid": string(u.GetUID())},
		"status":   map[string]any{"state": state},
	}}, nil
}

func (w *watch) informer() cache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inf
}

// State implements States.
func (w *watch) State(link string) (string, bool) {
	inf := w.informer()
	if inf == nil || !inf.HasSynced() {
		return "", false
	}
	obj, ok, err := inf.GetStore().GetByKey(link)
	if err != nil || !ok {
		return "", true
	}
	state, _, _ := unstructured.NestedString(obj.(*unstructured.Unstructured).Object, "status", "state")
	return state, true
}

func (w *watch) acquire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refs++
	if w.inf != nil {
		return
	}
	f := dynamicinformer.NewDynamicSharedInformerFactory(w.dyn, 10*time.Minute)
	inf := f.ForResource(GVR).Informer()
	if err := inf.SetTransform(keepState); err != nil {
		log.Warningf("transform: %v", err) // only fails on a started informer
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.inf, w.cancel, w.done = inf, cancel, make(chan struct{})
	done := w.done
	go func() { defer close(done); inf.Run(ctx.Done()) }()
}

func (w *watch) release() {
	w.mu.Lock()
	w.refs--
	if w.refs > 0 || w.inf == nil {
		w.mu.Unlock()
		return
	}
	cancel, done := w.cancel, w.done
	w.inf, w.cancel, w.done = nil, nil, nil
	w.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Warningf("KubeLink informer did not stop within 5s")
	}
}

func (w *watch) waitSynced(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if inf := w.informer(); inf != nil && inf.HasSynced() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
