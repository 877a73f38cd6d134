package mesh

import "testing"

func TestParseLinkNameSplitsAtFirstDoubleDash(t *testing.T) {
	tests := []struct {
		name string
		want LinkName
	}{
		{"kubelink2", LinkName{Mesh: DefaultMesh, Cluster: "kubelink2"}},
		{"lab--b", LinkName{Mesh: "lab", Cluster: "b"}},
		{"lab--b--c", LinkName{Mesh: "lab", Cluster: "b--c"}},
		{"--b", LinkName{Mesh: DefaultMesh, Cluster: "--b"}},
		{"a-b", LinkName{Mesh: DefaultMesh, Cluster: "a-b"}},
	}
	for _, tt := range tests {
		got := ParseLinkName(tt.name)
		if got != tt.want {
			t.Errorf("ParseLinkName(%q) = %+v, want %+v", tt.name, got, tt.want)
		}
		if got.String() != tt.name {
			t.Errorf("round trip of %q gave %q", tt.name, got.String())
		}
	}
}
