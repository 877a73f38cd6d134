package broker

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// eventSink records an Event on every state change of a link.
type eventSink struct {
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
}

func newEventSink(cfg *rest.Config, scheme *runtime.Scheme, component, host string) (*eventSink, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("events client: %w", err)
	}
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return &eventSink{broadcaster: bc, recorder: bc.NewRecorder(scheme, corev1.EventSource{Component: component, Host: host})}, nil
}

func (e *eventSink) stateChanged(kl *v1alpha1.KubeLink, from string, st v1alpha1.KubeLinkStatus) {
	typ := corev1.EventTypeNormal
	switch st.State {
	case v1alpha1.StateInvalid, v1alpha1.StateStale, v1alpha1.StateError, v1alpha1.StateDown:
		typ = corev1.EventTypeWarning
	}
	if from == "" {
		from = "(new)"
	}
	e.recorder.Eventf(kl, typ, st.State, "%s -> %s: %s", from, st.State, st.Message)
}

func (e *eventSink) shutdown() { e.broadcaster.Shutdown() }
