#!/usr/bin/env bash
# test-kernel.sh: `make test-kernel`. Boots a Debian kernel that has the
# WireGuard module (lab/scripts/vm-kernel.sh) under qemu-system-x86_64 and
# runs the kernel WireGuard tests inside it (e2e/kernelvm): lib/wireguard
# built with -tags kernelwg, so auto mode must pick the kernel device, and
# the broker's hand-over of a kernel device (lib/broker, -tags kernelwg).
# Software emulation is enough (this machine has no KVM); KVM is used where
# /dev/kvm exists. Fails loudly when qemu or the kernel cannot be had.
#   KERNELVM_TIMEOUT  limit for the whole VM run (default 20m)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
start=$(date +%s)
kernel=$(lab/scripts/vm-kernel.sh)
work=${KUBELINK_CACHE:-$HOME/.cache/kubelink}/kernelvm
mkdir -p "$work"
# Static binaries only: the VM has no libc but what kernelvm copies for
# the programs the tests exec. The configuration of make lint and make
# build (no cgo, -trimpath), whose `go vet -tags kernelwg` has compiled
# these packages already: without -trimpath a cold machine compiled every
# dependency once more here (195 s of a cold CI's 236 s test-kernel step).
(cd e2e && CGO_ENABLED=0 go build -trimpath -o "$work/kernelvm" ./kernelvm)
(cd lib && CGO_ENABLED=0 go test -c -trimpath -tags kernelwg -o "$work/wireguard.test" ./wireguard)
(cd lib && CGO_ENABLED=0 go test -c -trimpath -tags kernelwg -o "$work/broker.test" ./broker)
echo "test-kernel: binaries built in $(( $(date +%s) - start ))s; booting $(basename "$kernel")"
# Modules: wireguard (and what it needs), veth for the namespaces' link,
# bridge and tun for the tests that open devices over a clashing name.
# Deliberately not xfrm_user: TestKernelModeOpensOnlyRoutingNetlink needs
# a kernel where that netlink family is missing.
rc=0
"$work/kernelvm" -kernel "$kernel" -timeout "${KERNELVM_TIMEOUT:-20m}" \
  -modules wireguard,veth,bridge,tun -exec ip,ss,wg \
  -test-args "-test.v -test.count=1 -test.timeout=15m" \
  wireguard="$work/wireguard.test" \
  "broker=$work/broker.test#-test.run=^(TestClosingTheWireGuardPlaneRemovesTheKernelDevice|TestStandbyRemovesOnlyAStaleWireGuardDevice)$" \
  || rc=$?
echo "test-kernel: exit $rc after $(( $(date +%s) - start ))s"
exit "$rc"
