package main

import "time"

// plan is what the host tells the VM's init: which modules to load and which
// test binaries to run. It travels as /kernelvm/plan.json in the initramfs.
type plan struct {
	Modules  []string // paths in the initramfs, each after its dependencies
	Optional []string // loaded after Modules; one that fails is logged
	Env      []string // added to every test's environment
	// DefaultRoute gives the VM a node's default route through a dummy
	// interface (kube-apiserver refuses to start without one); nothing
	// reaches anything through it.
	DefaultRoute bool
	Tests        []planTest // run one after the other
}

type planTest struct {
	Name    string
	Binary  string // path in the initramfs
	Args    []string
	Timeout time.Duration // the VM kills the test after this
}

// result is what init reports on the console, on one line after
// resultMarker, for the host to parse.
type result struct {
	Kernel  string   // uname -r inside the VM
	Modules int      // modules loaded
	Failed  []string `json:",omitempty"` // optional modules that did not load
	Tests   []testResult
	Error   string `json:",omitempty"` // init itself failed
}

type testResult struct {
	Name     string
	ExitCode int
	Seconds  float64
}

const resultMarker = "KERNELVM-RESULT "

// planPath is where init finds the plan.
const planPath = "/kernelvm/plan.json"
