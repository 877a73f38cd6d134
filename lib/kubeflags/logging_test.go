package kubeflags

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func TestLoggerFormatsAndLevels(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	log.Warn("kept", "link", "b")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("json format wrote %q: %v", buf.String(), err)
	}
	if rec["msg"] != "kept" || rec["link"] != "b" || rec["level"] != "WARN" {
		t.Errorf("record %v", rec)
	}
	buf.Reset()
	log, _ = NewLogger(&buf, "info", "text")
	log.Info("hello", "k", "v")
	if !strings.Contains(buf.String(), "level=INFO msg=hello k=v") {
		t.Errorf("text format wrote %q", buf.String())
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "yaml"}} {
		if _, err := NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestLibraryLogsGoThroughOurLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	RouteLibraryLogs(log)
	klog.InfoS("from client-go", "resource", "kubelinks")
	ctrllog.Log.WithName("cache").Info("from controller-runtime", "kind", "KubeLink")
	klog.Flush()
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a library wrote a line that is not our JSON: %q", line)
		}
		msgs = append(msgs, rec["msg"].(string))
	}
	if got := strings.Join(msgs, "|"); !strings.Contains(got, "from client-go") || !strings.Contains(got, "from controller-runtime") {
		t.Errorf("library messages in our log: %q\n%s", got, buf.String())
	}
}
