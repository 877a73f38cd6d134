package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v4/pkg/action"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/meshdns"
	"github.com/kubelink/kubelink/lib/testenv"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

const chartDir = "../../deploy/chart/kubelink"

// run runs kubelinkctl with args and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// fakeCluster is a real API server shaped like a small cluster: two Ready
// nodes with pod CIDRs and addresses, kube-dns, a CoreDNS Corefile. No
// kubelet runs, so no pod ever starts.
func fakeCluster(t *testing.T) (kubeconfig string, cs kubernetes.Interface, c client.Client) {
	t.Helper()
	return fakeClusterOf(t, "kubelinkctl", "100.64.32.0/20", "10.130", "172.18.0")
}

// fakeClusterOf is fakeCluster with a name (its kubeconfig context), a
// service CIDR, the first two octets of its nodes' pod CIDRs and the first
// three of their addresses. Its kubeconfig's cluster, user and context are
// all named name, so that several can be merged (KUBECONFIG=a:b).
func fakeClusterOf(t *testing.T, name, serviceCIDR, podNet, nodeNet string) (kubeconfig string, cs kubernetes.Interface, c client.Client) {
	t.Helper()
	cp := &testenv.ControlPlane{Name: name, ServiceCIDR: serviceCIDR}
	testenv.StartControlPlaneForTest(t, cp)
	ctx := context.Background()
	var err error
	if cs, err = kubernetes.NewForConfig(cp.Config()); err != nil {
		t.Fatal(err)
	}
	if c, err = cp.Client(); err != nil {
		t.Fatal(err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for i, ip := range []string{nodeNet + ".3", nodeNet + ".2"} {
		n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)},
			Spec: corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("%s.%d.0/24", podNet, i)}}}, metav1.CreateOptions{})
		must("node", err)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		must("node status", err)
	}
	dnsIP := strings.TrimSuffix(strings.SplitN(serviceCIDR, "/", 2)[0], ".0") + ".10"
	_, err = cs.CoreV1().Services("kube-system").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns"},
		Spec: corev1.ServiceSpec{ClusterIP: dnsIP, Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}}}, metav1.CreateOptions{})
	must("kube-dns", err)
	_, err = cs.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf\n}\n"}}, metav1.CreateOptions{})
	must("coredns ConfigMap", err)
	raw, err := cp.KubeConfig()
	must("kubeconfig", err)
	kc, err := clientcmd.Load(raw)
	must("parsing the kubeconfig", err)
	cur := kc.Contexts[kc.CurrentContext]
	if cur == nil {
		t.Fatalf("the test kubeconfig has no current context")
	}
	named := clientcmdapi.NewConfig()
	named.Clusters[name] = kc.Clusters[cur.Cluster]
	named.AuthInfos[name] = kc.AuthInfos[cur.AuthInfo]
	named.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	named.CurrentContext = name
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	must("writing kubeconfig", clientcmd.WriteToFile(*named, kubeconfig))
	return kubeconfig, cs, c
}

