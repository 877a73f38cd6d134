#!/usr/bin/env bash
# deps.sh GROUP...: installs the Debian packages the named groups need, only
# those that are missing, so that a warm run costs one dpkg-query (≈50 ms).
# The one place that knows the project's host packages: `make test`,
# `make bench`, `make lab-up` (through host-prep.sh) and therefore .ci/run
# all come through here, so CI installs exactly what a user's first command
# installs — nothing more.
#   test  what `make test` execs: ip, iptables(-restore), nft, conntrack,
#         iperf3 (throughput checks), ps/pkill, modprobe, wg (read-back check),
#         setpriv (a test runs a helper with NET_ADMIN only)
#   bench the same as test (iperf3 is the measuring tool)
#   kernel `make test-kernel`: qemu-system-x86 (the VM that boots a kernel with
#         WireGuard; the kernel itself comes from lab/scripts/vm-kernel.sh),
#         iproute2 and wireguard-tools (copied into the VM's initramfs)
#   lab   the kind lab: docker.io (dockerd, containerd, runc), debootstrap
#         (offline node image), jq, openssl, curl (the lab registry's readiness)
#   lab-build `make lab-build`: what builds the lab without docker (debootstrap,
#         jq, flock); no docker.io, so it starts no daemon beside make test
set -euo pipefail
declare -A group=(
  [test]="ca-certificates git iproute2 iptables nftables conntrack iperf3 procps kmod wireguard-tools util-linux"
  [bench]="ca-certificates git iproute2 iptables nftables conntrack iperf3 procps kmod"
  [kernel]="ca-certificates iproute2 wireguard-tools qemu-system-x86"
  [lab]="ca-certificates curl git iproute2 iptables docker.io debootstrap jq openssl procps"
  [lab-build]="ca-certificates git debootstrap jq util-linux"
)
(($#)) || set -- test
want=()
for g in "$@"; do
  [[ -n ${group[$g]:-} ]] || { echo "deps: unknown group '$g' (test, bench, kernel, lab, lab-build)" >&2; exit 2; }
  # shellcheck disable=SC2206
  want+=(${group[$g]})
done
missing=()
while read -r p; do
  [[ -n $p ]] || continue
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done < <(printf '%s\n' "${want[@]}" | sort -u)
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root (or: apt-get install ${missing[*]})" >&2
  exit 1
fi
# One install at a time: .ci/run's make lab-build runs beside make test, and
# apt refuses a second apt rather than waiting for it.
exec {lock}>/var/lock/kubelink-deps.lock
flock "$lock"
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] \
    || { echo "deps: $p did not install" >&2; exit 1; }
done
echo "deps: installed ${missing[*]}" >&2
