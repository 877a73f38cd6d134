package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceAccountConfig is a rest.Config that authenticates as the
// ServiceAccount ns/name of the control plane, with an hour's token from the
// TokenRequest API: what a pod of that account gets, and no more.
func (cp *ControlPlane) ServiceAccountConfig(ctx context.Context, ns, name string) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		return nil, err
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token of ServiceAccount %s/%s: %w", ns, name, err)
	}
	rc := rest.AnonymousClientConfig(cp.Config())
	rc.BearerToken = tr.Status.Token
	return rc, nil
}

// CreateFromFile creates every object of a YAML stream (e.g. a manifest of
// the lab's), as `kubectl create -f` would.
func CreateFromFile(ctx context.Context, c client.Client, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := CreateObjects(ctx, c, &u); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

// CreateObjects creates objects (e.g. rendered from the chart, see
// RenderChart) in order, as `kubectl create` would.
func CreateObjects(ctx context.Context, c client.Client, objs ...*unstructured.Unstructured) error {
	for _, u := range objs {
		if err := c.Create(ctx, u.DeepCopy()); err != nil {
			return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// ChartAccount is a control plane with the chart's RBAC applied and one of
// its accounts to act as: what a test of a component's least privilege
// needs.
type ChartAccount struct {
	*ControlPlane
	Admin       kubernetes.Interface // the control plane's admin
	AdminClient client.Client
	// Config authenticates as the account.
	Config *rest.Config
}

// ChartAccountForTest starts a control plane for the test, creates the
// namespace ns and the chart's RBAC objects (ChartRBAC with set) and
// returns it with a rest.Config of the ServiceAccount ns/account.
func ChartAccountForTest(t testing.TB, set map[string]string, ns, account string) *ChartAccount {
	t.Helper()
	cp := StartForTest(t)
	ctx := context.Background()
	ca := &ChartAccount{ControlPlane: cp}
	var err error
	if ca.Admin, err = kubernetes.NewForConfig(cp.Config()); err != nil {
		t.Fatal(err)
	}
	if ca.AdminClient, err = cp.Client(); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateObjects(ctx, ca.AdminClient, ChartRBAC(t, set)...); err != nil {
		t.Fatal(err)
	}
	if ca.Config, err = cp.ServiceAccountConfig(ctx, ns, account); err != nil {
		t.Fatal(err)
	}
	return ca
}
