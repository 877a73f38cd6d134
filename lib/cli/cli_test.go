package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseHandlesHelpVersionAndErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantDone bool
		wantErr  string
		wantOut  string
	}{
		{name: "help lists flags", args: []string{"--help"}, wantDone: true, wantOut: "--example"},
		{name: "version names the binary", args: []string{"--version"}, wantDone: true, wantOut: "kubelink-test v"},
		{name: "no args runs", args: nil},
		{name: "unknown flag is an error", args: []string{"--nope"}, wantErr: "unknown flag: --nope"},
		{name: "positional args are an error", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New("kubelink-test", "a test")
			c.Flags.String("example", "", "an example flag")
			var out bytes.Buffer
			done, err := c.Parse(tt.args, &out)
			if done != tt.wantDone {
				t.Errorf("done = %v, want %v", done, tt.wantDone)
			}
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q does not contain %q", out.String(), tt.wantOut)
			}
		})
	}
}
