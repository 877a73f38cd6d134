#!/usr/bin/env bash
# vm-kernel.sh: makes sure `make test-kernel` has what it boots — qemu (Debian's
# qemu-system-x86, through deps.sh) and a Debian kernel whose modules include
# WireGuard — and prints the kernel's directory. The kernel package is only
# downloaded and unpacked into the cache, never installed on this machine:
# nothing in /boot or /lib/modules changes. A warm run costs a dpkg-query and
# a stat.
#
# Output: ${KUBELINK_CACHE:-~/.cache/kubelink}/kernel/<version>/{vmlinuz,lib/modules/<version>}
#   KUBELINK_VM_KERNEL=<package>  pick another package (default: what
#                                 linux-image-amd64 depends on, resolved once)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}/kernel
mkdir -p "$CACHE"
"$ROOT/lab/scripts/deps.sh" kernel >&2

# apt-get update under deps.sh's lock: .ci/run's make lab-build may be
# installing beside this, and apt refuses a second apt.
apt_update() { (exec {l}>/var/lock/kubelink-deps.lock; flock "$l"; apt-get update -qq >/dev/null 2>&1); }

pkg=${KUBELINK_VM_KERNEL:-}
if [[ -z $pkg && -s $CACHE/default ]]; then pkg=$(<"$CACHE/default"); fi
if [[ -z $pkg ]]; then
  # The meta package names the current kernel of the release.
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [[ -z $pkg ]]; then
    apt_update || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [[ -n $pkg ]] || { echo "vm-kernel: cannot resolve linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64); set KUBELINK_VM_KERNEL=linux-image-<version>-amd64" >&2; exit 1; }
  echo "$pkg" >"$CACHE/default"
fi
version=${pkg#linux-image-}
dir=$CACHE/$version
if [[ -s $dir/vmlinuz && -d $dir/lib/modules/$version ]]; then
  echo "$dir"
  exit 0
fi
exec {lock}>"$CACHE/.lock"
flock "$lock"
if [[ ! -s $dir/vmlinuz ]]; then
  tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "vm-kernel: downloading $pkg (unpacked into the cache, not installed)" >&2
  (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) \
    || { apt_update; (cd "$tmp" && apt-get download "$pkg" >/dev/null); } \
    || { echo "vm-kernel: apt-get download $pkg failed" >&2; exit 1; }
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  [[ -s $tmp/root/boot/vmlinuz-$version ]] || { echo "vm-kernel: $pkg has no /boot/vmlinuz-$version" >&2; exit 1; }
  find "$tmp/root" -path '*/wireguard/wireguard.ko*' | grep -q . \
    || { echo "vm-kernel: $pkg has no wireguard module" >&2; exit 1; }
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/lib"
  mv "$tmp/root/boot/vmlinuz-$version" "$dir.tmp/vmlinuz"
  mv "$tmp/root/boot/config-$version" "$dir.tmp/config"
  mv "$tmp/root/lib/modules" "$dir.tmp/lib/modules"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"   # whole or nothing
fi
echo "$dir"
