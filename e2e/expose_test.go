//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

// The lab's last cluster moves to --expose hostport with kubelinkctl
// install (an upgrade in place), and join carries its new endpoint to the
// others: its one broker runs on the gateway node and binds the data
// plane's port there (through the CNI's portmap), the links come Up again
// and traffic flows both ways, diagnose finds no error. Afterwards it goes
// back to the NodePort it had, the same way.
func TestExposeHostPort(t *testing.T) {
	members := lab.Members()
	last := members[len(members)-1]
	outer := t           // the way back runs after every step, not after the first
	var restore []string // the install that puts last back as it was
	f := features.New(last.Name+" exposed through a host port").
		Assess("install --expose hostport and join", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			install, oldEndpoint, node := installArgs(ctx, t, last)
			restore = append(install, "--expose", "nodeport", "--announce", oldEndpoint)
			host, _, _ := strings.Cut(oldEndpoint, ":")
			port := map[string]string{"wireguard": "8777", "bridge": "8088"}[lab.Mode]
			outer.Cleanup(func() { restoreExpose(outer, last, restore, host+":"+port) })
			// Nothing on the node answers at the port before: the check below
			// can fail.
			if err := portAnswers(ctx, host+":"+port); err == nil {
				t.Fatalf("%s:%s answers before the host port is bound", host, port)
			}
			out, stderr, err := kubelinkctl(ctx, t, append(install, "--expose", "hostport", "--gateway-node", node)...)
			if err != nil {
				t.Fatalf("install --expose hostport: %v\n%s%s", err, stderr, out)
			}
			local, err := last.Link(ctx, last.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := local.Annotations["kubelink.mandelsoft.org/endpoint"], host+":"+port; got != want {
				t.Fatalf("%s: LocalLink endpoint %q, want %q (the gateway node %s and the host port)", last.Name, got, want, node)
			}
			var d appsv1.Deployment
			if err := last.In("kubelink").Get(ctx, "kubelink-broker", "kubelink", &d); err != nil {
				t.Fatal(err)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				t.Errorf("%s: broker replicas %v, want 1", last.Name, d.Spec.Replicas)
			}
			pods, err := last.BrokerPods(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods {
				if p.DeletionTimestamp == nil && (p.Spec.NodeName != node || hostPorts(&p) != lab.Mode+":"+port) {
					t.Errorf("%s: broker pod %s on node %s binds %q, want %s:%s on %s", last.Name, p.Name, p.Spec.NodeName, hostPorts(&p), lab.Mode, port, node)
				}
			}
			// The node's port reaches the broker: the TLS server accepts, or
			// wireguard-go takes a datagram without an ICMP port unreachable.
			if _, err := Eventually(ctx, 20*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
				return portAnswers(ctx, host+":"+port)
			}); err != nil {
				t.Errorf("the gateway node's %s port %s:%s does not reach the broker: %v", lab.Mode, host, port, err)
			}
			out, stderr, err = kubelinkctl(ctx, t, append([]string{"join", "--timeout", "3m"}, labContexts()...)...)
			if err != nil {
				t.Fatalf("join: %v\n%s%s", err, stderr, out)
			}
			for _, o := range members[:len(members)-1] {
				l, err := o.Link(ctx, last.Name)
				if err != nil || l.Spec.Endpoint != host+":"+port || l.Status.State != v1alpha1.StateUp {
					t.Errorf("%s: KubeLink %s after join: %+v %+v (%v); want endpoint %s:%s, Up", o.Name, last.Name, l.Spec, l.Status, err, host, port)
				}
			}
			return ctx
		}).
		Assess("traffic both ways through the host port", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			for _, other := range members[:len(members)-1] {
				expectEcho(ctx, t, last, anyClient(ctx, t, last), echoURL(ctx, t, other), other.Name, 30*time.Second)
				expectEcho(ctx, t, other, anyClient(ctx, t, other), "http://echo.default.svc."+last.Name+".kubelink/", last.Name, 30*time.Second)
			}
			return ctx
		}).
		Assess("diagnose finds no error", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			out, stderr, err := kubelinkctl(ctx, t, append([]string{"diagnose"}, labContexts()...)...)
			if err != nil {
				t.Errorf("diagnose: %v\n%s%s", err, stderr, out)
			}
			// Still on the host port: the steps above ran before the way back.
			if l, err := last.Link(ctx, last.Name); err != nil || !strings.HasSuffix(l.Annotations["kubelink.mandelsoft.org/endpoint"], ":"+map[string]string{"wireguard": "8777", "bridge": "8088"}[lab.Mode]) {
				t.Errorf("%s: LocalLink endpoint %v (%v) at the end, want the host port", last.Name, l.Annotations, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// installArgs are the kubelinkctl install arguments that reproduce c's
// install as lab-up made it (the release keeps its values files), without
// --expose and --announce; and c's endpoint, and the name of the node it
// names.
func installArgs(ctx context.Context, t *testing.T, c *Cluster) (args []string, endpoint, node string) {
	t.Helper()
	local, err := c.Link(ctx, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	endpoint = local.Annotations["kubelink.mandelsoft.org/endpoint"]
	host, _, _ := strings.Cut(endpoint, ":")
	if node, err = c.NodeName(ctx, host); err != nil {
		t.Fatalf("%s: the node of its endpoint %s: %v", c.Name, endpoint, err)
	}
	addr, err := netip.ParsePrefix(local.Spec.ClusterAddress)
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := c.In("kubelink").Get(ctx, "kubelink-broker", "kubelink", &d); err != nil {
		t.Fatal(err)
	}
	// <registry>/kubelink/broker:<tag>
	image := d.Spec.Template.Spec.Containers[0].Image
	i := strings.LastIndex(image, ":")
	j := strings.Index(image, "/kubelink/")
	if i < 0 || j < 0 || i < j {
		t.Fatalf("%s: broker image %q is not <registry>/kubelink/broker:<tag>", c.Name, image)
	}
	var cm corev1.ConfigMap
	if err := c.In("kubelink").Get(ctx, "kubelink-cluster", "kubelink", &cm); err != nil {
		t.Fatal(err)
	}
	return []string{"install", "--context", "kind-lab-" + c.Name, "--chart", "../deploy/chart/kubelink", "--name", c.Name,
		"--mesh-cidr", addr.Masked().String(), "--address", addr.Addr().String(), "--data-plane", lab.Mode,
		"--node-cidr", cm.Data["NODE_CIDR"], "--registry", image[:j], "--version", image[i+1:], "--timeout", "4m"}, endpoint, node
}

// portAnswers dials the lab's data plane port at addr (on a kind node):
// nil when something takes it. TCP (the bridge): the connection is
// accepted. UDP (WireGuard): three datagrams over 1.5 s draw no ICMP port
// unreachable (wireguard-go drops a datagram it cannot read, silently).
func portAnswers(ctx context.Context, addr string) error {
	if lab.Mode == "bridge" {
		conn, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 64)
	for range 3 {
		if _, err := conn.Write([]byte("kubelink e2e: is this port bound?")); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := conn.Read(buf); errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("udp %s: %w", addr, err)
		}
	}
	return nil
}

// hostPorts lists the broker container's host ports as name:port.
func hostPorts(p *corev1.Pod) string {
	var s []string
	for _, ct := range p.Spec.Containers {
		for _, cp := range ct.Ports {
			if cp.HostPort != 0 {
				s = append(s, fmt.Sprintf("%s:%d", cp.Name, cp.HostPort))
			}
		}
	}
	return strings.Join(s, ",")
}

// restoreExpose installs c again as lab-up did (its NodePort) and joins,
// so that the tests after this one find the lab as it was.
func restoreExpose(t *testing.T, c *Cluster, install []string, hostPortAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() { t.Logf("%s back on its NodePort in %.1f s", c.Name, time.Since(start).Seconds()) }()
	if out, stderr, err := kubelinkctl(ctx, t, install...); err != nil {
		t.Fatalf("putting %s back on its NodePort: install: %v\n%s%s", c.Name, err, stderr, out)
	}
	if out, stderr, err := kubelinkctl(ctx, t, append([]string{"join", "--timeout", "3m"}, labContexts()...)...); err != nil {
		t.Fatalf("putting %s back on its NodePort: join: %v\n%s%s", c.Name, err, stderr, out)
	}
	// The host port is gone with the pinned broker.
	if _, err := Eventually(ctx, 60*time.Second, time.Second, func(ctx context.Context) error {
		if portAnswers(ctx, hostPortAddr) == nil {
			return fmt.Errorf("%s still answers", hostPortAddr)
		}
		return nil
	}); err != nil {
		t.Errorf("%s: after the way back: %v", c.Name, err)
	}
	var d appsv1.Deployment
	if err := c.In("kubelink").Get(ctx, "kubelink-broker", "kubelink", &d); err != nil || d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: after the way back the broker has replicas %v (%v), want the lab's 2", c.Name, d.Spec.Replicas, err)
	}
}
