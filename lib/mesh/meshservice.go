package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// ServiceInfo is what a MeshService needs of its Kubernetes Service.
type ServiceInfo struct {
	ClusterIP netip.Addr
	// Ports maps Service port names to port numbers ("" for an unnamed port).
	Ports map[string]int32
}

// ServiceBinding is a validated MeshService: where it listens and where the
// traffic goes.
type ServiceBinding struct {
	// Key is "<namespace>/<name>".
	Key     string
	Address netip.Addr
	// Ports are the bound ports; empty means the whole address is forwarded
	// (meshAddress without ports).
	Ports []BoundPort
	// Targets are used when Ports is empty: the address is rewritten only.
	Targets []netip.Addr
}

// BoundPort is one served port and its targets (spread evenly).
type BoundPort struct {
	Protocol string // "tcp" or "udp"
	Port     uint16
	Targets  []netip.AddrPort
}

// TargetPolicy is where a MeshService may send: into the cluster's pods,
// or to a Service of its own namespace — never to a node (the kubelet),
// the instance metadata, the API server or another namespace's Service,
// which anyone who may create a MeshService would otherwise expose to
// every member.
type TargetPolicy struct {
	// PodCIDR: an endpoint address inside it is a pod. Invalid: no address
	// is a pod.
	PodCIDR netip.Prefix
	// ServiceCIDR: an endpoint address inside it must be the ClusterIP of
	// a Service of the MeshService's namespace; its first address (the API
	// server's Service kubernetes) is never a target.
	ServiceCIDR netip.Prefix
	// ServiceAt names the Service whose ClusterIP is a (nil: none is).
	ServiceAt func(a netip.Addr) (namespace, name string, ok bool)
}

// apiServer reports whether a is the API server's Service, the first
// address of the service network.
func (p TargetPolicy) apiServer(a netip.Addr) bool {
	api := ServiceIP(p.ServiceCIDR, 1)
	return api.IsValid() && a == api
}

// check tells why a may not be a target of a MeshService in namespace ns
// ("" when it may); field names the spec field for the message.
func (p TargetPolicy) check(field, ns string, a netip.Addr) error {
	switch {
	case p.apiServer(a):
		return fmt.Errorf("%s: %s is the API server's Service (kubernetes.default): a MeshService never exposes it", field, a)
	case p.ServiceCIDR.IsValid() && p.ServiceCIDR.Contains(a):
		if p.ServiceAt != nil {
			if sns, name, ok := p.ServiceAt(a); ok {
				if sns == ns {
					return nil
				}
				return fmt.Errorf("%s: %s is the Service %s/%s of another namespace: a MeshService targets only Services of its own namespace %s", field, a, sns, name, ns)
			}
		}
		return fmt.Errorf("%s: %s is in the service network %s but no Service of namespace %s has it: name the Service in spec.service instead", field, a, p.ServiceCIDR, ns)
	case p.PodCIDR.IsValid() && p.PodCIDR.Contains(a):
		return nil
	}
	return fmt.Errorf("%s: %s is neither a pod (%s) nor a Service of namespace %s: a MeshService does not send to nodes, the instance metadata or anything outside the cluster's pods and Services; use spec.service for a Service",
		field, a, p.PodCIDR, ns)
}

