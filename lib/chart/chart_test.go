package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kubelink/kubelink/lib/testenv"
)

type objects = []*unstructured.Unstructured

// chartMeta is what the tests need of Chart.yaml.
func chartMeta(t *testing.T) (version, appVersion string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.ChartDir(), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.AppVersion == "" {
		t.Fatal("Chart.yaml has no appVersion")
	}
	return c.Version, c.AppVersion
}

func convert(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// get returns the object of that kind and name converted into T, failing
// the test when it is missing.
func get[T any](t *testing.T, objs objects, kind, name string) *T {
	t.Helper()
	u := testenv.ChartObject(objs, kind, name)
	if u == nil {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	var v T
	convert(t, u, &v)
	return &v
}

// workload is a pod template of a Deployment or DaemonSet.
type workload struct {
	kind, name string
	template   corev1.PodTemplateSpec
}

func workloads(t *testing.T, objs objects) []workload {
	t.Helper()
	var ws []workload
	for _, u := range objs {
		switch u.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			convert(t, u, &d)
			ws = append(ws, workload{"Deployment", d.Name, d.Spec.Template})
		case "DaemonSet":
			var d appsv1.DaemonSet
			convert(t, u, &d)
			ws = append(ws, workload{"DaemonSet", d.Name, d.Spec.Template})
		case "StatefulSet", "Job", "CronJob", "Pod", "ReplicaSet":
			t.Fatalf("%s %s: the tests do not know this kind of workload", u.GetKind(), u.GetName())
		}
	}
	if len(ws) == 0 {
		t.Fatal("no workloads rendered")
	}
	return ws
}

// allContainers are the init containers and containers of a pod.
func allContainers(spec *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func brokerPod(t *testing.T, objs objects) *corev1.PodSpec {
	t.Helper()
	return &get[appsv1.Deployment](t, objs, "Deployment", "kubelink-broker").Spec.Template.Spec
}

func clusterConfig(t *testing.T, objs objects) map[string]string {
	t.Helper()
	return get[corev1.ConfigMap](t, objs, "ConfigMap", "kubelink-cluster").Data
}

// labRunTime are the values lab/scripts/lab-up.sh sets at run time on top
// of lab/values/<cluster>.yaml: those kubelinkctl install sets from its
// flags and what it discovers.
func labRunTime(dataPlane string) string {
	return "cluster.nodeCIDR=172.18.0.0/16,bridge.name=172.18.0.2,image.tag=v0.1.0-3-gabcdef0,dataPlane=" + dataPlane
}

// labRoles are the values that make lab cluster a the mesh authority
// (install --mesh-authority) and b a member (what kubelinkctl join sets
// when it registers b at a), with each cluster's discovered networks and
// identity as install sets them.
var labRoles = map[string][]string{
	"a": {"--set-string", "cluster.podCIDR=10.110.0.0/16,cluster.serviceCIDR=100.64.0.0/20,bridge.identities=kubelink://default/a",
		"--set", "meshAuthority.enabled=true"},
	"b": {"--set-string", "cluster.podCIDR=10.120.0.0/16,cluster.serviceCIDR=100.64.16.0/20,bridge.identities=kubelink://default/b,certificates.mode=csr",
		"--set", "meshMember.enabled=true"},
}

func labValues(t *testing.T, cluster string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "lab", "values", cluster+".yaml")
}

func TestLint(t *testing.T) {
	var required []string
	for k, v := range testenv.ChartRequiredValues {
		required = append(required, k+"="+v)
	}
	sort.Strings(required)
	cases := []struct {
		name string
		args []string
	}{
		{"lab a, wireguard", append([]string{"-f", labValues(t, "a"), "--set-string", labRunTime("wireguard")}, labRoles["a"]...)},
		{"lab a, bridge", append([]string{"-f", labValues(t, "a"), "--set-string", labRunTime("bridge")}, labRoles["a"]...)},
		{"lab b, wireguard", append([]string{"-f", labValues(t, "b"), "--set-string", labRunTime("wireguard")}, labRoles["b"]...)},
		{"lab b, bridge", append([]string{"-f", labValues(t, "b"), "--set-string", labRunTime("bridge")}, labRoles["b"]...)},
		{"lab c, as installed", []string{"-f", labValues(t, "c"), "--set-string", labRunTime("bridge") + ",cluster.podCIDR=10.130.0.0/16,cluster.serviceCIDR=100.64.32.0/20"}},
		{"required values only", []string{"--set-string", strings.Join(required, ",")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", testenv.ChartDir()}, c.args...)
			stdout, stderr, err := testenv.RunHelm(t, args...)
			if err != nil || strings.Contains(stdout, "[WARNING]") || strings.Contains(stdout, "[ERROR]") {
				t.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
			}
		})
	}
}

// The lab's values, with what install and join add, carry over what
// deploy/lab/{a,b} set before the chart.
func TestLabValues(t *testing.T) {
	cases := []struct {
		cluster      string
		config       map[string]string
		dnsIP        string
		certwatchArg string
	}{
		{"a", map[string]string{
			"POD_CIDR": "10.110.0.0/16", "SERVICE_CIDR": "100.64.0.0/20", "NODE_CIDR": "172.18.0.0/16",
			"KUBELINK_MODE": "wireguard", "KUBELINK_CERT_MODE": "self",
			"KUBELINK_BRIDGE_NAME": "172.18.0.2", "KUBELINK_BRIDGE_IDENTITIES": "kubelink://default/a",
		}, "100.64.0.11", "--sign-requests"},
		{"b", map[string]string{
			"POD_CIDR": "10.120.0.0/16", "SERVICE_CIDR": "100.64.16.0/20", "NODE_CIDR": "172.18.0.0/16",
			"KUBELINK_MODE": "wireguard", "KUBELINK_CERT_MODE": "csr",
			"KUBELINK_BRIDGE_NAME": "172.18.0.2", "KUBELINK_BRIDGE_IDENTITIES": "kubelink://default/b",
		}, "100.64.16.11", "--authority-secret=kubelink-authority"},
	}
	for _, c := range cases {
		t.Run(c.cluster, func(t *testing.T) {
			// The lab's file must override the test's required values.
			objs := testenv.RenderChart(t, nil, append([]string{"-f", labValues(t, c.cluster), "--set-string", labRunTime("wireguard")}, labRoles[c.cluster]...)...)
			if got := clusterConfig(t, objs); !reflect.DeepEqual(got, c.config) {
				t.Errorf("ConfigMap kubelink-cluster = %v, want %v", got, c.config)
			}
			if got := get[corev1.Service](t, objs, "Service", "kubelink-coredns").Spec.ClusterIP; got != c.dnsIP {
				t.Errorf("kubelink-coredns clusterIP = %s, want %s", got, c.dnsIP)
			}
			pod := brokerPod(t, objs)
			wantTol := []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
			if !reflect.DeepEqual(pod.Tolerations, wantTol) {
				t.Errorf("broker tolerations = %v, want %v", pod.Tolerations, wantTol)
			}
			if len(pod.InitContainers) != 0 || pod.SecurityContext == nil || len(pod.SecurityContext.Sysctls) != 0 {
				t.Errorf("the lab runs the default ipForwarding (the broker's own): init containers %v, securityContext %+v", pod.InitContainers, pod.SecurityContext)
			}
			if args := container(t, pod, "certwatch").Args; !slices.Contains(args, c.certwatchArg) {
				t.Errorf("certwatch args %v lack %s", args, c.certwatchArg)
			}
			for _, w := range workloads(t, objs) {
				for _, ctr := range allContainers(&w.template.Spec) {
					if !strings.HasSuffix(ctr.Image, ":v0.1.0-3-gabcdef0") || strings.Contains(ctr.Image, "/kubelink/") {
						t.Errorf("%s %s container %s: image %s, want kubelink/<component>:v0.1.0-3-gabcdef0", w.kind, w.name, ctr.Name, ctr.Image)
					}
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	version, appVersion := chartMeta(t)
	objs := testenv.RenderChart(t, nil)

	t.Run("labels", func(t *testing.T) {
		want := map[string]string{
			"app.kubernetes.io/instance":   testenv.ChartRelease,
			"app.kubernetes.io/version":    appVersion,
			"app.kubernetes.io/managed-by": "Helm",
			"app.kubernetes.io/part-of":    "kubelink",
			"helm.sh/chart":                "kubelink-" + version,
		}
		check := func(what string, labels map[string]string) {
			if labels["app.kubernetes.io/name"] == "" {
				t.Errorf("%s has no label app.kubernetes.io/name", what)
			}
			for k, v := range want {
				if labels[k] != v {
					t.Errorf("%s: label %s=%q, want %q", what, k, labels[k], v)
				}
			}
		}
		for _, o := range objs {
			check(o.GetKind()+" "+o.GetName(), o.GetLabels())
		}
		for _, w := range workloads(t, objs) {
			check("pod template of "+w.kind+" "+w.name, w.template.Labels)
		}
	})

	t.Run("selectors stay app.kubernetes.io/name", func(t *testing.T) {
		for _, name := range []string{"kubelink-broker", "kubelink-meshdns", "kubelink-coredns"} {
			d := get[appsv1.Deployment](t, objs, "Deployment", name)
			if want := map[string]string{"app.kubernetes.io/name": name}; !reflect.DeepEqual(d.Spec.Selector.MatchLabels, want) {
				t.Errorf("Deployment %s selector %v, want %v", name, d.Spec.Selector.MatchLabels, want)
			}
		}
		ds := get[appsv1.DaemonSet](t, objs, "DaemonSet", "kubelink-router")
		if want := map[string]string{"app.kubernetes.io/name": "kubelink-router"}; !reflect.DeepEqual(ds.Spec.Selector.MatchLabels, want) {
			t.Errorf("DaemonSet kubelink-router selector %v, want %v", ds.Spec.Selector.MatchLabels, want)
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, w := range workloads(t, objs) {
			for _, c := range allContainers(&w.template.Spec) {
				r := c.Resources
				if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
					t.Errorf("%s %s container %s: requests %v, limits %v; want CPU and memory requests and a memory limit", w.kind, w.name, c.Name, r.Requests, r.Limits)
				}
			}
		}
	})

	t.Run("images", func(t *testing.T) {
		for _, w := range workloads(t, objs) {
			for _, c := range allContainers(&w.template.Spec) {
				if !strings.HasPrefix(c.Image, "kubelink/") || !strings.HasSuffix(c.Image, ":"+appVersion) || strings.HasSuffix(c.Image, ":latest") {
					t.Errorf("%s %s container %s: image %s, want kubelink/<component>:%s", w.kind, w.name, c.Name, c.Image, appVersion)
				}
				if c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("%s %s container %s: imagePullPolicy %q", w.kind, w.name, c.Name, c.ImagePullPolicy)
				}
			}
		}
	})

	t.Run("router", func(t *testing.T) {
		pod := get[appsv1.DaemonSet](t, objs, "DaemonSet", "kubelink-router").Spec.Template.Spec
		if pod.PriorityClassName != "system-node-critical" {
			t.Errorf("router priorityClassName %q", pod.PriorityClassName)
		}
		if want := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}; !reflect.DeepEqual(pod.Tolerations, want) {
			t.Errorf("router tolerations %v, want %v", pod.Tolerations, want)
		}
		sc := container(t, &pod, "router").SecurityContext
		if sc == nil || sc.Privileged != nil && *sc.Privileged ||
			!reflect.DeepEqual(sc.Capabilities, &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}) {
			t.Errorf("router securityContext %+v, want NET_ADMIN only", sc)
		}
	})

	t.Run("pod disruption budget and rolling update by default", func(t *testing.T) {
		// Every healthy broker is Ready (the EndpointSlice, not readiness,
		// tells the active one), so a budget of one lets a drain take the
		// active broker while its standby is Ready, never both.
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "kubelink-broker")
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
			pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
			t.Errorf("PDB spec %+v", pdb.Spec)
		}
		d := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-broker")
		ru := d.Spec.Strategy.RollingUpdate
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
			ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 1 || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
			t.Errorf("broker strategy %+v, want a rolling update of one replica at a time, no surge", d.Spec.Strategy)
		}
	})

	t.Run("the active broker's EndpointSlice", func(t *testing.T) {
		// The Service has no selector; the broker that holds the Lease
		// writes the slice, told which one and its own pod by flags.
		d := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-broker")
		broker := container(t, &d.Spec.Template.Spec, "broker")
		for _, arg := range []string{"--active-endpoint-slice=kubelink-broker-active", "--active-service=kubelink-broker",
			"--pod-ip=$(POD_IP)", "--pod-uid=$(POD_UID)", "--node-name=$(NODE_NAME)"} {
			if !slices.Contains(broker.Args, arg) {
				t.Errorf("broker args %v lack %s", broker.Args, arg)
			}
		}
		env := map[string]string{}
		for _, e := range broker.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				env[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		for k, v := range map[string]string{"POD_IP": "status.podIP", "POD_UID": "metadata.uid", "NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name"} {
			if env[k] != v {
				t.Errorf("broker env %s from %q, want %q", k, env[k], v)
			}
		}
		if svc := get[corev1.Service](t, objs, "Service", "kubelink-broker"); len(svc.Spec.Selector) != 0 {
			t.Errorf("Service kubelink-broker selects %v: its endpoints would be the controller's (every Ready broker), not the active broker's slice", svc.Spec.Selector)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		svc := get[corev1.Service](t, objs, "Service", "kubelink-broker-metrics")
		var ports []int32
		for _, p := range svc.Spec.Ports {
			ports = append(ports, p.Port)
		}
		if !reflect.DeepEqual(ports, []int32{8080, 8081}) || svc.Spec.Selector["app.kubernetes.io/name"] != "kubelink-broker" || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("kubelink-broker-metrics: ports %v, spec %+v; want 8080 and 8081 of every broker pod, ready or not", ports, svc.Spec)
		}
		get[corev1.Service](t, objs, "Service", "kubelink-meshdns-metrics")
		if sm := testenv.ChartObjects(objs, "ServiceMonitor"); len(sm) != 0 {
			t.Errorf("a ServiceMonitor by default: %v", sm)
		}
	})

	t.Run("broker privileges", func(t *testing.T) {
		pod := brokerPod(t, objs)
		for _, c := range pod.Containers {
			if sc := c.SecurityContext; sc == nil || sc.Privileged != nil && *sc.Privileged ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("broker pod container %s: securityContext %+v, want unprivileged without privilege escalation", c.Name, sc)
			}
		}
		caps := container(t, pod, "broker").SecurityContext.Capabilities
		if !reflect.DeepEqual(caps, &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}) {
			t.Errorf("broker capabilities %+v, want exactly NET_ADMIN and NET_RAW added, ALL dropped", caps)
		}
		cw := container(t, pod, "certwatch").SecurityContext
		if cw.RunAsNonRoot == nil || !*cw.RunAsNonRoot || cw.ReadOnlyRootFilesystem == nil || !*cw.ReadOnlyRootFilesystem ||
			!reflect.DeepEqual(cw.Capabilities, &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}) {
			t.Errorf("certwatch securityContext %+v", cw)
		}
		if psc := pod.SecurityContext; psc == nil || psc.FSGroup == nil || *psc.FSGroup != 65532 ||
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("broker pod securityContext %+v, want fsGroup 65532 and seccomp RuntimeDefault", psc)
		}
		// ipForwarding=broker: the broker turns forwarding on itself, so no
		// init container and no sysctl.
		if len(pod.InitContainers) != 0 {
			t.Errorf("broker init containers %+v by default, want none", pod.InitContainers)
		}
		if len(pod.SecurityContext.Sysctls) != 0 {
			t.Errorf("pod sysctls %v by default", pod.SecurityContext.Sysctls)
		}
	})

	t.Run("meshdns and coredns unprivileged", func(t *testing.T) {
		for _, name := range []string{"kubelink-meshdns", "kubelink-coredns"} {
			d := get[appsv1.Deployment](t, objs, "Deployment", name)
			for _, c := range d.Spec.Template.Spec.Containers {
				sc := c.SecurityContext
				if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					!reflect.DeepEqual(sc.Capabilities, &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}) {
					t.Errorf("%s container %s: securityContext %+v", name, c.Name, sc)
				}
			}
		}
	})

	t.Run("cluster ConfigMap", func(t *testing.T) {
		want := map[string]string{
			"POD_CIDR": "10.110.0.0/16", "SERVICE_CIDR": "100.64.0.0/20", "NODE_CIDR": "172.18.0.0/16",
			"KUBELINK_MODE": "wireguard", "KUBELINK_CERT_MODE": "self",
			"KUBELINK_BRIDGE_NAME": "kubelink-a.example.com", "KUBELINK_BRIDGE_IDENTITIES": "",
		}
		if got := clusterConfig(t, objs); !reflect.DeepEqual(got, want) {
			t.Errorf("ConfigMap kubelink-cluster = %v, want %v", got, want)
		}
		if ip := get[corev1.Service](t, objs, "Service", "kubelink-coredns").Spec.ClusterIP; ip != "100.64.0.11" {
			t.Errorf("kubelink-coredns clusterIP %s", ip)
		}
	})

	t.Run("broker Service", func(t *testing.T) {
		svc := get[corev1.Service](t, objs, "Service", "kubelink-broker")
		got := map[string]int32{}
		for _, p := range svc.Spec.Ports {
			got[p.Name+"/"+string(p.Protocol)] = p.NodePort
		}
		want := map[string]int32{"wireguard/UDP": 30777, "bridge/TCP": 30088}
		if svc.Spec.Type != corev1.ServiceTypeNodePort || !reflect.DeepEqual(got, want) ||
			svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster {
			t.Errorf("kubelink-broker Service: type %s, node ports %v, externalTrafficPolicy %s", svc.Spec.Type, got, svc.Spec.ExternalTrafficPolicy)
		}
	})
}

