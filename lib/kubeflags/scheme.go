package kubeflags

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// NewScheme knows the core Kubernetes types and the kubelink API: what
// every kubelink controller's client and cache need. It lives here, not in
// v1alpha1, so that the API types (and the data plane packages that use
// them) do not depend on client-go's registry of every Kubernetes API group.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}
