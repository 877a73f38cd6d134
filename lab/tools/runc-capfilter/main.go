// Command runc-capfilter sits between dockerd and runc on machines whose
// capability bounding set is smaller than the kernel's list (a VM without
// CAP_SYS_RESOURCE, for example). Docker asks for every capability the kernel
// knows when it starts a privileged container, and runc then fails with
// "unable to apply caps: operation not permitted". This wrapper drops the
// capabilities this process cannot hold from the OCI spec runc is about to
// use and then replaces itself with the real runc.
//
// Register it as docker's default runtime (lab/scripts/host-prep.sh does):
//
//	dockerd --add-runtime capfilter=/usr/local/sbin/runc-capfilter --default-runtime capfilter
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capBits maps capability names to their bit numbers (linux/capability.h).
var capBits = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// boundingSet reads CapBnd of this process; ok is false when it cannot.
func boundingSet() (mask uint64, ok bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), "CapBnd:")
		if !found {
			continue
		}
		m, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		return m, err == nil
	}
	return 0, false
}

// keep reports whether a capability may stay in the spec: unknown names are
// left to runc, known ones must be in the bounding set.
func keep(name string, mask uint64) bool {
	bit, known := capBits[name]
	return !known || mask&(1<<bit) != 0
}

// trimCaps edits the "capabilities" object of proc (an OCI process object)
// and reports whether anything was removed.
func trimCaps(proc map[string]any, mask uint64) bool {
	caps, _ := proc["capabilities"].(map[string]any)
	changed := false
	for set, v := range caps {
		list, _ := v.([]any)
		kept := make([]any, 0, len(list))
		for _, c := range list {
			if name, _ := c.(string); keep(name, mask) {
				kept = append(kept, c)
			} else {
				changed = true
			}
		}
		caps[set] = kept
	}
	return changed
}

// rewrite trims the capabilities in an OCI config.json (nested=true, under
// "process") or an exec process file (nested=false), replacing it atomically.
func rewrite(path string, nested bool, mask uint64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	proc := doc
	if nested {
		proc, _ = doc["process"].(map[string]any)
	}
	if proc == nil || !trimCaps(proc, mask) {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := path + ".capfilter.tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// parseArgs finds the runc subcommand and the bundle and process paths.
func parseArgs(args []string) (cmd, bundle, process string) {
	bundle = "."
	value := func(i int, a, long, short string) (string, bool) {
		if v, ok := strings.CutPrefix(a, long+"="); ok {
			return v, true
		}
		if (a == long || a == short) && i+1 < len(args) {
			return args[i+1], true
		}
		return "", false
	}
	for i, a := range args {
		if v, ok := value(i, a, "--bundle", "-b"); ok {
			bundle = v
			continue
		}
		if v, ok := value(i, a, "--process", "-p"); ok {
			process = v
			continue
		}
		if cmd == "" && (a == "create" || a == "run" || a == "exec") {
			cmd = a
		}
	}
	return cmd, bundle, process
}

func main() {
	real := os.Getenv("RUNC_CAPFILTER_REAL")
	if real == "" {
		real = "/usr/sbin/runc"
	}
	args := os.Args[1:]
	if mask, ok := boundingSet(); ok {
		cmd, bundle, process := parseArgs(args)
		var err error
		switch {
		case cmd == "create" || cmd == "run":
			err = rewrite(filepath.Join(bundle, "config.json"), true, mask)
		case cmd == "exec" && process != "":
			err = rewrite(process, false, mask)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "runc-capfilter:", err)
		}
	}
	err := syscall.Exec(real, append([]string{real}, args...), os.Environ())
	fmt.Fprintln(os.Stderr, "runc-capfilter: exec", real+":", err)
	os.Exit(127)
}