func TestInstallRefusesBadInputAndChangesNothing(t *testing.T) {
	kubeconfig, cs, c := fakeCluster(t)
	ctx := context.Background()
	base := []string{"install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "eu", "--skip-image-check"}

	// A peer of this cluster already has 192.168.0.5.
	peer := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "us"},
		Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.5/24", CIDR: "100.64.48.0/20", Endpoint: "10.0.0.1:30777"}}
	if err := c.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(registry.New())
	t.Cleanup(reg.Close)
	regHost := strings.TrimPrefix(reg.URL, "http://")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"mesh CIDR overlaps the service CIDR", []string{"--mesh-cidr", "100.64.32.0/24"},
			[]string{"mesh CIDR 100.64.32.0/24 overlaps the service CIDR 100.64.32.0/20 of this cluster (from ServiceCIDR kubernetes)"}},
		{"mesh CIDR overlaps the pod CIDR", []string{"--mesh-cidr", "10.130.0.0/16"},
			[]string{"overlaps the pod CIDR 10.130.0.0/23", "spec.podCIDRs of 2 nodes"}},
		{"mesh CIDR overlaps the node network", []string{"--mesh-cidr", "172.18.0.0/24"}, []string{"overlaps the node network 172.18.0.0/24"}},
		{"taken address", []string{"--mesh-cidr", "192.168.0.0/24", "--address", "192.168.0.5"},
			[]string{"mesh address 192.168.0.5 is taken by the peer of KubeLink us"}},
		{"address outside the mesh", []string{"--mesh-cidr", "192.168.0.0/24", "--address", "192.168.1.5"},
			[]string{"--address \"192.168.1.5\": must be a host address inside --mesh-cidr 192.168.0.0/24"}},
		{"missing images", []string{"--mesh-cidr", "192.168.0.0/24", "--skip-image-check=false", "--registry", regHost, "--version", "v9.9.9"},
			[]string{"image " + regHost + "/kubelink/broker:v9.9.9 is not in its registry", "kubelink/coredns:v9.9.9", "kubelink/mcs:v9.9.9", "make images-push"}},
		{"missing images, registry and tag given as values", []string{"--mesh-cidr", "192.168.0.0/24", "--skip-image-check=false",
			"--set", "image.registry=" + regHost + ",image.tag=v8.8.8,images.broker=acme/broker"},
			[]string{"image " + regHost + "/acme/broker:v8.8.8 is not in its registry", regHost + "/kubelink/router:v8.8.8"}},
		{"no name", []string{"--name", "", "--mesh-cidr", "192.168.0.0/24"}, []string{"--name is required"}},
		{"hostport on two nodes without a gateway node", []string{"--mesh-cidr", "192.168.0.0/24", "--expose", "hostport"},
			[]string{"--expose hostport pins the broker to one node: name it with --gateway-node (one of node-0, node-1)"}},
		{"hostport on a node that is not there", []string{"--mesh-cidr", "192.168.0.0/24", "--expose", "hostport", "--gateway-node", "gw-9"},
			[]string{`--gateway-node "gw-9": no such node (the nodes: node-0, node-1)`}},
		{"a gateway node with nodeport", []string{"--mesh-cidr", "192.168.0.0/24", "--gateway-node", "node-0"},
			[]string{"--gateway-node is for --expose hostport only"}},
		{"a DNS address outside the service CIDR", []string{"--mesh-cidr", "192.168.0.0/24", "--set", "dns.serviceIP=10.0.0.53"},
			[]string{`dns.serviceIP "10.0.0.53": must be an address of the service CIDR 100.64.32.0/20`}},
		{"a value the chart refuses", []string{"--mesh-cidr", "192.168.0.0/24", "--set", "ipForwarding=off"},
			[]string{"the chart refuses these values", "ipForwarding=off is not valid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := run(t, append(append([]string{}, base...), tc.args...)...)
			if err == nil {
				t.Fatalf("install succeeded; stderr:\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
	// Nothing changed: no namespace, no release, no LocalLink, Corefile as
	// it was (the CRDs come with the test's control plane).
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace kubelink exists after refused installs (err %v)", err)
	}
	var links v1alpha1.KubeLinkList
	if err := c.List(ctx, &links); err != nil || len(links.Items) != 1 {
		t.Errorf("KubeLinks after refused installs: %d (%v), want only the peer", len(links.Items), err)
	}
	cm, _ := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if strings.Contains(cm.Data["Corefile"], "kubelink:53") {
		t.Error("the Corefile was changed by a refused install")
	}

	// With the images in the registry the check passes (a dry run).
	for _, repo := range []string{"broker", "router", "meshdns", "certwatch", "coredns", "mcs"} {
		img, _ := random.Image(64, 1)
		ref, _ := name.ParseReference(regHost+"/kubelink/"+repo+":v9.9.9", name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, []byte("ipForwarding: sysctl\nbroker:\n  replicas: 3\ndns:\n  serviceIP: 100.64.32.53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(t, "install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "eu", "--mesh-cidr", "192.168.0.0/24",
		"--registry", regHost, "--version", "v9.9.9", "--dry-run", "-o", "json", "-f", vf, "--set", "image.pullPolicy=Always,broker.replicas=4")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr)
	}
	var p plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("dry-run output is not the plan as JSON: %v\n%s", err, out)
	}
	// The first free address (192.168.0.5 is the peer's, .1 is free), a
	// Ready node's address with the WireGuard NodePort, the DNS address of
	// the values file (else service CIDR + 11, as in TestInstallAndUpgradeInPlace).
	if p.Address != "192.168.0.1/24" || p.Endpoint != "172.18.0.3:30777" || p.CoreDNSIP != "100.64.32.53" || p.Upgrade {
		t.Errorf("plan: address %s, endpoint %s, DNS %s, upgrade %v", p.Address, p.Endpoint, p.CoreDNSIP, p.Upgrade)
	}
	// --values and --set merge into the discovered values, --set last.
	broker, _ := p.Values["broker"].(map[string]any)
	image, _ := p.Values["image"].(map[string]any)
	if p.Values["ipForwarding"] != "sysctl" || fmt.Sprint(broker["replicas"]) != "4" || broker["expose"] == nil ||
		image["pullPolicy"] != "Always" || image["registry"] != regHost || image["tag"] != "v9.9.9" {
		t.Errorf("values %v", p.Values)
	}
	for _, want := range []string{"checking that the registry has the 6 images", "service CIDR 100.64.32.0/20 (from ServiceCIDR kubernetes)", "dry run: nothing changed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("progress lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace kubelink exists after a dry run (err %v)", err)
	}
}

// An install against an API server with no kubelet: the release, the
// LocalLink and the DNS hook are there; the wait for a ready broker times
// out with a message that says what it waited for. Run again with other
// values, it upgrades in place.
func TestInstallAndUpgradeInPlace(t *testing.T) {
	kubeconfig, cs, c := fakeCluster(t)
	ctx := context.Background()
	args := []string{"install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "eu", "--mesh-cidr", "192.168.0.0/24",
		"--skip-image-check", "--timeout", "8s"}
	_, stderr, err := run(t, append(args, "--set", "broker.replicas=3")...)
	// No controller-manager runs: the Deployment never reports a rollout.
	if err == nil || !strings.Contains(err.Error(), "timed out after") || !strings.Contains(err.Error(), "the broker Deployment to roll out") {
		t.Fatalf("install without a kubelet: %v, want a timeout waiting for a ready broker\n%s", err, stderr)
	}
	var kl v1alpha1.KubeLink
	if err := c.Get(ctx, client.ObjectKey{Name: "eu"}, &kl); err != nil {
		t.Fatalf("LocalLink: %v", err)
	}
	if kl.Spec.Endpoint != "LocalLink" || kl.Spec.ClusterAddress != "192.168.0.1/24" || kl.Spec.CIDR != "100.64.32.0/20" ||
		kl.Annotations[EndpointAnnotation] != "172.18.0.3:30777" {
		t.Errorf("LocalLink spec %+v, annotations %v", kl.Spec, kl.Annotations)
	}
	cfg, err := cs.CoreV1().ConfigMaps("kubelink").Get(ctx, "kubelink-cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"POD_CIDR": "10.130.0.0/23", "SERVICE_CIDR": "100.64.32.0/20", "NODE_CIDR": "172.18.0.0/24", "KUBELINK_MODE": "wireguard"} {
		if cfg.Data[k] != want {
			t.Errorf("kubelink-cluster %s = %q, want %q", k, cfg.Data[k], want)
		}
	}
	cm, _ := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if !strings.Contains(cm.Data["Corefile"], "kubelink:53 {") || !strings.Contains(cm.Data["Corefile"], "forward . 100.64.32.11") {
		t.Errorf("the Corefile has no mesh zone:\n%s", cm.Data["Corefile"])
	}
	// kubelink-mcs runs (the chart's default), so the cluster DNS forwards
	// the clusterset zone to the kubelink CoreDNS as well.
	if strings.Count(cm.Data["Corefile"], "clusterset.local:53 {") != 1 || strings.Count(cm.Data["Corefile"], "forward . 100.64.32.11") != 2 {
		t.Errorf("the Corefile lacks the clusterset zone, or has a block twice:\n%s", cm.Data["Corefile"])
	}
	for _, want := range []string{"created CRD serviceexports.multicluster.x-k8s.io", "installing release kubelink", "waiting for the broker Deployment to roll out"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("progress lacks %q:\n%s", want, stderr)
		}
	}

	// What Kubernetes' controllers made while an earlier chart's Service
	// selected the broker pods: gone after the upgrade; the active
	// broker's own slice stays.
	ready := true
	leftover := func(name, managedBy string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kubelink",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubelink-broker", discoveryv1.LabelManagedBy: managedBy}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.130.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}
	}
	for _, s := range []*discoveryv1.EndpointSlice{leftover("kubelink-broker-x7k2p", "endpointslice-controller.k8s.io"),
		leftover("kubelink-broker-active", "kubelink-broker")} {
		if _, err := cs.DiscoveryV1().EndpointSlices("kubelink").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The Endpoints controller's object, as an older chart's selector left
	// it: the deprecated type is what there is to clean up.
	//lint:ignore SA1019 the selector era's Endpoints are this test's subject
	leftEndpoints := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubelink-broker"},
		//lint:ignore SA1019 as above
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.130.0.9"}}}}}
	if _, err := cs.CoreV1().Endpoints("kubelink").Create(ctx, leftEndpoints, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Someone scaled the broker by hand (another field manager owns
	// spec.replicas now): the upgrade sets the chart's value again rather
	// than failing on the conflict (checked below: replicas 3).
	dep, err := cs.AppsV1().Deployments("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	dep.Spec.Replicas = &zero
	if _, err := cs.AppsV1().Deployments("kubelink").Update(ctx, dep, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}

	// An older KubeLink CRD (without spec.presharedKeySecret), and the
	// ServiceExport CRD as another MCS implementation would own it: helm
	// upgrades touch neither; install brings kubelink's own up to the
	// chart's and leaves the other alone.
	var klCRD, seCRD apiextensionsv1.CustomResourceDefinition
	must(t, c.Get(ctx, client.ObjectKey{Name: "kubelinks.kubelink.mandelsoft.org"}, &klCRD))
	delete(klCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties, "presharedKeySecret")
	var rules apiextensionsv1.ValidationRules
	for _, r := range klCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].XValidations {
		if !strings.Contains(r.Rule, "presharedKeySecret") {
			rules = append(rules, r)
		}
	}
	spec := klCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	spec.XValidations = rules
	klCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = spec
	must(t, c.Update(ctx, &klCRD))
	must(t, c.Get(ctx, client.ObjectKey{Name: "serviceexports.multicluster.x-k8s.io"}, &seCRD))
	seCRD.Annotations = map[string]string{"example.org/owner": "another-mcs"}
	delete(seCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties, "exportedLabels")
	must(t, c.Update(ctx, &seCRD))
	foreignVersion := seCRD.ResourceVersion

	// Again, with the bridge: an upgrade of the same release, the address kept.
	start := time.Now()
	_, stderr, err = run(t, append(args, "--data-plane", "bridge")...)
	if err == nil || !strings.Contains(stderr, "upgrading release kubelink in namespace kubelink (revision 1)") {
		t.Fatalf("second install: %v, want an upgrade of revision 1 that times out\n%s", err, stderr)
	}
	t.Logf("upgrade ran %s: %v", time.Since(start).Round(time.Millisecond), err)
	if _, err := cs.CoreV1().Endpoints("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the selector era's Endpoints kubelink-broker after the upgrade: %v, want deleted", err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("kubelink").Get(ctx, "kubelink-broker-x7k2p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the controller's EndpointSlice after the upgrade: %v, want deleted", err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("kubelink").Get(ctx, "kubelink-broker-active", metav1.GetOptions{}); err != nil {
		t.Errorf("the active broker's EndpointSlice after the upgrade: %v, want kept", err)
	}
	if !strings.Contains(stderr, "deleted the EndpointSlice kubelink/kubelink-broker-x7k2p (managed by endpointslice-controller.k8s.io)") ||
		!strings.Contains(stderr, "deleted the Endpoints kubelink/kubelink-broker") {
		t.Errorf("the upgrade does not say what it deleted:\n%s", stderr)
	}
	must(t, c.Get(ctx, client.ObjectKey{Name: "kubelinks.kubelink.mandelsoft.org"}, &klCRD))
	if _, ok := klCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["presharedKeySecret"]; !ok {
		t.Error("the KubeLink CRD after the upgrade lacks spec.presharedKeySecret: an upgrade must bring kubelink's CRDs to the chart's")
	}
	must(t, c.Get(ctx, client.ObjectKey{Name: "serviceexports.multicluster.x-k8s.io"}, &seCRD))
	if seCRD.ResourceVersion != foreignVersion {
		t.Errorf("the upgrade changed the ServiceExport CRD, which is not kubelink's: resourceVersion %s, was %s", seCRD.ResourceVersion, foreignVersion)
	}
	for _, want := range []string{"updated CRD kubelinks.kubelink.mandelsoft.org to the chart's"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the upgrade's progress lacks %q:\n%s", want, stderr)
		}
	}
	cfg, _ = cs.CoreV1().ConfigMaps("kubelink").Get(ctx, "kubelink-cluster", metav1.GetOptions{})
	if cfg.Data["KUBELINK_MODE"] != "bridge" {
		t.Errorf("after the upgrade KUBELINK_MODE = %q", cfg.Data["KUBELINK_MODE"])
	}
	// What the first install set and the second did not stays.
	if d, err := cs.AppsV1().Deployments("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{}); err != nil || d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("after the upgrade the broker Deployment has replicas %v (%v), want the 3 the first install set", ptrString(d.Spec.Replicas), err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "eu"}, &kl); err != nil || kl.Spec.ClusterAddress != "192.168.0.1/24" || kl.Annotations[EndpointAnnotation] != "172.18.0.3:30088" {
		t.Errorf("LocalLink after the upgrade: %+v %v (%v)", kl.Spec, kl.Annotations, err)
	}
	out, _, err := run(t, "version", "--kubeconfig", kubeconfig, "-o", "json")
	var v versionInfo
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Installed != "0.1.0" || v.Revision != 2 || v.Chart != "kubelink-0.1.0" {
		t.Errorf("version: %v %+v\n%s", err, v, out)
	}
	// A release applied client side (helm 3, or helm 4 with
	// --server-side=false) upgrades as well: helm refuses forced conflicts
	// there, so install asks for them only on a server-side release.
	flags := genericclioptions.NewConfigFlags(true)
	flags.KubeConfig = &kubeconfig
	hcfg := action.NewConfiguration()
	if err := hcfg.Init(flags, "kubelink", "secret"); err != nil {
		t.Fatal(err)
	}
	last, err := hcfg.Releases.Last(releaseName)
	if err != nil {
		t.Fatal(err)
	}
	rel := last.(*releasev1.Release)
	rel.ApplyMethod = string(releasev1.ApplyMethodClientSideApply)
	if err := hcfg.Releases.Update(rel); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = run(t, append(args, "--data-plane", "bridge")...)
	if err == nil || strings.Contains(err.Error(), "helm upgrade") || !strings.Contains(stderr, "upgrading release kubelink in namespace kubelink (revision 2)") {
		t.Errorf("upgrade of a client-side release: %v, want only the rollout's timeout\n%s", err, stderr)
	}

	// A second cluster name on the same cluster is refused.
	if _, _, err := run(t, "install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "other", "--mesh-cidr", "192.168.0.0/24", "--skip-image-check"); err == nil ||
		!strings.Contains(err.Error(), `already in the mesh as "eu"`) {
		t.Errorf("install as another name: %v", err)
	}
}

// --expose hostport: one broker pinned to the gateway node, bound to the
// data plane's port there, announced at that node's ExternalIP (else its
// InternalIP). A gateway node that is not Ready is refused.
func TestInstallHostPort(t *testing.T) {
	kubeconfig, cs, c := fakeCluster(t)
	ctx := context.Background()
	args := []string{"install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "edge", "--mesh-cidr", "192.168.0.0/24",
		"--skip-image-check", "--expose", "hostport"}
	// node-1 (172.18.0.2) has only an InternalIP, named by the node's name.
	out, stderr, err := run(t, append(args, "--gateway-node", "node-1", "--dry-run", "-o", "json")...)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr)
	}
	var p plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	expose := p.Values["broker"].(map[string]any)["expose"].(map[string]any)
	if p.Endpoint != "172.18.0.2:8777" || expose["type"] != "HostPort" || fmt.Sprint(expose["hostPort"]) != "map[node:node-1]" {
		t.Errorf("hostport on node-1: endpoint %s, broker.expose %v; want 172.18.0.2:8777, HostPort on node-1", p.Endpoint, expose)
	}

	// node-0 gets an ExternalIP and a hostname label of its own: the label
	// names it (also on the command line), the ExternalIP is announced.
	n, err := cs.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels = map[string]string{corev1.LabelHostname: "gw-0"}
	if n, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"})
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = run(t, append(args, "--gateway-node", "gw-0", "--data-plane", "bridge", "--timeout", "8s")...)
	if err == nil || !strings.Contains(err.Error(), "the broker Deployment to roll out") {
		t.Fatalf("install without a kubelet: %v, want a timeout waiting for the broker\n%s", err, stderr)
	}
	d, err := cs.AppsV1().Deployments("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 1 || d.Spec.Template.Spec.NodeSelector[corev1.LabelHostname] != "gw-0" {
		t.Errorf("broker Deployment: replicas %d, nodeSelector %v; want 1 on gw-0", *d.Spec.Replicas, d.Spec.Template.Spec.NodeSelector)
	}
	bound := map[string]int32{}
	for _, ct := range d.Spec.Template.Spec.Containers {
		for _, cp := range ct.Ports {
			if cp.HostPort != 0 {
				bound[cp.Name] = cp.HostPort
			}
		}
	}
	if fmt.Sprint(bound) != "map[bridge:8088]" {
		t.Errorf("host ports %v, want the bridge's 8088 only", bound)
	}
	var kl v1alpha1.KubeLink
	if err := c.Get(ctx, client.ObjectKey{Name: "edge"}, &kl); err != nil || kl.Annotations[EndpointAnnotation] != "203.0.113.7:8088" {
		t.Errorf("LocalLink annotations %v (%v), want the endpoint 203.0.113.7:8088", kl.Annotations, err)
	}
	if svc, err := cs.CoreV1().Services("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{}); err != nil || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("broker Service: %v (%v), want a ClusterIP", svc.Spec.Type, err)
	}

	// Run again without --gateway-node: the release's node (gw-0) stays.
	out, stderr, err = run(t, append(args, "--dry-run", "-o", "json")...)
	if err != nil || json.Unmarshal([]byte(out), &p) != nil || p.Endpoint != "203.0.113.7:8777" {
		t.Errorf("hostport again without --gateway-node: %v, endpoint %q, want the release's gw-0 (203.0.113.7:8777)\n%s", err, p.Endpoint, stderr)
	}

	// A cordoned gateway node is refused (the pinned broker could not start).
	n, _ = cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	n.Spec.Unschedulable = true
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, append(args, "--gateway-node", "node-1", "--dry-run")...); err == nil || !strings.Contains(err.Error(), "--gateway-node node-1: the node is cordoned") {
		t.Errorf("hostport on a cordoned node: %v", err)
	}

	// A gateway node that is not Ready is refused.
	n, _ = cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, append(args, "--gateway-node", "node-1", "--dry-run")...); err == nil || !strings.Contains(err.Error(), "--gateway-node node-1: the node is not Ready") {
		t.Errorf("hostport on a node that is not Ready: %v", err)
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func TestUnreachableCluster(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: gone, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: gone, context: {cluster: gone, user: u}}]
current-context: gone
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := run(t, "install", "--kubeconfig", kc, "--chart", chartDir, "--name", "eu", "--mesh-cidr", "192.168.0.0/24")
	if err == nil || !strings.Contains(err.Error(), `cannot reach the cluster of context "gone" at https://127.0.0.1:1`) {
		t.Errorf("unreachable cluster: %v", err)
	}
	_, _, err = run(t, "version", "--kubeconfig", kc, "--context", "nope")
	if err == nil || !strings.Contains(err.Error(), `context "nope" is not in the kubeconfig`) {
		t.Errorf("unknown context: %v", err)
	}
}

