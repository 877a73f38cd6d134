package mesh

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func msvc(name string, spec v1alpha1.MeshServiceSpec) *v1alpha1.MeshService {
	return &v1alpha1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
}

func mapping(port, target intstr.IntOrString) v1alpha1.PortMapping {
	return v1alpha1.PortMapping{Port: port, TargetPort: target}
}

var echo = &ServiceInfo{ClusterIP: addr("100.64.0.20"), Ports: map[string]int32{"http": 80, "metrics": 9090}}

// testTargets: pods in 10.250.0.0/16, the local service CIDR of a, echo
// (default) at 100.64.0.20 and kube-system/secret-store at 100.64.0.30.
var testTargets = TargetPolicy{PodCIDR: netip.MustParsePrefix("10.250.0.0/16"), ServiceCIDR: netip.MustParsePrefix("100.64.0.0/20"),
	ServiceAt: func(a netip.Addr) (string, string, bool) {
		switch a.String() {
		case "100.64.0.20":
			return "default", "echo", true
		case "100.64.0.30":
			return "kube-system", "secret-store", true
		}
		return "", "", false
	}}

func TestBindMeshService(t *testing.T) {
	m := Build([]v1alpha1.KubeLink{local("a", "192.168.0.11/24", "100.64.0.0/20"), peer("b", "192.168.0.12/24", "100.64.16.0/20", "b.org", keyB),
		local("lab--a", "10.200.0.1/24", ""), link("c", 1, v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.13/24", Endpoint: "c.org", PublicKey: keyC, Egress: []string{"192.168.0.200"}})}, wgOpts)
	tests := []struct {
		name    string
		ms      *v1alpha1.MeshService
		svc     *ServiceInfo
		want    *ServiceBinding
		wantErr string
	}{
		{
			name: "virtual address, whole service",
			ms:   msvc("aservice", v1alpha1.MeshServiceSpec{Service: "echo", MeshAddress: "192.168.0.100"}),
			svc:  echo,
			want: &ServiceBinding{Key: "default/aservice", Address: addr("192.168.0.100"), Targets: []netipAddr{addr("100.64.0.20")}},
		},
		{
			name: "port of the cluster address to a named service port",
			ms: msvc("another", v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
				Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{mapping(intstr.FromInt32(8800), intstr.FromString("http"))}}}}),
			svc: echo,
			want: &ServiceBinding{Key: "default/another", Address: addr("192.168.0.11"),
				Ports: []BoundPort{{Protocol: "tcp", Port: 8800, Targets: []netipAddrPort{ap("100.64.0.20:80")}}}},
		},
		{
			name: "named mesh, udp, mapping by served port name",
			ms: msvc("dns", v1alpha1.MeshServiceSpec{Mesh: "lab", Service: "echo", Ports: []v1alpha1.ServicePort{{Name: "dns", Port: 53, Protocol: "UDP"}},
				Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{{Protocol: "udp", Port: intstr.FromString("dns"), TargetPort: intstr.FromInt32(5353)}}}}}),
			svc:  echo,
			want: &ServiceBinding{Key: "default/dns", Address: addr("10.200.0.1"), Ports: []BoundPort{{Protocol: "udp", Port: 53, Targets: []netipAddrPort{ap("100.64.0.20:5353")}}}},
		},
		{
			name: "explicit endpoints, unmapped port keeps its number",
			ms: msvc("ext", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.101", Ports: []v1alpha1.ServicePort{{Port: 80}, {Port: 443}},
				Endpoints: []v1alpha1.ServiceEndpoint{
					{Address: "10.250.0.17", PortMappings: []v1alpha1.PortMapping{mapping(intstr.FromInt32(80), intstr.FromInt32(8080))}},
					{Address: "10.250.0.18", PortMappings: []v1alpha1.PortMapping{mapping(intstr.FromInt32(80), intstr.FromInt32(8080))}}}}),
			want: &ServiceBinding{Key: "default/ext", Address: addr("192.168.0.101"), Ports: []BoundPort{
				{Protocol: "tcp", Port: 80, Targets: []netipAddrPort{ap("10.250.0.17:8080"), ap("10.250.0.18:8080")}},
				{Protocol: "tcp", Port: 443, Targets: []netipAddrPort{ap("10.250.0.17:443"), ap("10.250.0.18:443")}}}},
		},
		{
			name: "an endpoint at a Service of the namespace",
			ms:   msvc("byip", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.102", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "100.64.0.20"}}}),
			want: &ServiceBinding{Key: "default/byip", Address: addr("192.168.0.102"), Targets: []netipAddr{addr("100.64.0.20")}},
		},
		{name: "unknown mesh", ms: msvc("x", v1alpha1.MeshServiceSpec{Mesh: "nope", Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 1}}}), svc: echo, wantErr: `mesh "nope" has no LocalLink`},
		{name: "address outside meshes", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "10.9.9.9", Service: "echo"}), svc: echo, wantErr: "is in no mesh of this cluster"},
		{name: "address of a peer", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.12", Service: "echo"}), svc: echo, wantErr: "cluster address of a peer"},
		{name: "address a peer claims", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.200", Service: "echo"}), svc: echo, wantErr: "claimed by link c (egress)"},
		{name: "own cluster address as meshAddress", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.11", Service: "echo"}), svc: echo, wantErr: "leave meshAddress empty"},
		{name: "missing service", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Service: "echo"}), svc: nil, wantErr: `Service "echo" not found`},
		{name: "unknown port name", ms: msvc("x", v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
			Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{mapping(intstr.FromInt32(8800), intstr.FromString("grpc"))}}}}),
			svc: echo, wantErr: `no port named "grpc" (it has http, metrics)`},
		{name: "mapping for unserved port", ms: msvc("x", v1alpha1.MeshServiceSpec{Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 8800}},
			Endpoints: []v1alpha1.ServiceEndpoint{{PortMappings: []v1alpha1.PortMapping{mapping(intstr.FromInt32(9999), intstr.FromInt32(80))}}}}),
			svc: echo, wantErr: "port 9999 is not in spec.ports"},
		{name: "no ports on the shared address", ms: msvc("x", v1alpha1.MeshServiceSpec{Service: "echo"}), svc: echo, wantErr: "spec.ports: required"},
		{name: "bad protocol", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 1, Protocol: "sctp"}}}), svc: echo, wantErr: "must be TCP or UDP"},
		{name: "duplicate port", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Service: "echo", Ports: []v1alpha1.ServicePort{{Port: 1}, {Port: 1, Protocol: "TCP"}}}), svc: echo, wantErr: "tcp/1 is listed twice"},
		// Targets only inside the cluster's pods and its namespace's Services.
		{name: "a node (the kubelet)", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Ports: []v1alpha1.ServicePort{{Port: 10250}},
			Endpoints: []v1alpha1.ServiceEndpoint{{Address: "172.18.0.3"}}}), wantErr: "spec.endpoints[0].address: 172.18.0.3 is neither a pod (10.250.0.0/16) nor a Service of namespace default"},
		{name: "instance metadata", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "10.250.0.17"}, {Address: "169.254.169.254"}}}),
			wantErr: "spec.endpoints[1].address: 169.254.169.254 is neither a pod"},
		{name: "the API server's ClusterIP", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "100.64.0.1"}}}),
			wantErr: "100.64.0.1 is the API server's Service"},
		{name: "the API server's Service by name", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Service: "kubernetes"}), svc: &ServiceInfo{ClusterIP: addr("100.64.0.1")},
			wantErr: `spec.service: "kubernetes" is the API server's Service`},
		{name: "the API server's Service by name, another address", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Service: "kubernetes"}), svc: &ServiceInfo{ClusterIP: addr("100.64.0.5")},
			wantErr: `spec.service: "kubernetes" is the API server's Service`},
		{name: "another namespace's Service", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "100.64.0.30"}}}),
			wantErr: "100.64.0.30 is the Service kube-system/secret-store of another namespace"},
		{name: "a service address nobody has", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "100.64.0.99"}}}),
			wantErr: "no Service of namespace default has it"},
		{name: "endpoint with bad address", ms: msvc("x", v1alpha1.MeshServiceSpec{MeshAddress: "192.168.0.100", Endpoints: []v1alpha1.ServiceEndpoint{{Address: "nope"}}}), wantErr: `spec.endpoints[0].address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.BindMeshService(tt.ms, tt.svc, testTargets)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestServiceRulesDNATAndSpreadEvenly(t *testing.T) {
	b := &ServiceBinding{Key: "default/ext", Address: addr("192.168.0.101"), Ports: []BoundPort{
		{Protocol: "tcp", Port: 80, Targets: []netipAddrPort{ap("10.0.0.1:8080"), ap("10.0.0.2:8080"), ap("10.0.0.3:8080")}}}}
	whole := &ServiceBinding{Key: "default/aservice", Address: addr("192.168.0.100"), Targets: []netipAddr{addr("100.64.0.20")}}
	rs := ServiceRules([]*ServiceBinding{b, whole})
	if len(rs.Hooks) != 2 || rs.Hooks[0].Chain != "PREROUTING" || rs.Hooks[1].Chain != "OUTPUT" {
		t.Fatalf("hooks = %+v", rs.Hooks)
	}
	top := rs.Chains[0]
	if top.Name != ChainServices || len(top.Rules) != 2 || top.Rules[0][1] != "192.168.0.100/32" {
		t.Fatalf("services chain = %+v (sorted by key: aservice first)", top)
	}
	byName := map[string][][]string{}
	for _, c := range rs.Chains {
		byName[c.Name] = c.Rules
	}
	ep := byName[chainName("EP", "default/ext/tcp/80")]
	want := [][]string{
		{"-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.33333333333", "-j", "DNAT", "--to-destination", "10.0.0.1:8080"},
		{"-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.50000000000", "-j", "DNAT", "--to-destination", "10.0.0.2:8080"},
		{"-p", "tcp", "-j", "DNAT", "--to-destination", "10.0.0.3:8080"},
	}
	if !reflect.DeepEqual(ep, want) {
		t.Errorf("endpoint chain = %v, want %v", ep, want)
	}
	ms := byName[chainName("MS", "default/ext")]
	if len(ms) != 1 || strings.Join(ms[0], " ") != "-p tcp -m tcp --dport 80 -j "+chainName("EP", "default/ext/tcp/80") {
		t.Errorf("service chain = %v", ms)
	}
	if wep := byName[chainName("EP", "default/aservice")]; len(wep) != 1 || wep[0][len(wep[0])-1] != "100.64.0.20" {
		t.Errorf("whole-address chain = %v", wep)
	}
	if empty := ServiceRules(nil); len(empty.Chains)+len(empty.Hooks) != 0 {
		t.Error("no bindings must give an empty rule set, so that the applier removes our chains")
	}
}

// Two bindings meet on the same address when either takes the whole
// address, or both bind one protocol and port.
func TestServiceBindingConflict(t *testing.T) {
	web := &ServiceBinding{Key: "default/web", Address: addr("192.168.0.101"), Ports: []BoundPort{{Protocol: "tcp", Port: 80}, {Protocol: "udp", Port: 53}}}
	for _, c := range []struct {
		name string
		b    *ServiceBinding
		want string
	}{
		{"same port", &ServiceBinding{Key: "x/a", Address: addr("192.168.0.101"), Ports: []BoundPort{{Protocol: "tcp", Port: 80}}}, "192.168.0.101:80/tcp is bound by MeshService default/web already"},
		{"same port, other protocol", &ServiceBinding{Key: "x/a", Address: addr("192.168.0.101"), Ports: []BoundPort{{Protocol: "udp", Port: 80}}}, ""},
		{"other port", &ServiceBinding{Key: "x/a", Address: addr("192.168.0.101"), Ports: []BoundPort{{Protocol: "tcp", Port: 443}}}, ""},
		{"whole address", &ServiceBinding{Key: "x/a", Address: addr("192.168.0.101"), Targets: []netipAddr{addr("10.250.0.1")}}, "192.168.0.101 is bound by MeshService default/web already"},
		{"other address", &ServiceBinding{Key: "x/a", Address: addr("192.168.0.102"), Ports: []BoundPort{{Protocol: "tcp", Port: 80}}}, ""},
	} {
		if got := c.b.Conflict(web); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
