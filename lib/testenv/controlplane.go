package testenv

import (
	"context"

	"errors"
	"fmt"
	"github.com/go-logr/logr"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubelink/kubelink/lib/apis/kubelink/crds"
	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

const (
	// defaultStartTimeout bounds the start of each component when the context
	// has no deadline. A cold kube-apiserver needs a few seconds; the margin
	// covers slow, loaded CI machines.
	defaultStartTimeout = 60 * time.Second
	// stopTimeout bounds SIGTERM-to-exit of each component before envtest
	// kills it, so Stop can never hang a test run.
	stopTimeout = 20 * time.Second
)

// ControlPlane is one etcd + kube-apiserver pair with the kubelink CRDs
// installed. It wraps controller-runtime's envtest, which picks free loopback
// ports and private temporary directories for every instance, so several
// ControlPlanes can run at once in one process (one per simulated cluster).
//
// The zero value is ready to use; set the optional fields before Start.
type ControlPlane struct {
	// Name identifies the control plane in errors (e.g. "cluster-a").
	Name string
	// ServiceCIDR, if set, is the kube-apiserver's service-cluster-ip-range.
	// Multi-cluster tests need distinct ranges per cluster because kubelink
	// routes each cluster's service CIDR through the mesh.
	ServiceCIDR string

	mu       sync.Mutex
	env      *envtest.Environment
	cfg      *rest.Config
	scheme   *runtime.Scheme
	output   *tailBuffer
	duration time.Duration
}

// NewScheme returns a scheme with the built-in Kubernetes types,
// apiextensions/v1 (to inspect CRDs) and kubelink v1alpha1 registered.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		apiextensionsv1.AddToScheme,
		v1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start launches etcd and kube-apiserver, installs the embedded kubelink CRDs
// and waits until they are served. The context's deadline (default 60s)
// bounds the start of each component and the wait for the CRDs; envtest
// itself cannot be interrupted, so cancellation is only checked up front.
// On failure everything already started is stopped again.
func (cp *ControlPlane) Start(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.env != nil {
		return fmt.Errorf("%s: already started", cp.name())
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", cp.name(), err)
	}
	if err := CheckBinaries(BinEtcd, BinAPIServer); err != nil {
		return err
	}
	crdList, err := crds.CRDs()
	if err != nil {
		return fmt.Errorf("%s: loading embedded CRDs: %w", cp.name(), err)
	}
	scheme, err := NewScheme()
	if err != nil {
		return fmt.Errorf("%s: building scheme: %w", cp.name(), err)
	}

	timeout := defaultStartTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
		if timeout <= 0 {
			return fmt.Errorf("%s: %w", cp.name(), context.DeadlineExceeded)
		}
	}

	// envtest logs through controller-runtime's logger, which warns loudly
	// when none is set; the control plane's own output is kept in output.
	quietLogs.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	output := &tailBuffer{limit: 8 << 10}
	env := &envtest.Environment{
		Scheme:                   scheme,
		CRDs:                     crdList,
		ErrorIfCRDPathMissing:    true,
		BinaryAssetsDirectory:    BinDir(),
		ControlPlaneStartTimeout: timeout,
		ControlPlaneStopTimeout:  stopTimeout,
		CRDInstallOptions: envtest.CRDInstallOptions{
			MaxTime:      timeout,
			PollInterval: 50 * time.Millisecond,
		},
	}
	// Explicit paths: envtest would otherwise prefer KUBEBUILDER_ASSETS and
	// TEST_ASSET_* from the environment, and tests would silently run
	// against some other Kubernetes version than the one we pin.
	env.ControlPlane.Etcd = &envtest.Etcd{Path: BinPath(BinEtcd), Out: output, Err: output}
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.Path = BinPath(BinAPIServer)
	apiServer.Out, apiServer.Err = output, output
	env.ControlPlane.KubectlPath = BinPath(BinKubectl)
	if cp.ServiceCIDR != "" {
		apiServer.Configure().Set("service-cluster-ip-range", cp.ServiceCIDR)
	}

	begin := time.Now()
	cfg, err := env.Start()
	if err != nil {
		// Start stops etcd when the API server fails, but not when the CRD
		// installation fails; Stop is safe for processes never started.
		stopErr := env.Stop()
		err = fmt.Errorf("%s: starting control plane (binaries in %s): %w%s", cp.name(), BinDir(), err, errSuffix(stopErr))
		// The server's own log only helps when it did not come up; an API
		// error (e.g. a CRD the server rejects) already says everything.
		var status apierrors.APIStatus
		if !errors.As(err, &status) {
			err = fmt.Errorf("%w\n--- last control-plane output ---\n%s", err, output.String())
		}
		return err
	}
	cp.env, cp.cfg, cp.scheme, cp.output = env, cfg, scheme, output
	cp.duration = time.Since(begin)
	return nil
}

// Stop terminates kube-apiserver and etcd and removes their temporary
// directories. It is safe to call more than once and on a ControlPlane that
// never started.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.env == nil {
		return nil
	}
	env := cp.env
	cp.env, cp.cfg = nil, nil
	if err := env.Stop(); err != nil {
		return fmt.Errorf("%s: stopping control plane: %w", cp.name(), err)
	}
	return nil
}

// Config returns a copy of the admin (system:masters) client configuration,
// or nil when the control plane is not running. A copy, because callers
// commonly tweak QPS, timeouts or content types.
func (cp *ControlPlane) Config() *rest.Config {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.cfg == nil {
		return nil
	}
	return rest.CopyConfig(cp.cfg)
}

// KubeConfig returns a kubeconfig file for the admin user, for processes
// (kubectl, kubelink components) that cannot take a rest.Config.
func (cp *ControlPlane) KubeConfig() ([]byte, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.env == nil {
		return nil, fmt.Errorf("%s: not started", cp.name())
	}
	return append([]byte(nil), cp.env.KubeConfig...), nil
}

// Scheme returns the scheme used by Client (see NewScheme).
func (cp *ControlPlane) Scheme() *runtime.Scheme {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.scheme
}

// Client returns a new controller-runtime client for the admin user with the
// kubelink scheme. It talks to the API server directly (no cache), which is
// what tests want: every read sees the latest state.
func (cp *ControlPlane) Client() (client.Client, error) {
	cfg := cp.Config()
	if cfg == nil {
		return nil, fmt.Errorf("%s: not started", cp.name())
	}
	return client.New(cfg, client.Options{Scheme: cp.Scheme()})
}

// StartDuration is how long Start took until the CRDs were served.
func (cp *ControlPlane) StartDuration() time.Duration {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.duration
}

// Output returns the last lines etcd and kube-apiserver wrote, for failure
// messages of tests that suspect the server.
func (cp *ControlPlane) Output() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.output == nil {
		return ""
	}
	return cp.output.String()
}

func (cp *ControlPlane) name() string {
	if cp.Name == "" {
		return "testenv"
	}
	return "testenv " + cp.Name
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf(" (cleanup: %v)", err)
}

// tailBuffer keeps the last limit bytes written to it. The processes write
// from os/exec goroutines while a test may read, hence the mutex.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

var quietLogs sync.Once
