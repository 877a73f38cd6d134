package mesh

import (
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    Endpoint
		wantStr string
		wantErr string
	}{
		{in: "LocalLink", want: Endpoint{Kind: EndpointLocal}, wantStr: "LocalLink"},
		{in: "Inbound", want: Endpoint{Kind: EndpointInbound}, wantStr: "Inbound"},
		{in: "", want: Endpoint{Kind: EndpointNone}},
		{in: "kubelink.example.org", want: Endpoint{EndpointHost, "kubelink.example.org", 8777}, wantStr: "kubelink.example.org:8777"},
		{in: "kubelink.example.org.:51820", want: Endpoint{EndpointHost, "kubelink.example.org", 51820}},
		{in: "1.2.3.4:80", want: Endpoint{EndpointHost, "1.2.3.4", 80}, wantStr: "1.2.3.4:80"},
		{in: "[2001:db8::7]:51820", want: Endpoint{EndpointHost, "2001:db8::7", 51820}, wantStr: "[2001:db8::7]:51820"},
		{in: "[2001:db8::7]", want: Endpoint{EndpointHost, "2001:db8::7", 8777}},
		{in: "2001:db8::7", wantErr: "must be written in brackets"},
		{in: "[2001:db8::7", wantErr: "missing ']'"},
		{in: "[1.2.3.4]:80", wantErr: "is not an IPv6 address"},
		{in: "[2001:db8::7]80", wantErr: "expected ':<port>'"},
		{in: "host:0", wantErr: "1 to 65535"},
		{in: "host:65536", wantErr: "1 to 65535"},
		{in: "host:", wantErr: "1 to 65535"},
		{in: "999.1.1.1", wantErr: "not a valid IPv4 address"},
		{in: "exa mple.org", wantErr: "neither a DNS name nor an IP address"},
		{in: "-bad.org", wantErr: "neither a DNS name"},
	}
	for _, tt := range tests {
		got, err := ParseEndpoint(tt.in, 8777)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseEndpoint(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseEndpoint(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if tt.wantStr != "" && got.String() != tt.wantStr {
			t.Errorf("String() = %q, want %q", got.String(), tt.wantStr)
		}
	}
}