// Two identities in one pod: the broker container holds only the broker's
// token, certwatch only its own (from the token Secret).
func TestTwoIdentitiesInTheBrokerPod(t *testing.T) {
	objs := testenv.RenderChart(t, nil)
	pod := brokerPod(t, objs)
	if pod.ServiceAccountName != "kubelink-broker" || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Fatalf("broker pod: serviceAccountName %q, automountServiceAccountToken %v; want kubelink-broker, false",
			pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	const tokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	tokenVolume := func(c *corev1.Container) string {
		var names []string
		for _, m := range c.VolumeMounts {
			if m.MountPath == tokenDir {
				names = append(names, m.Name)
			}
		}
		if len(names) != 1 {
			t.Fatalf("container %s mounts %v at %s, want one volume", c.Name, names, tokenDir)
		}
		return names[0]
	}
	if v := tokenVolume(container(t, pod, "broker")); v != "broker-token" {
		t.Errorf("broker container's token is volume %s", v)
	}
	if v := tokenVolume(container(t, pod, "certwatch")); v != "certwatch-token" {
		t.Errorf("certwatch container's token is volume %s", v)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if p := vols["broker-token"].Projected; p == nil || len(p.Sources) == 0 || p.Sources[0].ServiceAccountToken == nil {
		t.Errorf("volume broker-token %+v, want a projected token of the pod's account", vols["broker-token"])
	}
	if s := vols["certwatch-token"].Secret; s == nil || s.SecretName != "kubelink-certwatch-token" {
		t.Errorf("volume certwatch-token %+v, want Secret kubelink-certwatch-token", vols["certwatch-token"])
	}
	sec := get[corev1.Secret](t, objs, "Secret", "kubelink-certwatch-token")
	if sec.Type != corev1.SecretTypeServiceAccountToken || sec.Annotations[corev1.ServiceAccountNameKey] != "kubelink-certwatch" || len(sec.Data)+len(sec.StringData) != 0 {
		t.Errorf("Secret kubelink-certwatch-token: type %s, annotations %v; want an empty token Secret of kubelink-certwatch", sec.Type, sec.Annotations)
	}
	// The other pods run as their own accounts.
	for name, sa := range map[string]string{"kubelink-meshdns": "kubelink-meshdns", "kubelink-coredns": "kubelink-coredns"} {
		if got := get[appsv1.Deployment](t, objs, "Deployment", name).Spec.Template.Spec.ServiceAccountName; got != sa {
			t.Errorf("Deployment %s runs as %q, want %s", name, got, sa)
		}
	}
	if got := get[appsv1.DaemonSet](t, objs, "DaemonSet", "kubelink-router").Spec.Template.Spec.ServiceAccountName; got != "kubelink-router" {
		t.Errorf("DaemonSet kubelink-router runs as %q", got)
	}
}

// An upgrade with other values restarts the pods that read the ConfigMap.
func TestConfigChecksum(t *testing.T) {
	checksums := func(objs objects) map[string]string {
		m := map[string]string{}
		for _, w := range workloads(t, objs) {
			m[w.name] = w.template.Annotations["checksum/kubelink-cluster"]
		}
		return m
	}
	before := checksums(testenv.RenderChart(t, nil))
	after := checksums(testenv.RenderChart(t, map[string]string{"cluster.podCIDR": "10.111.0.0/16"}))
	for _, name := range []string{"kubelink-broker", "kubelink-router", "kubelink-meshdns"} {
		if before[name] == "" || before[name] == after[name] {
			t.Errorf("%s: checksum %q before, %q after a change of cluster.podCIDR", name, before[name], after[name])
		}
	}
}

// Every namespaced object, every RBAC subject and the admission policy's
// user names follow the release namespace (no binary needs `kubelink`).
func TestReleaseNamespace(t *testing.T) {
	objs := testenv.RenderChart(t, nil, "--namespace", "mesh-system")
	clusterScoped := map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true,
		"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}
	for _, o := range objs {
		if clusterScoped[o.GetKind()] {
			if o.GetNamespace() != "" {
				t.Errorf("%s %s has namespace %s", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		} else if o.GetNamespace() != "mesh-system" {
			t.Errorf("%s %s in namespace %q, want mesh-system", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			if ns := s.(map[string]any)["namespace"]; ns != "mesh-system" {
				t.Errorf("%s %s: subject %v", o.GetKind(), o.GetName(), s)
			}
		}
	}
	vap := get[admissionregistrationv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy", "kubelink-secrets")
	expr := vap.Spec.MatchConditions[0].Expression + vap.Spec.Variables[0].Expression
	if strings.Contains(expr, ":kubelink:") || !strings.Contains(expr, "system:serviceaccount:mesh-system:kubelink-certwatch") ||
		!strings.Contains(expr, "system:serviceaccount:mesh-system:kubelink-meshdns") {
		t.Errorf("admission policy does not follow the namespace: %s", expr)
	}
}

func TestSwitches(t *testing.T) {
	t.Run("dataPlane", func(t *testing.T) {
		for _, mode := range []string{"wireguard", "bridge"} {
			if got := clusterConfig(t, testenv.RenderChart(t, map[string]string{"dataPlane": mode}))["KUBELINK_MODE"]; got != mode {
				t.Errorf("dataPlane=%s: KUBELINK_MODE=%s", mode, got)
			}
		}
	})

	t.Run("bridge", func(t *testing.T) {
		cfg := clusterConfig(t, testenv.RenderChart(t, map[string]string{
			"bridge.name": "gw.example.com", "bridge.identities": "kubelink://default/a,kubelink://lab/a"}))
		if cfg["KUBELINK_BRIDGE_NAME"] != "gw.example.com" || cfg["KUBELINK_BRIDGE_IDENTITIES"] != "kubelink://default/a,kubelink://lab/a" {
			t.Errorf("ConfigMap %v", cfg)
		}
	})

	t.Run("no privileged container by default", func(t *testing.T) {
		for _, w := range workloads(t, testenv.RenderChart(t, nil)) {
			for _, c := range allContainers(&w.template.Spec) {
				if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
					t.Errorf("%s %s: container %s is privileged", w.kind, w.name, c.Name)
				}
			}
		}
	})

	t.Run("ipForwarding=initContainer", func(t *testing.T) {
		pod := brokerPod(t, testenv.RenderChart(t, map[string]string{"ipForwarding": "initContainer"}))
		if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "forwarding" ||
			pod.InitContainers[0].SecurityContext == nil || pod.InitContainers[0].SecurityContext.Privileged == nil || !*pod.InitContainers[0].SecurityContext.Privileged {
			t.Errorf("broker init containers %+v, want the privileged forwarding", pod.InitContainers)
		}
	})

	t.Run("ipForwarding=sysctl", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{"ipForwarding": "sysctl"})
		pod := brokerPod(t, objs)
		if len(pod.InitContainers) != 0 {
			t.Errorf("init containers %v", pod.InitContainers)
		}
		if want := []corev1.Sysctl{{Name: "net.ipv4.ip_forward", Value: "1"}}; !reflect.DeepEqual(pod.SecurityContext.Sysctls, want) {
			t.Errorf("sysctls %v, want %v", pod.SecurityContext.Sysctls, want)
		}
		for _, w := range workloads(t, objs) {
			for _, c := range allContainers(&w.template.Spec) {
				if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
					t.Errorf("%s %s: container %s is privileged", w.kind, w.name, c.Name)
				}
			}
		}
	})

	t.Run("meshAuthority", func(t *testing.T) {
		authorityObjects := []string{"ClusterRole/kubelink-mesh-authority", "ClusterRoleBinding/kubelink-mesh-authority",
			"Role/kubelink-mesh-authority", "RoleBinding/kubelink-mesh-authority", "ClusterRole/kubelink-member", "Role/kubelink-member"}
		for _, on := range []bool{false, true} {
			set := map[string]string{}
			if on {
				set["meshAuthority.enabled"] = "true"
			}
			objs := testenv.RenderChart(t, set)
			if got := slices.Contains(container(t, brokerPod(t, objs), "certwatch").Args, "--sign-requests"); got != on {
				t.Errorf("meshAuthority.enabled=%v: --sign-requests %v", on, got)
			}
			for _, ko := range authorityObjects {
				kind, name, _ := strings.Cut(ko, "/")
				if got := testenv.ChartObject(objs, kind, name) != nil; got != on {
					t.Errorf("meshAuthority.enabled=%v: %s rendered: %v", on, ko, got)
				}
			}
		}
	})

	t.Run("meshMember", func(t *testing.T) {
		for _, on := range []bool{false, true} {
			set := map[string]string{}
			if on {
				set = map[string]string{"meshMember.enabled": "true", "certificates.mode": "csr", "bridge.identities": "kubelink://default/b"}
			}
			objs := testenv.RenderChart(t, set)
			pod := brokerPod(t, objs)
			cw := container(t, pod, "certwatch")
			hasArg := slices.Contains(cw.Args, "--authority-secret=kubelink-authority") &&
				slices.Contains(cw.Args, "--authority-namespace=kubelink")
			if hasArg != on {
				t.Errorf("meshMember.enabled=%v: certwatch args %v", on, cw.Args)
			}
			// Read through the API (no volume, which the kubelet would
			// update only within a minute or so): certwatch, and nobody
			// else, may read that one Secret, never write it.
			for _, v := range pod.Volumes {
				if v.Secret != nil && v.Secret.SecretName == "kubelink-authority" {
					t.Errorf("meshMember.enabled=%v: the pod mounts the authority's Secret as volume %s", on, v.Name)
				}
			}
			var readers []string
			for _, u := range testenv.ChartObjects(objs, "Role") {
				var r rbacv1.Role
				convert(t, u, &r)
				for _, rule := range r.Rules {
					if slices.Contains(rule.Resources, "secrets") && slices.Contains(rule.ResourceNames, "kubelink-authority") {
						readers = append(readers, r.Name+" "+strings.Join(rule.Verbs, ","))
					}
				}
			}
			want := []string{}
			if on {
				want = []string{"kubelink-certwatch get,list,watch"}
			}
			if !slices.Equal(readers, want) && !(len(readers) == 0 && len(want) == 0) {
				t.Errorf("meshMember.enabled=%v: Roles with the authority's Secret: %q, want %q", on, readers, want)
			}
			for _, m := range container(t, pod, "broker").VolumeMounts {
				if m.Name == "authority" {
					t.Errorf("the broker container mounts the authority's kubeconfig")
				}
			}
			if on && clusterConfig(t, objs)["KUBELINK_CERT_MODE"] != "csr" {
				t.Errorf("member: KUBELINK_CERT_MODE=%s", clusterConfig(t, objs)["KUBELINK_CERT_MODE"])
			}
		}
		objs := testenv.RenderChart(t, map[string]string{"meshMember.enabled": "true", "certificates.mode": "csr",
			"bridge.identities": "kubelink://default/b", "meshMember.authoritySecret": "to-a", "meshMember.authorityNamespace": "mesh-system"})
		pod := brokerPod(t, objs)
		if !slices.Contains(container(t, pod, "certwatch").Args, "--authority-namespace=mesh-system") ||
			!slices.Contains(container(t, pod, "certwatch").Args, "--authority-secret=to-a") {
			t.Errorf("meshMember.authoritySecret/authorityNamespace not used: %v", container(t, pod, "certwatch").Args)
		}
	})

	t.Run("mcs", func(t *testing.T) {
		for _, on := range []bool{true, false} {
			objs := testenv.RenderChart(t, map[string]string{"mcs.enabled": fmt.Sprint(on)})
			exchangeOff := slices.Contains(container(t, brokerPod(t, objs), "broker").Args, "--mcs-port=0")
			for _, ko := range []string{"Deployment/kubelink-mcs", "ConfigMap/kubelink-mcs-exports", "ConfigMap/kubelink-mcs-imports", "ServiceAccount/kubelink-mcs"} {
				kind, name, _ := strings.Cut(ko, "/")
				if got := testenv.ChartObject(objs, kind, name) != nil; got != on {
					t.Errorf("mcs.enabled=%v: %s rendered: %v", on, ko, got)
				}
			}
			if exchangeOff == on {
				t.Errorf("mcs.enabled=%v: the broker's --mcs-port=0: %v", on, exchangeOff)
			}
			meshdnsArgs := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-meshdns").Spec.Template.Spec.Containers[0].Args
			if got := slices.Contains(meshdnsArgs, "--clusterset-zone=clusterset.local"); got != on {
				t.Errorf("mcs.enabled=%v: meshdns --clusterset-zone=clusterset.local: %v (%v)", on, got, meshdnsArgs)
			}
		}
	})

	t.Run("broker.mtu and broker.pprofAddr", func(t *testing.T) {
		args := container(t, brokerPod(t, testenv.RenderChart(t, nil)), "broker").Args
		if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--mtu") }) {
			t.Errorf("broker.mtu 0 (default): %v, want no --mtu (the broker derives it)", args)
		}
		args = container(t, brokerPod(t, testenv.RenderChart(t, map[string]string{"broker.mtu": "1380"})), "broker").Args
		if !slices.Contains(args, "--mtu=1380") {
			t.Errorf("broker.mtu 1380: %v, want --mtu=1380", args)
		}
		if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--pprof-addr") }) {
			t.Errorf("broker.pprofAddr empty (default): %v, want no --pprof-addr", args)
		}
		args = container(t, brokerPod(t, testenv.RenderChart(t, map[string]string{"broker.pprofAddr": "127.0.0.1:6060"})), "broker").Args
		if !slices.Contains(args, "--pprof-addr=127.0.0.1:6060") {
			t.Errorf("broker.pprofAddr: %v, want --pprof-addr=127.0.0.1:6060", args)
		}
	})

	t.Run("autoConnect", func(t *testing.T) {
		for _, on := range []bool{false, true} {
			set := map[string]string{"dataPlane": "bridge"}
			if on {
				set["autoConnect.enabled"] = "true"
			}
			objs := testenv.RenderChart(t, set)
			if got := slices.Contains(container(t, brokerPod(t, objs), "broker").Args, "--auto-connect"); got != on {
				t.Errorf("autoConnect.enabled=%v: --auto-connect %v", on, got)
			}
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
				if got := testenv.ChartObject(objs, kind, "kubelink-broker-auto-connect") != nil; got != on {
					t.Errorf("autoConnect.enabled=%v: %s kubelink-broker-auto-connect rendered: %v", on, kind, got)
				}
			}
		}
	})

	t.Run("broker.expose LoadBalancer keeps the source by default", func(t *testing.T) {
		svc := get[corev1.Service](t, testenv.RenderChart(t, map[string]string{"broker.expose.type": "LoadBalancer"}), "Service", "kubelink-broker")
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("LoadBalancer: externalTrafficPolicy %s, want Local", svc.Spec.ExternalTrafficPolicy)
		}
		svc = get[corev1.Service](t, testenv.RenderChart(t, map[string]string{"broker.expose.type": "LoadBalancer", "broker.expose.externalTrafficPolicy": "Cluster"}), "Service", "kubelink-broker")
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster {
			t.Errorf("LoadBalancer with Cluster set: externalTrafficPolicy %s", svc.Spec.ExternalTrafficPolicy)
		}
	})

	t.Run("broker.expose", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{
			"broker.expose.type":                  "LoadBalancer",
			"broker.expose.externalTrafficPolicy": "Local",
		}, "--set-string", "broker.expose.annotations.lb\\.example\\.com/internal=true")
		svc := get[corev1.Service](t, objs, "Service", "kubelink-broker")
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
			svc.Annotations["lb.example.com/internal"] != "true" {
			t.Errorf("Service: type %s, externalTrafficPolicy %s, annotations %v", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy, svc.Annotations)
		}
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				t.Errorf("LoadBalancer: port %s has fixed nodePort %d", p.Name, p.NodePort)
			}
		}
	})

	// HostPort: one broker on the gateway node, the data plane's port (and
	// only it) bound there, the Service a ClusterIP.
	t.Run("broker.expose HostPort", func(t *testing.T) {
		for _, dp := range []struct{ plane, port string }{{"wireguard", "wireguard"}, {"bridge", "bridge"}} {
			objs := testenv.RenderChart(t, map[string]string{"dataPlane": dp.plane, "broker.expose.type": "HostPort",
				"broker.expose.hostPort.node": "gw-1", "broker.replicas": "3"}, "--set-string", "broker.nodeSelector.zone=a")
			d := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-broker")
			ns := d.Spec.Template.Spec.NodeSelector
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || ns["kubernetes.io/hostname"] != "gw-1" || ns["zone"] != "a" {
				t.Errorf("%s: broker replicas %v, nodeSelector %v; want 1 on gw-1 (zone a kept)", dp.plane, d.Spec.Replicas, ns)
			}
			for _, p := range container(t, &d.Spec.Template.Spec, "broker").Ports {
				want := int32(0)
				if p.Name == dp.port {
					want = p.ContainerPort
				}
				if p.HostPort != want {
					t.Errorf("%s: port %s has hostPort %d, want %d", dp.plane, p.Name, p.HostPort, want)
				}
			}
			svc := get[corev1.Service](t, objs, "Service", "kubelink-broker")
			if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ExternalTrafficPolicy != "" {
				t.Errorf("%s: Service type %s, externalTrafficPolicy %q; want a ClusterIP", dp.plane, svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
			}
			for _, p := range svc.Spec.Ports {
				if p.NodePort != 0 {
					t.Errorf("%s: HostPort: port %s has nodePort %d", dp.plane, p.Name, p.NodePort)
				}
			}
		}
		// The other types bind no host port.
		d := get[appsv1.Deployment](t, testenv.RenderChart(t, nil), "Deployment", "kubelink-broker")
		for _, p := range container(t, &d.Spec.Template.Spec, "broker").Ports {
			if p.HostPort != 0 {
				t.Errorf("NodePort: port %s has hostPort %d", p.Name, p.HostPort)
			}
		}
	})

	t.Run("broker placement", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{"broker.replicas": "3",
			"broker.tolerations[0].key": "gw", "broker.tolerations[0].operator": "Exists"}, "--set-string", "broker.nodeSelector.gateway=yes")
		d := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-broker")
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 || d.Spec.Template.Spec.NodeSelector["gateway"] != "yes" ||
			len(d.Spec.Template.Spec.Tolerations) != 1 || d.Spec.Template.Spec.Tolerations[0].Key != "gw" {
			t.Errorf("broker: replicas %v, nodeSelector %v, tolerations %v", d.Spec.Replicas, d.Spec.Template.Spec.NodeSelector, d.Spec.Template.Spec.Tolerations)
		}
	})

	t.Run("podDisruptionBudget", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{"broker.podDisruptionBudget.maxUnavailable": "2"})
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "kubelink-broker")
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 2 ||
			!reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, map[string]string{"app.kubernetes.io/name": "kubelink-broker"}) {
			t.Errorf("PDB spec %+v", pdb.Spec)
		}
		off := testenv.RenderChart(t, map[string]string{"broker.podDisruptionBudget.enabled": "false"})
		if pdb := testenv.ChartObjects(off, "PodDisruptionBudget"); len(pdb) != 0 {
			t.Errorf("podDisruptionBudget.enabled=false: PDBs %v", pdb)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{"metrics.serviceMonitor.enabled": "true",
			"metrics.serviceMonitor.labels.release": "prometheus", "metrics.serviceMonitor.interval": "15s"})
		sm := testenv.ChartObject(objs, "ServiceMonitor", "kubelink")
		if sm == nil {
			t.Fatal("no ServiceMonitor")
		}
		if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor %s, labels %v", sm.GetAPIVersion(), sm.GetLabels())
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		var ports []string
		for _, e := range endpoints {
			e := e.(map[string]any)
			ports = append(ports, e["port"].(string))
			if e["interval"] != "15s" {
				t.Errorf("endpoint %v: interval", e)
			}
		}
		if !reflect.DeepEqual(ports, []string{"metrics", "certwatch-metrics"}) {
			t.Errorf("ServiceMonitor ports %v", ports)
		}
		// It selects exactly the metrics Services.
		selector, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		var selected []string
		for _, svc := range testenv.ChartObjects(objs, "Service") {
			matches := true
			for k, v := range selector {
				if svc.GetLabels()[k] != v {
					matches = false
				}
			}
			if matches {
				selected = append(selected, svc.GetName())
			}
		}
		sort.Strings(selected)
		if !reflect.DeepEqual(selected, []string{"kubelink-broker-metrics", "kubelink-meshdns-metrics"}) {
			t.Errorf("ServiceMonitor selects %v", selected)
		}

		objs = testenv.RenderChart(t, map[string]string{"metrics.service.enabled": "false"})
		for _, name := range []string{"kubelink-broker-metrics", "kubelink-meshdns-metrics"} {
			if testenv.ChartObject(objs, "Service", name) != nil {
				t.Errorf("metrics.service.enabled=false: Service %s rendered", name)
			}
		}
	})

	t.Run("images", func(t *testing.T) {
		cases := []struct {
			set          map[string]string
			extra        []string
			prefix, tail string
		}{
			{map[string]string{"image.registry": "registry.example.com/mirror"}, nil, "registry.example.com/mirror/kubelink/", ":0.1.0"},
			{map[string]string{"image.registry": "registry.example.com/"}, nil, "registry.example.com/kubelink/", ":0.1.0"},
			{nil, []string{"--set-string", "image.tag=1.10"}, "kubelink/", ":1.10"},
			{map[string]string{"image.tag": "v0.2.0-rc.1", "images.coredns": "mirror/coredns"}, nil, "", ":v0.2.0-rc.1"},
		}
		for _, c := range cases {
			objs := testenv.RenderChart(t, c.set, c.extra...)
			for _, w := range workloads(t, objs) {
				for _, ctr := range allContainers(&w.template.Spec) {
					if !strings.HasPrefix(ctr.Image, c.prefix) || !strings.HasSuffix(ctr.Image, c.tail) {
						t.Errorf("%v %v: %s container %s image %s, want %s...%s", c.set, c.extra, w.name, ctr.Name, ctr.Image, c.prefix, c.tail)
					}
				}
			}
			if c.set["images.coredns"] != "" {
				got := get[appsv1.Deployment](t, objs, "Deployment", "kubelink-coredns").Spec.Template.Spec.Containers[0].Image
				if got != "mirror/coredns:v0.2.0-rc.1" {
					t.Errorf("images.coredns: image %s", got)
				}
			}
		}
	})

	t.Run("image.pullSecrets", func(t *testing.T) {
		objs := testenv.RenderChart(t, map[string]string{"image.pullSecrets[0].name": "regcred", "image.pullPolicy": "Always"})
		for _, w := range workloads(t, objs) {
			if want := []corev1.LocalObjectReference{{Name: "regcred"}}; !reflect.DeepEqual(w.template.Spec.ImagePullSecrets, want) {
				t.Errorf("%s %s: imagePullSecrets %v", w.kind, w.name, w.template.Spec.ImagePullSecrets)
			}
			for _, c := range allContainers(&w.template.Spec) {
				if c.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("%s %s container %s: imagePullPolicy %s", w.kind, w.name, c.Name, c.ImagePullPolicy)
				}
			}
		}
	})
}

