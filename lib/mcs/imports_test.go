package mcs

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/testenv"
)

// The import side against a real API server with the upstream CRDs: a
// name exported by this cluster (a) and by the peers b and c becomes a
// ServiceImport with the clusterset IP of a selector-less derived Service,
// the ports of all three, the three clusters in its status, and one
// EndpointSlice per cluster at that cluster's ClusterIP, labelled as the
// KEP says. A peer that leaves takes its slice and ports along; a name in
// a namespace that does not exist here is not imported; a Headless export
// is not imported (the mesh does not route pod addresses); when nobody
// exports the name any more, everything of it goes.
func TestImportsFollowTheExports(t *testing.T) {
	cp := &testenv.ControlPlane{Name: "mcs-imports"}
	testenv.StartControlPlaneForTest(t, cp)
	testenv.InstallCRDs(t, cp.Config(), "MCS", CRDs)
	scheme, err := NewScheme()
	must(t, err)
	kube, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"kubelink", "shop"} {
		must(t, kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	// a's own export: shop/cart, port 80.
	cart := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	must(t, kube.Create(ctx, cart))
	must(t, kube.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}}))
	// its endpoints, as kube-controller-manager writes them: two pods on
	// port 8080, one of them not ready.
	must(t, kube.Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-x1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}}, {Addresses: []string{"10.1.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}},
		Ports:     []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}}}))

	// kubelink-mcs runs with exactly the chart's permissions: its RBAC and
	// the admission policy on its writes, and the record ConfigMap the
	// chart creates.
	must(t, testenv.CreateObjects(ctx, kube, testenv.ChartRBAC(t, nil)...))
	must(t, kube.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: RecordConfigMap}}))
	asMCS, err := cp.ServiceAccountConfig(ctx, "kubelink", "kubelink-mcs")
	must(t, err)
	ctrl, err := New(Config{Namespace: "kubelink", Resync: time.Minute}, asMCS, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	http := Port{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
	https := Port{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	peer := func(cluster string, exports ...Export) ClusterRecord {
		return ClusterRecord{Cluster: cluster, Mesh: "default", Exports: exports}
	}
	writeImports := func(clusters ...ClusterRecord) {
		data, err := Imports{Self: []Origin{{Cluster: "a", Mesh: "default"}}, Clusters: clusters}.Encode()
		must(t, err)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelink", Name: ImportsConfigMap}, Data: map[string]string{ImportsKey: string(data)}}
		if err := kube.Update(ctx, cm); apierrors.IsNotFound(err) {
			must(t, kube.Create(ctx, cm))
		} else {
			must(t, err)
		}
	}
	bCart := Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.20", Ports: []Port{http}, Exported: t0}
	cCart := Export{Namespace: "shop", Name: "cart", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.32.20", Ports: []Port{http, https}, Exported: t0.Add(time.Hour)}
	elsewhere := Export{Namespace: "nowhere", Name: "x", Type: mcsv1beta1.ClusterSetIP, ClusterIP: "100.64.16.30", Ports: []Port{http}, Exported: t0}
	headless := Export{Namespace: "shop", Name: "db", Type: mcsv1beta1.Headless, Ports: []Port{http}, Exported: t0}
	writeImports(peer("b", bCart, elsewhere, headless), peer("c", cCart))

	// state reads the import of shop/cart as one line.
	state := func() string {
		var si mcsv1beta1.ServiceImport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &si); err != nil {
			return "no ServiceImport: " + err.Error()
		}
		var svc corev1.Service
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: DerivedName("cart")}, &svc); err != nil {
			return "no derived Service: " + err.Error()
		}
		var clusters, ports, svcPorts, sl []string
		for _, c := range si.Status.Clusters {
			clusters = append(clusters, c.Cluster)
		}
		for _, p := range si.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", p.Name, p.Port))
		}
		for _, p := range svc.Spec.Ports {
			svcPorts = append(svcPorts, fmt.Sprintf("%s:%d", p.Name, p.Port))
		}
		var slices discoveryv1.EndpointSliceList
		must(t, kube.List(ctx, &slices, client.InNamespace("shop"), client.MatchingLabels{discoveryv1.LabelServiceName: DerivedName("cart")}))
		for _, s := range slices.Items {
			var eps, ps []string
			for _, e := range s.Endpoints {
				eps = append(eps, e.Addresses...)
			}
			for _, p := range s.Ports {
				ps = append(ps, fmt.Sprintf("%s:%d", *p.Name, *p.Port))
			}
			sl = append(sl, fmt.Sprintf("%s=%s%v (%s,%s)", s.Labels[mcsv1beta1.LabelSourceCluster], strings.Join(eps, "+"), ps,
				s.Labels[mcsv1beta1.LabelServiceName], s.Labels["endpointslice.kubernetes.io/managed-by"]))
		}
		sortStrings(sl)
		ipOK := len(si.Spec.IPs) == 1 && si.Spec.IPs[0] == svc.Spec.ClusterIP && svc.Spec.ClusterIP != ""
		return fmt.Sprintf("%s ips=%v selector=%v clusters=%v ports=%v service=%v slices=%v", si.Spec.Type, ipOK, svc.Spec.Selector, clusters, ports, svcPorts, sl)
	}
	var aIP string
	eventually(t, "a's cart has a ClusterIP", func() bool {
		var s corev1.Service
		if kube.Get(ctx, client.ObjectKeyFromObject(cart), &s) == nil {
			aIP = s.Spec.ClusterIP
		}
		return aIP != ""
	})
	// a's own slice holds its pods (the ready one, at the target port):
	// kube-proxy would not translate a's own ClusterIP a second time.
	want := "ClusterSetIP ips=true selector=map[] clusters=[a b c] ports=[http:80 https:443] service=[http:80 https:443] slices=[a=10.1.0.5[http:8080] (cart,kubelink-mcs) b=100.64.16.20[http:80] (cart,kubelink-mcs) c=100.64.32.20[http:80 https:443] (cart,kubelink-mcs)]"
	waitState := func(what, want string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = state(); got == want {
				return
			}
		}
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
	waitState("cart exported by a, b and c", want)
	// a acknowledges in its record what it imported from b and c, and its
	// own export is Ready only once a peer acknowledges it.
	readyOfExport := func() string {
		var se mcsv1beta1.ServiceExport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &se); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(se.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady))
		if c == nil {
			return "no Ready condition"
		}
		return fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	}
	eventually(t, "a's record acknowledges b's and c's cart, a's export Pending", func() bool {
		var cm corev1.ConfigMap
		must(t, kube.Get(ctx, client.ObjectKey{Namespace: "kubelink", Name: RecordConfigMap}, &cm))
		rec, err := DecodeRecord([]byte(cm.Data[RecordKey]))
		return err == nil && slices.Equal(rec.Imported, []string{"b/shop/cart", "c/shop/cart"}) && strings.HasPrefix(readyOfExport(), "False Pending")
	})
	bAck := peer("b", bCart, elsewhere, headless)
	bAck.Imported = []string{"shop/cart"}
	writeImports(bAck, peer("c", cCart))
	eventually(t, "a's export Ready once b acknowledges it", func() bool { return readyOfExport() == "True Ready: imported by b" })
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "nowhere", Name: "x"}, &mcsv1beta1.ServiceImport{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport nowhere/x: %v, want none (no such namespace here)", err)
	}
	// Ready: True for cart at its clusterset IP; False for the Headless db,
	// which has no IP, no derived Service and no slices (no address that
	// would not work).
	readyOf := func(name string) string {
		var si mcsv1beta1.ServiceImport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &si); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(si.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady))
		if c == nil {
			return "no Ready condition"
		}
		return fmt.Sprintf("%s %s ips=%v clusters=%d: %s", c.Status, c.Reason, si.Spec.IPs, len(si.Status.Clusters), c.Message)
	}
	eventually(t, "Ready conditions", func() bool {
		return strings.HasPrefix(readyOf("cart"), "True Ready ips=["+aIPOf(t, kube, ctx)+"]") &&
			strings.HasPrefix(readyOf("db"), "False PodNetworksNotRouted ips=[] clusters=1: exported as Headless by b")
	})
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: DerivedName("db")}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("derived Service of the Headless db: %v, want none", err)
	}

	// What the policy keeps kubelink-mcs from, with its own account: an
	// application's Service, a derived Service with a selector (it would
	// capture pods), another's EndpointSlice, a ServiceImport not its own.
	mcsKube, err := client.New(asMCS, client.Options{Scheme: scheme})
	must(t, err)
	appSlice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-app",
		Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}}, AddressType: discoveryv1.AddressTypeIPv4}
	must(t, kube.Create(ctx, appSlice))
	// (The API server loads a new policy within seconds.)
	eventually(t, "the policy in force", func() bool {
		var s corev1.Service
		must(t, kube.Get(ctx, client.ObjectKeyFromObject(cart), &s))
		s.Annotations = map[string]string{"probe": time.Now().String()}
		return mcsKube.Update(ctx, &s) != nil
	})
	var appSvc corev1.Service
	must(t, kube.Get(ctx, client.ObjectKeyFromObject(cart), &appSvc))
	appSvc.Labels = map[string]string{"app.kubernetes.io/managed-by": ManagedBy}
	for _, c := range []struct {
		what string
		do   func() error
		want string
	}{
		{"relabel the application's Service shop/cart", func() error { return mcsKube.Update(ctx, &appSvc) }, "writes only its own Services"},
		{"delete the application's Service", func() error { return mcsKube.Delete(ctx, cart.DeepCopy()) }, "writes only its own Services"},
		{"create a derived Service with a selector", func() error {
			return mcsKube.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: DerivedPrefix + "evil",
				Labels: map[string]string{"app.kubernetes.io/managed-by": ManagedBy}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"}, Ports: []corev1.ServicePort{{Port: 80}}}})
		}, "have no selector"},
		{"delete the application's EndpointSlice", func() error { return mcsKube.Delete(ctx, appSlice.DeepCopy()) }, "writes only the EndpointSlices of its own Services"},
		{"create a ServiceImport not labelled its own", func() error {
			return mcsKube.Create(ctx, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other"},
				Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, Ports: []mcsv1beta1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}})
		}, "writes only its own ServiceImports"},
	} {
		if err := c.do(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kubelink-mcs may %s: %v, want a denial saying %q", c.what, err, c.want)
		}
	}
	if err := kube.Delete(ctx, appSlice); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	// Conflict on a's ServiceExport: none while a, b and c agree (c's extra
	// port is no conflict); PortConflict, with a Warning Event, once the
	// older b names port 8080 "http" too: b's definition wins in the import.
	conflictOf := func() string {
		var se mcsv1beta1.ServiceExport
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &se); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(se.Status.Conditions, string(mcsv1beta1.ServiceExportConditionConflict))
		if c == nil {
			return "no Conflict condition"
		}
		return fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	}
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = conflictOf(); ok(got) {
				return got
			}
		}
		t.Fatalf("%s: Conflict condition %s", what, got)
		return ""
	}
	waitFor("a, b and c agree", func(s string) bool { return strings.HasPrefix(s, "False NoConflicts") })
	bOther := bCart
	bOther.Ports = []Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}
	writeImports(peer("b", bOther), peer("c", cCart))
	got := waitFor("b's http is 8080", func(s string) bool { return strings.HasPrefix(s, "True PortConflict") })
	for _, w := range []string{`port "http" of shop/cart`, "cluster b", "the oldest export (cluster b"} {
		if !strings.Contains(got, w) {
			t.Errorf("the PortConflict message lacks %q: %s", w, got)
		}
	}
	// (The slices match ports by name: the import's http, 8080, reaches
	// each cluster's own http, c's at its port 80.)
	waitState("b's http wins", "ClusterSetIP ips=true selector=map[] clusters=[a b c] ports=[https:443 http:8080] service=[https:443 http:8080] slices=[a=10.1.0.5[http:8080] (cart,kubelink-mcs) b=100.64.16.20[http:8080] (cart,kubelink-mcs) c=100.64.32.20[http:80 https:443] (cart,kubelink-mcs)]")
	eventually(t, "a Warning Event PortConflict on the ServiceExport", func() bool {
		var evs corev1.EventList
		must(t, kube.List(ctx, &evs, client.InNamespace("shop")))
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "ServiceExport" && e.InvolvedObject.Name == "cart" && e.Type == corev1.EventTypeWarning && e.Reason == "PortConflict" {
				return true
			}
		}
		return false
	})

	// c leaves (its link left Up): its slice and its port go.
	writeImports(peer("b", bCart))
	waitState("c gone", "ClusterSetIP ips=true selector=map[] clusters=[a b] ports=[http:80] service=[http:80] slices=[a=10.1.0.5[http:8080] (cart,kubelink-mcs) b=100.64.16.20[http:80] (cart,kubelink-mcs)]")
	waitFor("b agrees again", func(s string) bool { return strings.HasPrefix(s, "False NoConflicts") })

	// Nobody exports it any more: the import, its Service and slices go.
	writeImports()
	must(t, kube.Delete(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}}))
	eventually(t, "the import of cart gone", func() bool {
		var slices discoveryv1.EndpointSliceList
		must(t, kube.List(ctx, &slices, client.InNamespace("shop"), client.MatchingLabels{"endpointslice.kubernetes.io/managed-by": ManagedBy}))
		return apierrors.IsNotFound(kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, &mcsv1beta1.ServiceImport{})) &&
			apierrors.IsNotFound(kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: DerivedName("cart")}, &corev1.Service{})) &&
			len(slices.Items) == 0
	})
	// a's own Service was never touched.
	if err := kube.Get(ctx, client.ObjectKeyFromObject(cart), &corev1.Service{}); err != nil {
		t.Errorf("a's Service shop/cart: %v", err)
	}
}

func sortStrings(s []string) { slices.Sort(s) }

// aIPOf is the clusterset IP of shop/cart: its derived Service's ClusterIP.
func aIPOf(t *testing.T, kube client.Client, ctx context.Context) string {
	var svc corev1.Service
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "shop", Name: DerivedName("cart")}, &svc); err != nil {
		return "(no derived Service: " + err.Error() + ")"
	}
	return svc.Spec.ClusterIP
}