// BindMeshService validates a MeshService against the model, its Service
// (svc is nil when spec.service is empty or the Service does not exist)
// and the targets the policy allows.
func (m *Model) BindMeshService(ms *v1alpha1.MeshService, svc *ServiceInfo, pol TargetPolicy) (*ServiceBinding, error) {
	s := &ms.Spec
	b := &ServiceBinding{Key: ms.Namespace + "/" + ms.Name}
	addr, err := m.serviceAddress(s)
	if err != nil {
		return nil, err
	}
	b.Address = addr

	targets, err := serviceTargets(s, svc)
	if err != nil {
		return nil, err
	}
	for i, t := range targets {
		if s.Service != "" {
			// a Service of the namespace by construction; only the API
			// server's (kubernetes in default) is refused
			if pol.apiServer(t.addr) || (ms.Namespace == "default" && s.Service == "kubernetes") {
				return nil, fmt.Errorf("spec.service: %q is the API server's Service: a MeshService never exposes it", s.Service)
			}
			continue
		}
		if err := pol.check(fmt.Sprintf("spec.endpoints[%d].address", i), ms.Namespace, t.addr); err != nil {
			return nil, err
		}
	}
	if len(s.Ports) == 0 {
		for _, t := range targets {
			if len(t.mappings) > 0 {
				return nil, errors.New("spec.endpoints: portMappings need spec.ports (the ports they map)")
			}
			b.Targets = append(b.Targets, t.addr)
		}
		return b, nil
	}
	seen := map[string]bool{}
	for _, p := range s.Ports {
		proto, err := protocol(p.Protocol)
		if err != nil {
			return nil, fmt.Errorf("spec.ports[%d]: %w", p.Port, err)
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fmt.Errorf("spec.ports: port %d must be 1-65535", p.Port)
		}
		id := fmt.Sprintf("%s/%d", proto, p.Port)
		if seen[id] {
			return nil, fmt.Errorf("spec.ports: %s is listed twice", id)
		}
		seen[id] = true
		bp := BoundPort{Protocol: proto, Port: uint16(p.Port)}
		for _, t := range targets {
			tp, err := t.targetPort(p, proto, svc)
			if err != nil {
				return nil, err
			}
			bp.Targets = append(bp.Targets, netip.AddrPortFrom(t.addr, tp))
		}
		b.Ports = append(b.Ports, bp)
	}
	for _, t := range targets {
		if err := t.checkMappings(s.Ports); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (m *Model) serviceAddress(s *v1alpha1.MeshServiceSpec) (netip.Addr, error) {
	if s.MeshAddress != "" {
		a, err := netip.ParseAddr(s.MeshAddress)
		if err != nil {
			return a, fmt.Errorf("spec.meshAddress: %q is not an IP address", s.MeshAddress)
		}
		if ms, ok := m.MeshForAddress(a); !ok {
			return a, fmt.Errorf("spec.meshAddress: %s is in no mesh of this cluster", a)
		} else if a == ms.Local.IP() {
			return a, fmt.Errorf("spec.meshAddress: %s is the cluster address of mesh %q; leave meshAddress empty and set mesh and ports to bind ports of it", a, MeshDisplayName(ms.Name))
		} else if _, taken := m.LinkForAddress(a); taken {
			return a, fmt.Errorf("spec.meshAddress: %s is the cluster address of a peer", a)
		} else if l := ms.claimedBy(a); l != nil {
			return a, fmt.Errorf("spec.meshAddress: %s is claimed by link %s (egress); it is the peer's address", a, l.Name)
		}
		return a, nil
	}
	ms, ok := m.Mesh(s.Mesh)
	if !ok {
		return netip.Addr{}, fmt.Errorf("spec.mesh: mesh %q has no LocalLink in this cluster", MeshDisplayName(s.Mesh))
	}
	if len(s.Ports) == 0 {
		return netip.Addr{}, errors.New("spec.ports: required when meshAddress is empty, as the cluster address is shared")
	}
	return ms.Local.IP(), nil
}

type target struct {
	addr     netip.Addr
	mappings []v1alpha1.PortMapping
}

func serviceTargets(s *v1alpha1.MeshServiceSpec, svc *ServiceInfo) ([]target, error) {
	if s.Service != "" {
		if svc == nil || !svc.ClusterIP.IsValid() {
			return nil, fmt.Errorf("spec.service: Service %q not found or has no ClusterIP", s.Service)
		}
		if len(s.Endpoints) > 1 || (len(s.Endpoints) == 1 && s.Endpoints[0].Address != "") {
			return nil, errors.New("spec.endpoints: with service, at most one endpoint without address is allowed")
		}
		t := target{addr: svc.ClusterIP}
		if len(s.Endpoints) == 1 {
			t.mappings = s.Endpoints[0].PortMappings
		}
		if s.MeshAddress == "" && len(t.mappings) == 0 {
			return nil, errors.New("spec.endpoints: portMappings are required when meshAddress is empty")
		}
		return []target{t}, nil
	}
	if len(s.Endpoints) == 0 {
		return nil, errors.New("spec: either service or endpoints with addresses is required")
	}
	var out []target
	for i, e := range s.Endpoints {
		a, err := netip.ParseAddr(e.Address)
		if err != nil {
			return nil, fmt.Errorf("spec.endpoints[%d].address: %q is not an IP address", i, e.Address)
		}
		out = append(out, target{addr: a, mappings: e.PortMappings})
	}
	return out, nil
}

// targetPort finds the mapping of a served port; an unmapped port keeps its
// number. Names resolve against the Service's port names.
func (t target) targetPort(p v1alpha1.ServicePort, proto string, svc *ServiceInfo) (uint16, error) {
	for _, mp := range t.mappings {
		mproto, err := protocol(mp.Protocol)
		if err != nil {
			return 0, fmt.Errorf("spec.endpoints.portMappings: %w", err)
		}
		if mproto != proto || !isInt(mp.Port) && mp.Port.StrVal != p.Name || isInt(mp.Port) && mp.Port.IntVal != p.Port {
			continue
		}
		if isInt(mp.TargetPort) {
			if mp.TargetPort.IntVal < 1 || mp.TargetPort.IntVal > 65535 {
				return 0, fmt.Errorf("spec.endpoints.portMappings: targetPort %d must be 1-65535", mp.TargetPort.IntVal)
			}
			return uint16(mp.TargetPort.IntVal), nil
		}
		if svc == nil {
			return 0, fmt.Errorf("spec.endpoints.portMappings: targetPort %q is a name, which needs spec.service", mp.TargetPort.StrVal)
		}
		n, ok := svc.Ports[mp.TargetPort.StrVal]
		if !ok {
			return 0, fmt.Errorf("spec.endpoints.portMappings: the Service has no port named %q (it has %s)", mp.TargetPort.StrVal, portNames(svc))
		}
		return uint16(n), nil
	}
	return uint16(p.Port), nil
}

// checkMappings rejects mappings for ports that are not served.
func (t target) checkMappings(ports []v1alpha1.ServicePort) error {
	for _, mp := range t.mappings {
		ok := slices.ContainsFunc(ports, func(p v1alpha1.ServicePort) bool {
			if isInt(mp.Port) {
				return p.Port == mp.Port.IntVal
			}
			return p.Name != "" && p.Name == mp.Port.StrVal
		})
		if !ok {
			return fmt.Errorf("spec.endpoints.portMappings: port %s is not in spec.ports", mp.Port.String())
		}
	}
	return nil
}

func protocol(p string) (string, error) {
	switch strings.ToLower(p) {
	case "", "tcp":
		return "tcp", nil
	case "udp":
		return "udp", nil
	}
	return "", fmt.Errorf("protocol %q must be TCP or UDP", p)
}

func portNames(svc *ServiceInfo) string {
	var names []string
	for n := range svc.Ports {
		if n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "no named ports"
	}
	return strings.Join(names, ", ")
}

// Conflict tells why a binding that is not older than other may not take
// its address and ports ("" when they do not meet): both forward the
// whole address, or one of them does, or both bind a protocol and port.
func (b *ServiceBinding) Conflict(other *ServiceBinding) string {
	if b.Address != other.Address {
		return ""
	}
	if len(b.Ports) == 0 || len(other.Ports) == 0 {
		return fmt.Sprintf("%s is bound by MeshService %s already", b.Address, other.Key)
	}
	for _, p := range b.Ports {
		for _, o := range other.Ports {
			if p.Protocol == o.Protocol && p.Port == o.Port {
				return fmt.Sprintf("%s:%d/%s is bound by MeshService %s already", b.Address, p.Port, p.Protocol, other.Key)
			}
		}
	}
	return ""
}

// ServiceRules are the DNAT rules of the bindings: PREROUTING and OUTPUT jump
// to KUBELINK-SERVICES, one chain per MeshService and one per bound port,
// which spreads connections evenly over the targets.
func ServiceRules(bindings []*ServiceBinding) RuleSet {
	if len(bindings) == 0 {
		return RuleSet{}
	}
	bs := slices.Clone(bindings)
	slices.SortFunc(bs, func(a, b *ServiceBinding) int { return strings.Compare(a.Key, b.Key) })
	top := Chain{Table: "nat", Name: ChainServices}
	var chains []Chain
	for _, b := range bs {
		svcChain := Chain{Table: "nat", Name: chainName("MS", b.Key)}
		top.Rules = append(top.Rules, []string{"-d", hostPrefix(b.Address).String(), "-j", svcChain.Name})
		if len(b.Ports) == 0 {
			ep := Chain{Table: "nat", Name: chainName("EP", b.Key)}
			var dsts []string
			for _, t := range b.Targets {
				dsts = append(dsts, t.String())
			}
			ep.Rules = spread(nil, dsts)
			svcChain.Rules = append(svcChain.Rules, []string{"-j", ep.Name})
			chains = append(chains, svcChain, ep)
			continue
		}
		var eps []Chain
		for _, p := range b.Ports {
			ep := Chain{Table: "nat", Name: chainName("EP", fmt.Sprintf("%s/%s/%d", b.Key, p.Protocol, p.Port))}
			var dsts []string
			for _, t := range p.Targets {
				dsts = append(dsts, t.String())
			}
			// iptables accepts a DNAT to a port only in a rule that names the protocol.
			ep.Rules = spread([]string{"-p", p.Protocol}, dsts)
			svcChain.Rules = append(svcChain.Rules, []string{"-p", p.Protocol, "-m", p.Protocol, "--dport", fmt.Sprint(p.Port), "-j", ep.Name})
			eps = append(eps, ep)
		}
		chains = append(chains, svcChain)
		chains = append(chains, eps...)
	}
	comment := []string{"-m", "comment", "--comment", "kubelink service rules", "-j", ChainServices}
	return RuleSet{
		Hooks: []Hook{
			{Table: "nat", Chain: "PREROUTING", Rule: comment},
			{Table: "nat", Chain: "OUTPUT", Rule: comment},
		},
		Chains: append([]Chain{top}, chains...),
	}
}

// spread DNATs to n destinations with equal probability: rule i matches with
// probability 1/(n-i) of what the rules before it left over.
func spread(match []string, dsts []string) [][]string {
	var rules [][]string
	for i, d := range dsts {
		r := append([]string{}, match...)
		if rest := len(dsts) - i; rest > 1 {
			r = append(r, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%.11f", 1/float64(rest)))
		}
		rules = append(rules, append(r, "-j", "DNAT", "--to-destination", d))
	}
	return rules
}

func isInt(v intstr.IntOrString) bool { return v.Type == intstr.Int }
