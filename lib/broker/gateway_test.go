package broker

import (
	"testing"
	"time"
)

// A pass checks the chains against the kernel when asked (the periodic pass
// of each --resync), first, after a failed chain write, and as a fallback
// two periods after the last check; the passes in between only update.
func TestGatewayChecksOnThePeriodicPassOnly(t *testing.T) {
	g := &gateway{cfg: &Config{Resync: 10 * time.Second}}
	if !g.verifying() {
		t.Error("the first pass does not check")
	}
	g.verified = time.Now()
	if g.verifying() {
		t.Error("a pass right after a check checks again")
	}
	g.verified = time.Now().Add(-15 * time.Second)
	if g.verifying() {
		t.Error("a kicked pass 1.5 periods after the check checks; only the periodic pass should")
	}
	g.CheckNext()
	if !g.verifying() {
		t.Error("after CheckNext the pass does not check")
	}
	g.verified = time.Now().Add(-21 * time.Second)
	if !g.verifying() {
		t.Error("two periods without a check: the pass does not check")
	}
}
