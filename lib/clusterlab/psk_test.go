package clusterlab

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/wireguard"
)

// A link's WireGuard preshared key comes from the broker's key Secret
// (spec.presharedKeySecret), not from the KubeLink, which everyone who may
// read KubeLinks reads: a missing key makes the link Invalid with the fix,
// different keys on the two sides keep the tunnel shut, the same key opens
// it and is what the device uses; the old spec.presharedKey still works,
// with a warning Event.
func TestWireGuardPresharedKeyFromSecret(t *testing.T) {
	t.Parallel()
	lab := New(t, 2)
	a, b := lab.Clusters[0], lab.Clusters[1]
	a.StartRouter(lab)
	b.StartRouter(lab)
	aBroker := a.StartBroker(lab, a.GW)
	b.StartBroker(lab, b.GW)

	toB, toA := b.LinkTo(), a.LinkTo()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The broker's own private key is no preshared key (the CRD refuses
	// it; the broker would too).
	toB.Spec.PresharedKeySecret = &v1alpha1.SecretKeySelector{Key: v1alpha1.SecretKeyWireguardPrivateKey}
	if err := a.Kube.Create(ctx, toB); err == nil || !strings.Contains(err.Error(), "own WireGuard key") {
		t.Errorf("a link naming the private key as its preshared key: %v", err)
	}
	toB = b.LinkTo()
	toB.Spec.PresharedKeySecret = &v1alpha1.SecretKeySelector{Key: "psk-b"}
	toA.Spec.PresharedKeySecret = &v1alpha1.SecretKeySelector{Key: "psk-a"}
	a.Apply(a.LocalLink(), toB)
	b.Apply(b.LocalLink(), toA)

	// No such key yet: Invalid, naming the field, the Secret and the fix.
	_, kl := a.WaitState("b", v1alpha1.StateInvalid, 10*time.Second)
	for _, want := range []string{"spec.presharedKeySecret", `has no key "psk-b"`, "kubectl -n kubelink patch secret wireguard"} {
		if !strings.Contains(kl.Status.Message, want) {
			t.Errorf("A's link b: %q lacks %q", kl.Status.Message, want)
		}
	}
	t.Logf("no key: %s: %s", kl.Status.State, kl.Status.Message)

	psk1, psk2 := newKey(t), newKey(t)
	setSecretKey(t, a, "psk-b", psk1.String())
	setSecretKey(t, b, "psk-a", psk2.String())
	// Different keys: each side is valid, the tunnel stays shut.
	waitFor(t, "A's link b to leave Invalid", 10*time.Second, func() bool {
		kl, err := a.Link("b")
		return err == nil && kl.Status.State != v1alpha1.StateInvalid && kl.Status.State != ""
	})
	holdsFor(t, "no tunnel with different preshared keys", 6*time.Second, func() bool {
		if linkIs(a, "b", v1alpha1.StateUp) || linkIs(b, "a", v1alpha1.StateUp) {
			return false
		}
		_, err := Get(a.Pod, b.ServiceIP, "/", 200*time.Millisecond)
		return err != nil
	})

	// The same key: Up, traffic both ways, and the device's peer holds it.
	setSecretKey(t, b, "psk-a", psk1.String())
	a.WaitState("b", v1alpha1.StateUp, 15*time.Second)
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
	WaitGet(t, b.Pod, a.ServiceIP, 5*time.Second)
	var wg *wgctrl.Client
	if err := a.GW.Do(func() (err error) { wg, err = wgctrl.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	dev, err := wg.Device(aBroker.Device)
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Peers) != 1 || mesh.Key(dev.Peers[0].PresharedKey) != psk1 {
		t.Errorf("A's device: %d peers, want 1 with the Secret's preshared key", len(dev.Peers))
	}

	// The deprecated field still works, with a warning Event.
	kl, err = a.Link("b")
	must(t, err)
	kl.Spec.PresharedKeySecret, kl.Spec.PresharedKey = nil, psk1.String()
	must(t, a.Kube.Update(ctx, kl))
	waitFor(t, "a Deprecated Event on A's link b", 10*time.Second, func() bool {
		var evs corev1.EventList
		if err := a.Kube.List(ctx, &evs); err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "b" && e.Reason == "Deprecated" && strings.Contains(e.Message, "presharedKeySecret") {
				return true
			}
		}
		return false
	})
	holdsFor(t, "the link Up with the same key in the deprecated field", 3*time.Second, func() bool { return linkIs(a, "b", v1alpha1.StateUp) })
	WaitGet(t, a.Pod, b.ServiceIP, 5*time.Second)
}

func newKey(t *testing.T) mesh.Key {
	t.Helper()
	k, err := wireguard.GeneratePrivateKey()
	must(t, err)
	return k
}

// setSecretKey sets key in c's broker key Secret (wireguard).
func setSecretKey(t *testing.T, c *Cluster, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s corev1.Secret
	must(t, c.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "wireguard"}, &s))
	s.Data[key] = []byte(value)
	must(t, c.Kube.Update(ctx, &s))
}
