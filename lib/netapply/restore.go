package netapply

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/kubelink/kubelink/lib/mesh"
)

// restoreInput declares each chain (with --noflush that empties an existing
// chain) and appends its rules: the whole table changes in one transaction,
// so there is no moment in which a chain is empty.
func restoreInput(table string, chains []mesh.Chain) []byte {
	return restoreEdits(table, chains, nil)
}

// restoreEdits is restoreInput for the chains written whole (full) plus,
// in the same transaction, the positional edits of chains changed in place
// (chainEdit): deletes by position, inserts at a position, appends.
func restoreEdits(table string, full []mesh.Chain, edits []chainEdits) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%s\n", table)
	for _, ch := range full {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch.Name)
	}
	for _, ch := range full {
		for _, r := range ch.Rules {
			writeRule(&b, "-A "+ch.Name, r)
		}
	}
	for _, e := range edits {
		for _, op := range e.ops {
			switch {
			case op.delete:
				fmt.Fprintf(&b, "-D %s %d\n", e.chain, op.pos)
			case op.pos == 0:
				writeRule(&b, "-A "+e.chain, op.rule)
			default:
				writeRule(&b, fmt.Sprintf("-I %s %d", e.chain, op.pos), op.rule)
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// writeRule writes one line: the command and chain (head), then the rule's
// arguments quoted as iptables-restore unquotes them.
func writeRule(b *bytes.Buffer, head string, rule []string) {
	b.WriteString(head)
	for _, a := range rule {
		b.WriteByte(' ')
		b.WriteString(quoteArg(a))
	}
	b.WriteByte('\n')
}

// quoteArg quotes an argument the way iptables-restore unquotes it.
func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"'\\") {
		return a
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(a) + `"`
}

var restoreErrLine = regexp.MustCompile(`line:? (\d+)`)

// execRestore runs iptables-restore (or ip6tables-restore) without flushing
// the table, so only the declared chains change.
func execRestore(name string) func(input []byte) error {
	return func(input []byte) error {
		cmd := exec.Command(name, "--noflush", "--wait")
		cmd.Stdin = bytes.NewReader(input)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		msg := strings.TrimSpace(string(out))
		// Point at the rule that failed; the message only has its number.
		if m := restoreErrLine.FindStringSubmatch(msg); m != nil {
			lines := strings.Split(string(input), "\n")
			if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(lines) {
				msg += fmt.Sprintf(" (line %d: %s)", n, lines[n-1])
			}
		}
		return fmt.Errorf("%s: %w: %s", name, err, msg)
	}
}
