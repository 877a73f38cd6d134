package clusterlab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mcs"
	"github.com/kubelink/kubelink/lib/testenv"
)

// The Multi-Cluster Services exchange between two real brokers, through
// the tunnel of each data plane: b's active broker fetches the export
// record a serves on its cluster address and writes what a may export into
// b's imports (an export of a ClusterIP in b's own service CIDR is
// refused); a's link leaving Up (a's broker killed) drops a from b's
// imports within 5 s, and a is back after its broker returns.
func TestMCSExchangeWireGuard(t *testing.T) { mcsExchange(t, false) }

func TestMCSExchangeBridge(t *testing.T) { mcsExchange(t, true) }

func mcsExchange(t *testing.T, bridge bool) {
	serialTiming(t)
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	var aFlags, bFlags []string
	if bridge {
		ca := NewBridgeCA(t)
		aFlags, bFlags = BridgeFlags(ca.CertDir(t, a)), BridgeFlags(ca.CertDir(t, b))
	}
	aBroker := a.StartBroker(lab, a.GW, aFlags...)
	bBroker := b.StartBroker(lab, b.GW, bFlags...)

	ports := []mcs.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}
	cart := mcs.Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.0.20", Ports: ports}
	// a claims a ClusterIP of b's service CIDR: not a's to export.
	theft := mcs.Export{Namespace: "shop", Name: "theft", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.20", Ports: ports}
	data, err := mcs.Record{Exports: []mcs.Export{cart, theft}}.Encode()
	must(t, err)
	a.Apply(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: mcs.RecordConfigMap}, Data: map[string]string{mcs.RecordKey: string(data)}})

	// b runs kubelink-mcs's controller (in the test process): the imports
	// become a ServiceImport shop/cart with a's ClusterIP as its endpoint.
	crds := testenv.InstallCRDs(t, b.Plane.Config(), "MCS", mcs.CRDs)
	t.Cleanup(func() {
		// the shared control plane is reused only with its own CRDs
		for _, crd := range crds {
			_ = b.Kube.Delete(context.Background(), crd)
		}
	})
	// (the shared control plane may keep it from the other data plane's
	// run: a namespace is not deleted without a namespace controller)
	if err := b.Kube.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ctrl, err := mcs.New(mcs.Config{Namespace: Namespace, Resync: time.Minute}, b.Plane.Config(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	must(t, err)
	ctx, stop := context.WithCancel(context.Background())
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ctrlDone; err != nil {
			t.Errorf("mcs controller: %v", err)
		}
	})
	scheme, err := mcs.NewScheme()
	must(t, err)
	bMCS, err := client.New(b.Plane.Config(), client.Options{Scheme: scheme})
	must(t, err)
	// serviceImport is b's import of shop/cart: its clusters and the
	// endpoints of its slices, or "" when there is none.
	serviceImport := func() string {
		var si mcsv1beta1.ServiceImport
		if err := bMCS.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &si); err != nil {
			return ""
		}
		var slices discoveryv1.EndpointSliceList
		must(t, bMCS.List(ctx, &slices, client.InNamespace("shop"), client.MatchingLabels{discoveryv1.LabelServiceName: mcs.DerivedName("cart")}))
		var out []string
		for _, c := range si.Status.Clusters {
			out = append(out, c.Cluster)
		}
		for _, sl := range slices.Items {
			for _, e := range sl.Endpoints {
				out = append(out, sl.Labels[mcsv1beta1.LabelSourceCluster]+"="+strings.Join(e.Addresses, "+"))
			}
		}
		return strings.Join(out, " ")
	}

	if bridge {
		a.Apply(a.LocalLink(), BridgeLinkTo(b))
		b.Apply(b.LocalLink(), BridgeLinkTo(a))
	} else {
		Connect(a, b)
	}
	imports := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var cm corev1.ConfigMap
		if err := b.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: mcs.ImportsConfigMap}, &cm); err != nil {
			return ""
		}
		im, err := mcs.DecodeImports([]byte(cm.Data[mcs.ImportsKey]))
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, c := range im.Clusters {
			for _, e := range c.Exports {
				s = append(s, fmt.Sprintf("%s/%s:%s@%s", c.Mesh, c.Cluster, e.Key(), e.ClusterIP))
			}
			for _, r := range c.Rejected {
				s = append(s, "rejected "+r)
			}
		}
		return strings.Join(s, "; ")
	}
	imported := func(s string) bool {
		return strings.HasPrefix(s, "default/a:shop/cart@100.64.0.20; rejected shop/theft: clusterIP 100.64.16.20 is not in the service networks of cluster a")
	}
	up, _ := b.WaitState("a", v1alpha1.StateUp, 15*time.Second)
	t.Logf("b's link a Up after %s", up.Round(time.Millisecond))
	start := time.Now()
	if !waitUntil(5*time.Second, func() bool { return imported(imports()) }) {
		t.Fatalf("5 s after the link was Up, b's imports are %q; b's broker:\n%s", imports(), bBroker.Output())
	}
	if n := strings.Count(bBroker.Output(), "refused an export of a peer"); n != 1 {
		t.Errorf("b's broker logged the refused export %d times, want once (when it changed):\n%s", n, bBroker.Output())
	}
	t.Logf("a's record in b's imports %s after the link was Up: %s", time.Since(start).Round(time.Millisecond), imports())

	waitFor(t, "b's ServiceImport shop/cart from a", 5*time.Second, func() bool { return serviceImport() == "a a=100.64.0.20" })
	t.Logf("b's ServiceImport shop/cart %s after the link was Up", time.Since(start).Round(time.Millisecond))

	// a's broker gone: its link leaves Up at b, and a leaves b's imports,
	// and with it b's import of shop/cart (a was the only exporter).
	aBroker.Kill()
	killed := time.Now()
	waitFor(t, "a gone from b's imports", 5*time.Second, func() bool { return imports() == "" })
	t.Logf("a's broker killed: a gone from b's imports after %s", time.Since(killed).Round(time.Millisecond))
	waitFor(t, "b's ServiceImport shop/cart gone", 5*time.Second-time.Since(killed), func() bool { return serviceImport() == "" })
	t.Logf("a's broker killed: b's ServiceImport shop/cart gone after %s", time.Since(killed).Round(time.Millisecond))
	if kl, err := b.Link("a"); err != nil || kl.Status.State == v1alpha1.StateUp {
		t.Errorf("a dropped from b's imports while b's link a is %v (%v)", kl.Status.State, err)
	}

	a.StartBroker(lab, a.GW, aFlags...)
	back := time.Now()
	b.WaitState("a", v1alpha1.StateUp, 15*time.Second)
	waitFor(t, "a back in b's imports", 5*time.Second, func() bool { return imported(imports()) })
	waitFor(t, "b's ServiceImport shop/cart back", 5*time.Second, func() bool { return serviceImport() == "a a=100.64.0.20" })
	t.Logf("a's broker back: in b's imports and b's ServiceImport again %s after its restart", time.Since(back).Round(time.Millisecond))
}

// waitUntil polls cond every 50 ms until it holds (true) or limit passes.
func waitUntil(limit time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
