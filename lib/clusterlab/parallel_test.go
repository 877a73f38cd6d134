package clusterlab

import "testing"

// How this package's tests share the machine:
//   - Most call t.Parallel(). Each builds its own lab (its own network
//     namespaces and processes; control planes only one test at a time,
//     emptied between tests, see testenv.SharedControlPlanesForTest), and
//     a lab spends much of its time waiting on its components' timers, so
//     two labs side by side take less than two one after the other.
//   - The tests that assert a tight bound on the time of a data-plane event (a
//     link Down or Up within 2 s, a name gone or back within 1 s of a state
//     change, worker routes following a failover within 2 s, a hold window
//     with no flap) call serialTiming instead. go test runs them first, one at
//     a time, before the parallel ones start, so their bounds are measured
//     without a second lab on the same cores. The bounds are the ones these
//     tests had when every test ran alone.

// serialTiming marks a test that runs alone (see above). It does nothing
// else: not calling t.Parallel is what keeps the test serial.
func serialTiming(t *testing.T) { t.Helper() }
