package main

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOutageOf(t *testing.T) {
	t0 := time.UnixMilli(10_000)
	line := func(ms int64, ok bool) string { return fmt.Sprintf(`{"ok":%v,"ms":1,"unixMillis":%d}`, ok, ms) }
	series := func(oks ...bool) []byte {
		var ls []string
		for i, ok := range oks {
			// The node's clock is an hour ahead of this machine's.
			ls = append(ls, line(3_600_000+9_800+int64(i)*100, ok))
		}
		return []byte(strings.Join(ls, "\n") + "\n")
	}
	for _, tc := range []struct {
		name      string
		out       []byte
		outage    time.Duration
		recovered bool
	}{
		// 9.8 s, 9.9 s before the deletion; fails at 10.1–10.3 s, back at 10.4 s.
		{"an outage", series(true, true, true, false, false, false, true, true), 300 * time.Millisecond, true},
		{"none", series(true, true, true, true), 0, true},
		{"a failure before t0 does not count", series(false, true, true, true), 0, true},
		{"never back", series(true, true, false, false), 0, false},
		{"a flap counts from the first failure to the last", series(true, true, false, true, false, true), 300 * time.Millisecond, true},
	} {
		// The watch began at 9.8 s on this machine's clock.
		got, rec, err := outageOf(tc.out, t0, time.UnixMilli(9_800))
		if err != nil || got != tc.outage || rec != tc.recovered {
			t.Errorf("%s: outage %s recovered %v (%v), want %s %v", tc.name, got, rec, err, tc.outage, tc.recovered)
		}
	}
	if _, _, err := outageOf([]byte("oops\n"), t0, t0); err == nil {
		t.Error("garbage was accepted")
	}
}

func TestJUnitReport(t *testing.T) {
	p := filepath.Join(t.TempDir(), "verify.xml")
	err := writeJUnit(p, []check{{Name: "a → b by ClusterIP", From: "a", To: "b", Pass: true, Seconds: 0.012},
		{Name: "b → a by DNS name", From: "b", To: "a", Seconds: 5, Detail: "context deadline exceeded"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var s struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Cases    []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
		} `xml:"testcase"`
	}
	if err := xml.Unmarshal(b, &s); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if s.Tests != 2 || s.Failures != 1 || s.Cases[0].Failure != nil || s.Cases[1].Failure == nil || s.Cases[1].Failure.Message != "context deadline exceeded" {
		t.Errorf("report:\n%s", b)
	}
}