// The chart refuses what cannot work, with a message that names the value.
func TestRefusedValues(t *testing.T) {
	member := map[string]string{"meshMember.enabled": "true", "certificates.mode": "csr", "bridge.identities": "kubelink://default/b"}
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{k: v}
		for bk, bv := range base {
			if bk != k {
				m[bk] = bv
			}
		}
		return m
	}
	cases := []struct {
		name  string
		set   map[string]string
		extra []string
		want  []string
	}{
		{"no pod CIDR", map[string]string{"cluster.podCIDR": ""}, nil, []string{"cluster.podCIDR is required", "--cluster-cidr"}},
		{"switch as a string", nil, []string{"--set-string", "meshAuthority.enabled=false"}, []string{"meshAuthority.enabled must be true or false", "not --set-string"}},
		{"no service CIDR", map[string]string{"cluster.serviceCIDR": ""}, nil, []string{"cluster.serviceCIDR is required", "kubectl get servicecidr", "--service-cluster-ip-range"}},
		{"no node CIDR", map[string]string{"cluster.nodeCIDR": ""}, nil, []string{"cluster.nodeCIDR is required", "kubectl get nodes -o wide"}},
		{"no DNS IP", map[string]string{"dns.serviceIP": ""}, nil, []string{"dns.serviceIP is required", "+ 11"}},
		{"no bridge name", map[string]string{"bridge.name": ""}, nil, []string{"bridge.name is required"}},
		{"bad dataPlane", map[string]string{"dataPlane": "vxlan"}, nil, []string{"dataPlane=vxlan is not valid", "wireguard, bridge"}},
		{"bad certificates.mode", map[string]string{"certificates.mode": "none"}, nil, []string{"certificates.mode=none is not valid", "self, csr"}},
		{"bad ipForwarding", map[string]string{"ipForwarding": "off"}, nil, []string{"ipForwarding=off is not valid", "broker, sysctl, initContainer"}},
		{"bad expose type", map[string]string{"broker.expose.type": "ClusterIP"}, nil, []string{"broker.expose.type=ClusterIP is not valid", "NodePort, LoadBalancer, HostPort"}},
		{"HostPort without a node", map[string]string{"broker.expose.type": "HostPort"}, nil, []string{"broker.expose.hostPort.node is required with broker.expose.type=HostPort"}},
		{"bad traffic policy", map[string]string{"broker.expose.externalTrafficPolicy": "Nearest"}, nil, []string{"broker.expose.externalTrafficPolicy=Nearest is not valid", "Cluster, Local"}},
		{"authority and member", with(member, "meshAuthority.enabled", "true"), nil, []string{"meshAuthority.enabled and meshMember.enabled are both true"}},
		{"member without csr", with(member, "certificates.mode", "self"), nil, []string{"meshMember.enabled needs certificates.mode=csr"}},
		{"authority with csr", map[string]string{"meshAuthority.enabled": "true", "certificates.mode": "csr"}, nil, []string{"meshAuthority.enabled needs certificates.mode=self"}},
		{"csr without member", map[string]string{"certificates.mode": "csr", "bridge.identities": "kubelink://default/b"}, nil, []string{"certificates.mode=csr needs meshMember.enabled"}},
		{"member without identities", with(member, "bridge.identities", ""), nil, []string{"bridge.identities is required with certificates.mode=csr"}},
		{"member without authority Secret", with(member, "meshMember.authoritySecret", ""), nil, []string{"meshMember.authoritySecret is required"}},
		{"autoConnect with wireguard", map[string]string{"autoConnect.enabled": "true"}, nil, []string{"autoConnect.enabled needs dataPlane=bridge"}},
		{"serviceMonitor without Services", map[string]string{"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"}, nil, []string{"metrics.serviceMonitor.enabled needs metrics.service.enabled"}},
		{"tag latest", map[string]string{"image.tag": "latest"}, nil, []string{`image.tag must not be "latest"`}},
		{"tag Latest", map[string]string{"image.tag": "Latest"}, nil, []string{`image.tag must not be "latest"`}},
		{"no replicas", map[string]string{"broker.replicas": "0"}, nil, []string{"broker.replicas must be at least 1"}},
		{"tiny MTU", map[string]string{"broker.mtu": "576"}, nil, []string{"broker.mtu 576: must be 0", "1280 to 9000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := testenv.RenderChartErr(t, c.set, c.extra...)
			if err == nil {
				t.Fatalf("helm template with %v succeeded", c.set)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("helm's message lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
