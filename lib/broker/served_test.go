package broker

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubelink/kubelink/lib/apis/kubelink/v1alpha1"
)

func TestServedLinksByMeshNameOrCIDR(t *testing.T) {
	links := []v1alpha1.KubeLink{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "192.168.0.11/24"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "lab--a"}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.1/24"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "lab--c"}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "10.200.0.3/24"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "x--y"}, Spec: v1alpha1.KubeLinkSpec{ClusterAddress: "garbage"}},
	}
	tests := []struct {
		flag string
		want []string
	}{
		{"all", []string{"a", "lab--a", "lab--c", "x--y"}},
		{"", []string{"a", "lab--a", "lab--c", "x--y"}},
		{"default", []string{"a"}},
		{"lab", []string{"lab--a", "lab--c"}},
		{"10.200.0.0/24", []string{"lab--a", "lab--c"}},
		{"default, x", []string{"a", "x--y"}},
	}
	for _, tt := range tests {
		s, err := ParseServed(tt.flag)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kl := range s.Links(links) {
			got = append(got, kl.Name)
		}
		if len(got) != len(tt.want) {
			t.Errorf("%q: %v, want %v", tt.flag, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%q: %v, want %v", tt.flag, got, tt.want)
			}
		}
	}
	if _, err := ParseServed("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}
