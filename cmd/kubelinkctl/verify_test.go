package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
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

// Each run gets a namespace of its own and never waits for an earlier
// one to go; it deletes only what a killed run left behind: not kept, not
// young enough to be another run's, and labelled as a run's.
func TestVerifyNamespacePerRun(t *testing.T) {
	_, cs, _ := fakeCluster(t)
	ctx := context.Background()
	g := &globals{out: io.Discard, errOut: io.Discard}
	names := map[string]bool{}
	for range 50 {
		n, err := newVerifyNamespaceName()
		if err != nil {
			t.Fatal(err)
		}
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 || !strings.HasPrefix(n, verifyNamespacePrefix) {
			t.Fatalf("run namespace %q: %v", n, errs)
		}
		names[n] = true
	}
	if len(names) < 49 {
		t.Fatalf("50 run namespaces gave only %d names", len(names))
	}
	mk := func(name string, labels map[string]string) {
		t.Helper()
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("kubelink-verify-dead1", map[string]string{verifyRunLabel: "true"})
	mk("kubelink-verify-kept1", map[string]string{verifyRunLabel: "true", verifyKeepLabel: "true"})
	mk("kubelink-verify-users", nil) // not a run's: a user's namespace of that name
	deleting := func(name string) bool {
		t.Helper()
		n, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true
		}
		if err != nil {
			t.Fatal(err)
		}
		return n.DeletionTimestamp != nil
	}
	vc := func(ns string) *verifyCluster {
		return &verifyCluster{member: &member{cluster: &cluster{context: "eu", cs: cs}, name: "eu"}, runNS: ns}
	}

	// Another run may still use a young namespace: it stays.
	if err := ensureVerifyNamespace(ctx, g, vc("kubelink-verify-run01"), false); err != nil {
		t.Fatal(err)
	}
	n, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink-verify-run01", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[verifyRunLabel] != "true" || n.Labels["pod-security.kubernetes.io/enforce"] != "restricted" || n.Labels[verifyKeepLabel] != "" {
		t.Errorf("run namespace labels %v", n.Labels)
	}
	for _, name := range []string{"kubelink-verify-dead1", "kubelink-verify-kept1", "kubelink-verify-users"} {
		if deleting(name) {
			t.Errorf("namespace %s deleted although younger than %s", name, verifyLeftoverAge)
		}
	}

	// Old enough: a run's namespace goes, a kept one and a user's stay.
	defer func(age time.Duration) { verifyLeftoverAge = age }(verifyLeftoverAge)
	verifyLeftoverAge = 0
	if err := ensureVerifyNamespace(ctx, g, vc("kubelink-verify-run02"), true); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"kubelink-verify-dead1": true, "kubelink-verify-run01": true,
		"kubelink-verify-kept1": false, "kubelink-verify-users": false, "kubelink-verify-run02": false} {
		if got := deleting(name); got != want {
			t.Errorf("namespace %s being deleted: %v, want %v", name, got, want)
		}
	}
	if n, err := cs.CoreV1().Namespaces().Get(ctx, "kubelink-verify-run02", metav1.GetOptions{}); err != nil || n.Labels[verifyKeepLabel] != "true" {
		t.Errorf("the run with --keep: %v, labels %v", err, n.Labels)
	}
	// The same name twice is an error, not a wait.
	if err := ensureVerifyNamespace(ctx, g, vc("kubelink-verify-kept1"), false); err == nil || !strings.Contains(err.Error(), "creating namespace kubelink-verify-kept1") {
		t.Errorf("a namespace that exists: %v", err)
	}
}
