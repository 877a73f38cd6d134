package kubeflags

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func TestRelevantUpdates(t *testing.T) {
	link := func(edit func(*v1alpha1.KubeLink)) *v1alpha1.KubeLink {
		kl := &v1alpha1.KubeLink{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 1, ResourceVersion: "10", Labels: map[string]string{"x": "1"}},
			Spec:   v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.12/24", CIDR: "100.64.16.0/20"},
			Status: v1alpha1.KubeLinkStatus{State: v1alpha1.StateUp, Gateway: "10.0.0.1", Health: &v1alpha1.LinkHealth{RxBytes: 5}}}
		if edit != nil {
			edit(kl)
		}
		return kl
	}
	now := metav1.Now()
	cases := []struct {
		name               string
		edit               func(*v1alpha1.KubeLink)
		spec, beyondHealth bool
	}{
		{"nothing but the resourceVersion", func(kl *v1alpha1.KubeLink) { kl.ResourceVersion = "11" }, false, false},
		{"health figures", func(kl *v1alpha1.KubeLink) { kl.ResourceVersion, kl.Status.Health.RxBytes = "11", 99 }, false, false},
		{"state", func(kl *v1alpha1.KubeLink) { kl.Status.State = v1alpha1.StateDown }, false, true},
		{"gateway", func(kl *v1alpha1.KubeLink) { kl.Status.Gateway = "10.0.0.2" }, false, true},
		{"spec (a new generation)", func(kl *v1alpha1.KubeLink) { kl.Generation, kl.Spec.CIDR = 2, "100.64.32.0/20" }, true, true},
		{"labels", func(kl *v1alpha1.KubeLink) { kl.Labels["x"] = "2" }, true, true},
		{"annotations", func(kl *v1alpha1.KubeLink) { kl.Annotations = map[string]string{"a": "b"} }, true, true},
		{"finalizers", func(kl *v1alpha1.KubeLink) { kl.Finalizers = []string{"f"} }, true, true},
		{"deletion", func(kl *v1alpha1.KubeLink) { kl.DeletionTimestamp = &now }, true, true},
	}
	for _, c := range cases {
		old, new := link(nil), link(c.edit)
		if got := SpecChanged(old, new); got != c.spec {
			t.Errorf("%s: SpecChanged = %v, want %v", c.name, got, c.spec)
		}
		if got := KubeLinkChangedBeyondHealth(old, new); got != c.beyondHealth {
			t.Errorf("%s: KubeLinkChangedBeyondHealth = %v, want %v", c.name, got, c.beyondHealth)
		}
	}

	svc := func(edit func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ResourceVersion: "1"}, Spec: corev1.ServiceSpec{ClusterIP: "100.64.0.20"}}
		if edit != nil {
			edit(s)
		}
		return s
	}
	if ServiceChanged(svc(nil), svc(func(s *corev1.Service) {
		s.ResourceVersion = "2"
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}
	})) {
		t.Error("ServiceChanged: a status-only update counted")
	}
	if !ServiceChanged(svc(nil), svc(func(s *corev1.Service) { s.Spec.Ports = []corev1.ServicePort{{Port: 80}} })) {
		t.Error("ServiceChanged: a new port did not count")
	}
	// Objects of another type than expected: always relevant.
	if !KubeLinkChangedBeyondHealth(svc(nil), svc(nil)) || !ServiceChanged(link(nil), link(nil)) || !SpecChanged(1, 2) {
		t.Error("an unexpected type must count as relevant")
	}
}
