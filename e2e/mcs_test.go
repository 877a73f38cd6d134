//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/klient/k8s"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/kubelink/kubelink/lib/mcs"
)

// TestServiceExportInTheLab: kubelink-mcs, installed by the chart in each
// cluster with least privilege, takes a ServiceExport of the echo Service
// of every cluster: Valid True (ClusterSetIP) and in the cluster's export
// record with its ClusterIP and port; a ServiceExport without a Service is
// Valid False NoService and not in the record; the other cluster's broker
// fetches the record through the mesh (the exchange) into its imports; an
// unexport leaves the record and the imports. (The ServiceImports:
// TestClusterSetIPAcrossClusters.)
func TestServiceExportInTheLab(t *testing.T) {
	f := features.New("ServiceExport").Assess("kubelink-mcs writes the conditions and the export record", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
		for _, c := range []*Cluster{lab.A, lab.B} {
			ip, err := c.ServiceIP(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			exports := []*mcsv1beta1.ServiceExport{
				{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"}},
				{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "e2e-no-such-service"}},
			}
			for _, se := range exports {
				if err := c.Res.Create(ctx, se); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatalf("%s: creating ServiceExport %s: %v", c.Name, se.Name, err)
				}
			}
			unexport := func() {
				for _, se := range exports {
					if err := c.Res.Delete(ctx, se); err != nil && !apierrors.IsNotFound(err) {
						t.Errorf("%s: deleting ServiceExport %s: %v", c.Name, se.Name, err)
					}
				}
			}
			valid := func(name string) (string, error) {
				var se mcsv1beta1.ServiceExport
				if err := c.Res.Get(ctx, name, "default", &se); err != nil {
					return "", err
				}
				for _, cond := range se.Status.Conditions {
					if cond.Type == string(mcsv1beta1.ServiceExportConditionValid) {
						return string(cond.Status) + " " + cond.Reason, nil
					}
				}
				return "", fmt.Errorf("ServiceExport %s has no Valid condition yet", name)
			}
			record := func() (mcs.Record, error) {
				var cm corev1.ConfigMap
				if err := c.Res.Get(ctx, mcs.RecordConfigMap, "kubelink", &cm); err != nil {
					return mcs.Record{}, err
				}
				return mcs.DecodeRecord([]byte(cm.Data[mcs.RecordKey]))
			}
			took, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
				if v, err := valid("echo"); err != nil || v != "True Valid" {
					return fmt.Errorf("ServiceExport echo: Valid %q (%v), want True Valid", v, err)
				}
				if v, err := valid("e2e-no-such-service"); err != nil || v != "False NoService" {
					return fmt.Errorf("ServiceExport e2e-no-such-service: Valid %q (%v), want False NoService", v, err)
				}
				rec, err := record()
				if err != nil {
					return err
				}
				if len(rec.Exports) != 1 || rec.Exports[0].Namespace != "default" || rec.Exports[0].Name != "echo" ||
					rec.Exports[0].ClusterIP != ip || len(rec.Exports[0].Ports) == 0 || rec.Exports[0].Ports[0].Port != 80 {
					return fmt.Errorf("export record %+v, want default/echo alone, at %s port 80", rec.Exports, ip)
				}
				return nil
			})
			if err != nil {
				unexport()
				t.Fatalf("%s: %v", c.Name, err)
			}
			t.Logf("%s: ServiceExport default/echo Valid and in the export record after %s", c.Name, took.Round(10*time.Millisecond))
			// The exchange: the other cluster's broker fetched the record
			// through the mesh and holds it in its imports.
			other := lab.B
			if c == lab.B {
				other = lab.A
			}
			imported := func() error {
				var cm corev1.ConfigMap
				if err := other.Res.Get(ctx, mcs.ImportsConfigMap, "kubelink", &cm); err != nil {
					return err
				}
				im, err := mcs.DecodeImports([]byte(cm.Data[mcs.ImportsKey]))
				if err != nil {
					return err
				}
				for _, cr := range im.Clusters {
					if cr.Cluster == c.Name {
						for _, e := range cr.Exports {
							if e.Key() == "default/echo" && e.ClusterIP == ip {
								return nil
							}
						}
					}
				}
				return fmt.Errorf("%s's imports %s lack %s's default/echo at %s", other.Name, cm.Data[mcs.ImportsKey], c.Name, ip)
			}
			took, err = Eventually(ctx, 10*time.Second, 200*time.Millisecond, func(context.Context) error { return imported() })
			if err != nil {
				unexport()
				t.Fatal(err)
			}
			t.Logf("%s: %s's export in %s's imports after %s more", c.Name, c.Name, other.Name, took.Round(10*time.Millisecond))
			unexport()
			if _, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
				rec, err := record()
				if err != nil || len(rec.Exports) != 0 {
					return fmt.Errorf("export record after the unexport: %+v (%v), want empty", rec.Exports, err)
				}
				if imported() == nil {
					return fmt.Errorf("%s's export still in %s's imports after the unexport", c.Name, other.Name)
				}
				return nil
			}); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
		return ctx
	}).Feature()
	testenv.Test(t, f)
}

