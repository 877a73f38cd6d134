package meshdns

import (
	"fmt"
	"net/netip"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// HookKey is the key of the coredns-custom ConfigMap that kubelink owns;
// the cluster DNS imports every *.server key as extra server blocks.
const HookKey = "kubelink.server"

// DefaultClusterDNSPort is the port of the cluster DNS server blocks (53 with
// kubeadm and kind; gardener's CoreDNS listens on 8053).
const DefaultClusterDNSPort = 53

// CorednsCustom renders the coredns-custom hook of the cluster DNS: every
// mesh domain goes to the kubelink DNS service, the mesh-global zone to the
// global DNS server, and the clusterset zone ("": none) to the kubelink DNS
// service too. Meshes sharing a domain share one block.
func CorednsCustom(meshes []MeshInput, clusterSetZone string, kubelinkDNS netip.Addr, port int) (string, error) {
	if port == 0 {
		port = DefaultClusterDNSPort
	}
	if !kubelinkDNS.IsValid() {
		return "", fmt.Errorf("no kubelink DNS service IP (set --kubelink-dns-ip or --service-cidr)")
	}
	var servers []server
	seen := map[string]bool{}
	add := func(s server) {
		if !seen[s.zone] {
			seen[s.zone] = true
			servers = append(servers, s)
		}
	}
	for _, m := range sortedMeshes(meshes) {
		if m.Omit {
			continue
		}
		if err := checkName("mesh "+m.Name+": domain", m.Domain); err != nil {
			return "", err
		}
		if m.GlobalDNS.IsValid() {
			add(forwardServer("svc.global."+m.Domain, m.GlobalDNS.String()))
		}
		add(hookServer(m.Domain, kubelinkDNS.String()))
	}
	if clusterSetZone != "" {
		if err := checkName("clusterset zone", clusterSetZone); err != nil {
			return "", err
		}
		add(hookServer(clusterSetZone, kubelinkDNS.String()))
	}
	return printServers(servers, port, ""), nil
}

// renderKubeconfig gives every remote cluster a cluster, user and context
// named after its link, for the kubernetes plugin's kubeconfig directive.
// With no clusters it is still a valid, empty kubeconfig: the deployment
// mounts the key in every mode.
func renderKubeconfig(clusters []Cluster) ([]byte, error) {
	cfg := clientcmdv1.Config{Kind: "Config", APIVersion: "v1", Clusters: []clientcmdv1.NamedCluster{},
		AuthInfos: []clientcmdv1.NamedAuthInfo{}, Contexts: []clientcmdv1.NamedContext{}}
	for _, c := range clusters {
		cfg.Clusters = append(cfg.Clusters, clientcmdv1.NamedCluster{Name: c.Context, Cluster: clientcmdv1.Cluster{
			Server: c.APIServer, CertificateAuthorityData: c.CA,
		}})
		cfg.AuthInfos = append(cfg.AuthInfos, clientcmdv1.NamedAuthInfo{Name: c.Context, AuthInfo: clientcmdv1.AuthInfo{Token: c.Token}})
		cfg.Contexts = append(cfg.Contexts, clientcmdv1.NamedContext{Name: c.Context, Context: clientcmdv1.Context{
			Cluster: c.Context, AuthInfo: c.Context,
		}})
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return b, nil
}
