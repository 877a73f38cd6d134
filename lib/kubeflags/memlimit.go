package kubeflags

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles are where a container's memory limit is read: cgroup v2
// first, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimitShare is the part of the container's memory limit the Go heap
// may use before the garbage collector works harder to stay below it; the
// rest is for stacks, the runtime and what the kernel counts beside.
const memoryLimitShare = 0.9

// SetMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// container's (cgroup) memory limit, unless GOMEMLIMIT is set. Without it
// the collector lets the heap grow to twice what is live before it runs,
// which a process whose live heap is near half its limit turns into an OOM
// kill rather than a collection. It returns the limit set, 0 if none.
func SetMemoryLimit(log *slog.Logger) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit, file, err := cgroupMemoryLimit(cgroupMemoryFiles)
	if err != nil {
		log.Debug("no container memory limit read; the Go heap has none", "err", err)
		return 0
	}
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	log.Debug("Go memory limit from the container's", "file", file, "containerBytes", limit, "goMemLimitBytes", soft)
	return soft
}

// cgroupMemoryLimit reads the first of files that exists: the limit in
// bytes, 0 when it says there is none ("max", or v1's huge number).
func cgroupMemoryLimit(files []string) (int64, string, error) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, f, err
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, f, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, f, fmt.Errorf("%s: %q is not a byte count", f, v)
		}
		// cgroup v1 says "no limit" with a page-rounded maximum.
		if n <= 0 || n >= math.MaxInt64/2 {
			return 0, f, nil
		}
		return n, f, nil
	}
	return 0, "", errors.New("no cgroup memory limit file")
}