// TestClusterSetIPAcrossClusters: the Multi-Cluster Services API in the
// lab, end to end. b exports its echo Service: a gets a ServiceImport
// default/echo within 5 s, whose clusterset IP a pod of a reaches, and b's
// echo answers. a exports its echo too: 50 requests to the clusterset IP
// from a pod of a reach both clusters. a unexports: every request of the
// next 20 reaches b. b unexports as well: the ServiceImport and its
// Service are gone from a.
func TestClusterSetIPAcrossClusters(t *testing.T) {
	f := features.New("clusterset IP").Assess("b's echo through a's ServiceImport, spread over both clusters when both export", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
		a, b := lab.A, lab.B
		export := func(c *Cluster) *mcsv1beta1.ServiceExport {
			se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"}}
			if err := c.Res.Create(ctx, se); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: exporting echo: %v", c.Name, err)
			}
			return se
		}
		unexport := func(c *Cluster) {
			se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"}}
			if err := c.Res.Delete(ctx, se); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("%s: unexporting echo: %v", c.Name, err)
			}
		}
		defer unexport(a)
		defer unexport(b)
		// importOf waits for a's ServiceImport of echo to list exactly the
		// clusters want, and returns its clusterset IP.
		importOf := func(want string, limit time.Duration) (string, time.Duration) {
			var ip string
			took, err := Eventually(ctx, limit, 100*time.Millisecond, func(context.Context) error {
				var si mcsv1beta1.ServiceImport
				if err := a.Res.Get(ctx, "echo", "default", &si); err != nil {
					return err
				}
				var cs []string
				for _, c := range si.Status.Clusters {
					cs = append(cs, c.Cluster)
				}
				if got := strings.Join(cs, ","); got != want || len(si.Spec.IPs) != 1 || si.Spec.Type != mcsv1beta1.ClusterSetIP {
					return fmt.Errorf("a's ServiceImport default/echo: type %s, IPs %v, clusters %q; want ClusterSetIP, one IP, clusters %q", si.Spec.Type, si.Spec.IPs, got, want)
				}
				if !meta.IsStatusConditionTrue(si.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady)) {
					return fmt.Errorf("a's ServiceImport default/echo: not Ready: %+v", si.Status.Conditions)
				}
				ip = si.Spec.IPs[0]
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return ip, took
		}
		// answers sends n requests to url from a pod of a, in one exec,
		// and counts the answers by cluster.
		pod := anyClient(ctx, t, a)
		answers := func(url string, n int) map[string]int {
			out, err := a.Exec(ctx, pod, "sh", "-c", fmt.Sprintf("for i in $(seq %d); do timeout 3 busybox wget -q -O - %s || echo FAILED; echo; done", n, url))
			if err != nil {
				t.Fatalf("%d requests to %s from %s/%s: %v", n, url, a.Name, pod, err)
			}
			got := map[string]int{}
			for _, c := range []*Cluster{a, b} {
				got[c.Name] = strings.Count(out, "echo from cluster "+c.Name)
			}
			got["failed"] = strings.Count(out, "FAILED")
			return got
		}

		export(b)
		ip, took := importOf(b.Name, 5*time.Second)
		t.Logf("b exported echo: a's ServiceImport with clusterset IP %s after %s", ip, took.Round(10*time.Millisecond))
		url := "http://" + ip + "/"
		expectEcho(ctx, t, a, pod, url, b.Name, 30*time.Second)
		// b's export is Ready once a acknowledges its import (through the
		// exchange, within a few fetches of a second)
		if _, err := Eventually(ctx, 15*time.Second, 200*time.Millisecond, func(context.Context) error {
			var se mcsv1beta1.ServiceExport
			if err := b.Res.Get(ctx, "echo", "default", &se); err != nil {
				return err
			}
			c := meta.FindStatusCondition(se.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady))
			if c == nil || c.Status != metav1.ConditionTrue || c.Message != "imported by "+a.Name {
				return fmt.Errorf("b's ServiceExport echo: Ready %+v, want True, imported by %s", c, a.Name)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		// the clusterset name: A with the clusterset IP, SRV with the port
		dnsName := "echo.default.svc.clusterset.local"
		clusterSetDNS(ctx, t, a, pod, []string{"address", dnsName, ip})
		clusterSetDNS(ctx, t, a, pod, []string{"srv", dnsName, "80"})

		export(a)
		if ip2, _ := importOf(a.Name+","+b.Name, 10*time.Second); ip2 != ip {
			t.Errorf("the clusterset IP changed from %s to %s when a exported too", ip, ip2)
		}
		// kube-proxy may take a moment to program a's new endpoint: the
		// 50 requests count once both answered.
		if _, err := Eventually(ctx, 20*time.Second, time.Second, func(context.Context) error {
			got := answers(url, 50)
			if got[a.Name] == 0 || got[b.Name] == 0 || got["failed"] > 0 || got[a.Name]+got[b.Name] != 50 {
				return fmt.Errorf("50 requests to the clusterset IP: %v, want both clusters and no failure", got)
			}
			t.Logf("50 requests to the clusterset IP %s from a: %d answered by a, %d by b", ip, got[a.Name], got[b.Name])
			return nil
		}); err != nil {
			t.Fatal(err)
		}

		unexport(a)
		importOf(b.Name, 10*time.Second)
		if _, err := Eventually(ctx, 20*time.Second, time.Second, func(context.Context) error {
			if got := answers(url, 20); got[b.Name] != 20 {
				return fmt.Errorf("20 requests after a's unexport: %v, want all 20 from b", got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}

		unexport(b)
		if _, err := Eventually(ctx, 10*time.Second, 200*time.Millisecond, func(context.Context) error {
			var si mcsv1beta1.ServiceImport
			if err := a.Res.Get(ctx, "echo", "default", &si); !apierrors.IsNotFound(err) {
				return fmt.Errorf("a's ServiceImport default/echo after both unexported: %v", err)
			}
			var svc corev1.Service
			if err := a.Res.Get(ctx, mcs.DerivedName("echo"), "default", &svc); !apierrors.IsNotFound(err) {
				return fmt.Errorf("a's derived Service %s after both unexported: %v", mcs.DerivedName("echo"), err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		// no cluster exports it: the name is gone (NXDOMAIN)
		clusterSetDNS(ctx, t, a, pod, []string{"nxdomain", dnsName})
		return ctx
	}).Feature()
	testenv.Test(t, f)
}

// clusterSetDNS runs the prober's check args (address, srv or nxdomain of a
// clusterset.local name) in pod of c until it has passed for 2 s in a row,
// through the cluster DNS and its hook to the kubelink CoreDNS. Bound: 20 s
// (the kubelink CoreDNS's and the cluster DNS's caches hold an answer up to
// 5 s each, and the ServiceImport informer follows within a second); once
// passing, a failing check in the rest of the series (a flap) fails too.
func clusterSetDNS(ctx context.Context, t *testing.T, c *Cluster, pod string, args []string) {
	t.Helper()
	series, err := probeLoopReady(ctx, c, pod, "", args, time.Second, 100*time.Millisecond, 20*time.Second, settleFlags("/", 2*time.Second)...)
	if err != nil {
		t.Fatalf("%s: prober %v: %v", c.Name, args, err)
	}
	first := -1
	for i, p := range series {
		if p.ok && first < 0 {
			first = i
		}
		if !p.ok && first >= 0 {
			t.Fatalf("%s: prober %v passed at %s, then failed at %s", c.Name, args, series[first].at.Format(time.StampMilli), p.at.Format(time.StampMilli))
		}
	}
	// The prober stops once the checks passed for 2 s, counted to the end
	// of the last check; the series holds the checks' start times, so the
	// passing span it shows is 2 s less the last check's duration.
	if first < 0 || series[len(series)-1].at.Sub(series[first].at) < 1500*time.Millisecond || len(series)-first < 5 {
		t.Fatalf("%s: prober %v did not pass for 2 s within 20 s (%d checks, the first passing: %d)", c.Name, args, len(series), first)
	}
	t.Logf("%s: %v passed %s after the first check", c.Name, args, series[first].at.Sub(series[0].at).Round(10*time.Millisecond))
}

// TestServiceExportConflictAcrossClusters: a and b export a Service of the
// same name whose port "http" differs (80 in the older export, 8080 in the
// newer): both ServiceExports get Conflict True PortConflict (KEP-1645:
// reported on every exporting cluster), both clusters' ServiceImports
// carry the oldest export's port, and after the newer export is withdrawn
// the older's Conflict goes back to False.
func TestServiceExportConflictAcrossClusters(t *testing.T) {
	f := features.New("export conflict").Assess("PortConflict on both exports, the oldest port in both imports", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
		const name = "e2e-conflict"
		port := map[*Cluster]int32{lab.A: 80, lab.B: 8080}
		for _, c := range []*Cluster{lab.A, lab.B} {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: port[c], Protocol: corev1.ProtocolTCP}}}}
			if err := c.Res.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: %v", c.Name, err)
			}
			defer func(c *Cluster, svc *corev1.Service) {
				for _, o := range []k8s.Object{&mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}, svc} {
					if err := c.Res.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
						t.Errorf("%s: cleanup: %v", c.Name, err)
					}
				}
			}(c, svc)
		}
		// a exports first: the oldest export (the creation times are a
		// second apart at least, as the API server stamps them)
		for i, c := range []*Cluster{lab.A, lab.B} {
			if i > 0 {
				time.Sleep(1100 * time.Millisecond)
			}
			if err := c.Res.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
				t.Fatalf("%s: exporting %s: %v", c.Name, name, err)
			}
		}
		conflictIn := func(c *Cluster) (string, error) {
			var se mcsv1beta1.ServiceExport
			if err := c.Res.Get(ctx, name, "default", &se); err != nil {
				return "", err
			}
			for _, cond := range se.Status.Conditions {
				if cond.Type == string(mcsv1beta1.ServiceExportConditionConflict) {
					return fmt.Sprintf("%s %s: %s", cond.Status, cond.Reason, cond.Message), nil
				}
			}
			return "", fmt.Errorf("%s: ServiceExport %s has no Conflict condition yet", c.Name, name)
		}
		took, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
			for _, c := range []*Cluster{lab.A, lab.B} {
				got, err := conflictIn(c)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(got, "True PortConflict") || !strings.Contains(got, "the oldest export (cluster "+lab.A.Name) {
					return fmt.Errorf("%s: Conflict %q, want True PortConflict, a's export the oldest", c.Name, got)
				}
				var si mcsv1beta1.ServiceImport
				if err := c.Res.Get(ctx, name, "default", &si); err != nil {
					return fmt.Errorf("%s: ServiceImport %s: %v", c.Name, name, err)
				}
				if len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 80 || len(si.Status.Clusters) != 2 {
					return fmt.Errorf("%s: ServiceImport ports %+v, clusters %+v; want a's http:80 alone, both clusters", c.Name, si.Spec.Ports, si.Status.Clusters)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("PortConflict on both exports and a's port in both imports after %s", took.Round(10*time.Millisecond))

		if err := lab.B.Res.Delete(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
		if _, err := Eventually(ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
			got, err := conflictIn(lab.A)
			if err != nil || !strings.HasPrefix(got, "False NoConflicts") {
				return fmt.Errorf("a's Conflict after b's unexport: %q (%v), want False NoConflicts", got, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		return ctx
	}).Feature()
	testenv.Test(t, f)
}