// --expose loadbalancer without --announce: install waits for the
// Service's LoadBalancer address (set here, as a cloud's controller
// would; 203.0.113.10 is TEST-NET-3 and never contacted) and makes it the
// endpoint and the bridge's certificate name.
func TestInstallWaitsForTheLoadBalancerAddress(t *testing.T) {
	kubeconfig, cs, c := fakeCluster(t)
	ctx := context.Background()
	done := make(chan error, 1)
	var stderr string
	go func() {
		var err error
		_, stderr, err = run(t, "install", "--kubeconfig", kubeconfig, "--chart", chartDir, "--name", "eu", "--mesh-cidr", "192.168.0.0/24",
			"--data-plane", "bridge", "--expose", "loadbalancer", "--skip-image-check", "--timeout", "20s")
		done <- err
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		svc, err := cs.CoreV1().Services("kubelink").Get(ctx, "kubelink-broker", metav1.GetOptions{})
		if err == nil {
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				t.Fatalf("Service kubelink-broker has type %s, want LoadBalancer", svc.Spec.Type)
			}
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}}
			if _, err := cs.CoreV1().Services("kubelink").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Service kubelink-broker within 15 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "the broker Deployment to roll out") {
		t.Fatalf("install: %v, want the timeout waiting for the broker (no kubelet)\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "waiting for the LoadBalancer address") || !strings.Contains(stderr, "LoadBalancer address 203.0.113.10:8088") {
		t.Errorf("progress lacks the LoadBalancer wait:\n%s", stderr)
	}
	var kl v1alpha1.KubeLink
	if err := c.Get(ctx, client.ObjectKey{Name: "eu"}, &kl); err != nil || kl.Annotations[EndpointAnnotation] != "203.0.113.10:8088" {
		t.Errorf("LocalLink endpoint %q (%v), want 203.0.113.10:8088", kl.Annotations[EndpointAnnotation], err)
	}
	cfg, err := cs.CoreV1().ConfigMaps("kubelink").Get(ctx, "kubelink-cluster", metav1.GetOptions{})
	if err != nil || cfg.Data["KUBELINK_BRIDGE_NAME"] != "203.0.113.10" {
		t.Errorf("KUBELINK_BRIDGE_NAME %q (%v), want the LoadBalancer address", cfg.Data["KUBELINK_BRIDGE_NAME"], err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// kubelink's blocks go, another's clusterset.local block stays (another
// MCS implementation may hook the zone); the rest is kept as it was.
func TestRemoveOurBlocksLeavesOthers(t *testing.T) {
	base := ".:53 {\n    errors\n    kubernetes cluster.local\n}"
	block, err := meshdns.CorednsCustom([]meshdns.MeshInput{{Name: "default", Domain: meshZone}}, meshdns.ClusterSetZone, netip.MustParseAddr("100.64.0.11"), 53)
	if err != nil {
		t.Fatal(err)
	}
	ours := strings.Replace(strings.TrimRight(block, "\n"), "\nclusterset.local:53 {", "\n"+clusterSetMarker+"\nclusterset.local:53 {", 1)
	foreign := "clusterset.local:53 {\n    forward . 10.0.0.99\n}"
	for _, c := range []struct {
		name, cf, want string
		removed        []string
	}{
		{"ours", base + "\n" + ours + "\n", base, []string{"kubelink", "clusterset.local"}},
		{"another's clusterset block", base + "\n" + foreign + "\n", base + "\n" + foreign, nil},
		{"ours beside another's", base + "\n" + foreign + "\n" + ours + "\n", base + "\n" + foreign, []string{"kubelink", "clusterset.local"}},
		{"none", base + "\n", base, nil},
	} {
		got, removed := removeOurBlocks(c.cf)
		if got != c.want || !slices.Equal(removed, c.removed) {
			t.Errorf("%s: removed %v, left\n%s\nwant %v and\n%s", c.name, removed, got, c.removed, c.want)
		}
	}
}
