package main

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// cluster is a connected cluster.
type cluster struct {
	context string                         // the kubeconfig context
	flags   *genericclioptions.ConfigFlags // for helm: the same kubeconfig and context
	host    string
	version string // of the API server
	rest    *rest.Config
	cs      kubernetes.Interface
	c       client.Client
}

// reachTimeout bounds the first request: an unreachable cluster is
// reported within it, not after the TCP timeouts of every retry.
const reachTimeout = 15 * time.Second

// connect opens the cluster of --kubeconfig/--context and checks that it
// answers.
func (g *globals) connect(ctx context.Context) (*cluster, error) {
	return g.connectContext(ctx, *g.kube.Context)
}

// connectContext opens the cluster of the kubeconfig context name (""
// for the current one) and checks that it answers.
func (g *globals) connectContext(ctx context.Context, name string) (*cluster, error) {
	flags := genericclioptions.NewConfigFlags(true)
	*flags.KubeConfig, *flags.Context, *flags.Namespace = *g.kube.KubeConfig, name, *g.kube.Namespace
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w (set --kubeconfig, or KUBECONFIG)", err)
	}
	if name == "" {
		name = raw.CurrentContext
	}
	if _, ok := raw.Contexts[name]; !ok && name != "" {
		return nil, fmt.Errorf("context %q is not in the kubeconfig (%d contexts there; `kubectl config get-contexts` lists them)", name, len(raw.Contexts))
	}
	rc, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig context %q: %w", name, err)
	}
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = 50, 100
	probe := rest.CopyConfig(rc)
	probe.Timeout = reachTimeout
	pcs, err := kubernetes.NewForConfig(probe)
	if err != nil {
		return nil, err
	}
	v, err := pcs.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("cannot reach the cluster of context %q at %s: %v; check that its API server is up and reachable from here, and --context/--kubeconfig", name, rc.Host, err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &cluster{context: name, flags: flags, host: rc.Host, version: v.GitVersion, rest: rc, cs: cs, c: c}, nil
}

// newScheme has the types kubelinkctl reads and writes: Kubernetes',
// kubelink's and CRDs.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}
