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
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%s\n", table)
	for _, ch := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch.Name)
	}
	for _, ch := range chains {
		for _, r := range ch.Rules {
			b.WriteString("-A " + ch.Name)
			for _, a := range r {
				b.WriteByte(' ')
				b.WriteString(quoteArg(a))
			}
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
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
