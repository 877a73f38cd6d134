#!/usr/bin/env bash
# Builds, offline, everything the kind lab runs on, and caches it:
#   kubelink-lab/debian-net   small Debian (iptables, nft, iproute2, conntrack,
#                             busybox): base of kube-proxy, broker, router and
#                             the lab's echo/client pods
#   kubelink-lab/node         a kind v0.30.0 node image for Kubernetes v1.34.4,
#                             with the control-plane images preloaded
# When a registry is reachable, NODE_IMAGE=kindest/node:v1.34.x can be given to
# lab-up instead; this script is the no-registry path.
# Each image is reused from docker, else loaded from $CACHE/images/*.tar, else
# built (cold: debootstrap ≈ 1–2 min each, node image ≈ 1 min).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Bump when the recipe changes so cached images are rebuilt.
RECIPE=3
DEBIAN_NET=kubelink-lab/debian-net:bookworm-r$RECIPE
NODE_BASE=kubelink-lab/node-base:bookworm-r$RECIPE
BIN=$CACHE/bin/$K8S_VERSION
COREDNS_BIN=$CACHE/bin/coredns-v1.14.0/coredns
# The node image holds our CoreDNS build as the cluster DNS: its tag names
# the build (coredns-bin.sh's stamp), so a new build makes a new node image.
DNS_STAMP=$(head -c 8 "$COREDNS_BIN.stamp" 2>/dev/null || true)
# The same for the Kubernetes binaries (k8s-bins.sh's stamp: the modules
# they were built from); the control-plane images carry it as a label.
K8S_STAMP=$({ cat "$BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,kubelet,kubeadm,kubectl,etcd}.stamp 2>/dev/null || true; } | sha256sum | cut -c1-8)
NODE=kubelink-lab/node:$K8S_VERSION-r$RECIPE-dns${DNS_STAMP:-none}-k8s${K8S_STAMP:-none}
CP_IMAGES="registry.k8s.io/kube-apiserver:$K8S_VERSION registry.k8s.io/kube-controller-manager:$K8S_VERSION
registry.k8s.io/kube-scheduler:$K8S_VERSION registry.k8s.io/kube-proxy:$K8S_VERSION registry.k8s.io/etcd:3.6.5-0
registry.k8s.io/coredns/coredns:v1.12.1 registry.k8s.io/pause:3.10.1 registry.k8s.io/pause:3.10"

if [[ ${1:-} == --print-node-image ]]; then echo "$NODE"; exit 0; fi
if [[ ${1:-} == --print-debian-net ]]; then echo "$DEBIAN_NET"; exit 0; fi

WORK=$(mktemp -d /var/tmp/kubelink-node.XXXXXX)
# --one-file-system: a debootstrap that failed may leave /proc or /dev
# mounted in its tree.
trap 'rm -rf --one-file-system "$WORK"' EXIT

debootstrap_to() { # dir packages
  log "debootstrap $1 ($(debian_mirror))"
  debootstrap --variant=minbase --include="$2" bookworm "$1" "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/archives/*.deb
}

# The Debian trees need no docker: `--trees-only` (make lab-build) makes
# them beside other work and keeps each as a directory under
# $CACHE/rootfs, which the image build then imports. Once the image's own
# tar is saved (the cache from then on), drop_tree removes the tree.
ROOTFS=$CACHE/rootfs
image_tar() { echo "$CACHE/images/$(echo "$1" | tr '/:' '__').tar"; }
# tree NAME FUNC [IMAGE]: sets TREE to the directory of the tree FUNC DIR
# builds, made once, unless IMAGE's tar exists (then TREE is ""). Under a
# lock, so a lab-build running beside lab-up waits rather than building it
# twice; at any time the tree or the image's tar exists, never neither.
tree() {
  local name=$1 fn=$2 img=${3:-} lock old
  TREE=$ROOTFS/$name-r$RECIPE
  mkdir -p "$ROOTFS"
  exec {lock}>"$ROOTFS/.$name.lock"
  flock "$lock"
  for old in "$ROOTFS/$name"-r*; do   # earlier recipes' trees
    [[ ! -e $old || $old == "$TREE" || $old == "$TREE".* ]] || remove_tree "$old"
  done
  if [[ ! -e $TREE.complete ]]; then
    if [[ -n $img && -s $(image_tar "$img") ]]; then
      TREE=""
    else
      remove_tree "$TREE"
      remove_tree "$TREE.tmp"
      "$fn" "$TREE.tmp"
      mv "$TREE.tmp" "$TREE"
      touch "$TREE.complete"
    fi
  fi
  exec {lock}>&-
}
# remove_tree DIR: removes DIR, first unmounting what a debootstrap that was
# killed left mounted in it (/proc, /sys, /dev), deepest first.
remove_tree() {
  local m
  [[ -e $1 ]] || return 0
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" || die "cannot unmount $m (left by an interrupted debootstrap)"
  done
  rm -rf --one-file-system "$1"
}
# drop_tree NAME: the tree is no longer needed (its image's tar is saved);
# under its lock, marker first, so tree() never takes a half-removed tree.
drop_tree() {
  local lock
  [[ -d $ROOTFS ]] || return 0
  exec {lock}>"$ROOTFS/.$1.lock"
  flock "$lock"
  rm -f "$ROOTFS/$1-r$RECIPE.complete"
  remove_tree "$ROOTFS/$1-r$RECIPE"
  exec {lock}>&-
}

debian_net_tree() {
  debootstrap_to "$1" iptables,nftables,iproute2,conntrack,ca-certificates,busybox,procps
}

build_debian_net() {
  tree debian-net debian_net_tree
  import_rootfs "$TREE" "$1" --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
}

node_base_tree() {
  local r=$1 kf
  debootstrap_to "$r" systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,ca-certificates,jq,procps,containerd,runc,containernetworking-plugins,socat,ebtables,iputils-ping,wget,curl,busybox
  # kind's node contract: the files of its base image, from the kind module.
  kf=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)/images/base/files
  [[ -d $kf ]] || die "kind base files not found in the module cache"
  cp -a "$kf/." "$r/"
  chmod 0755 "$r"/usr/local/bin/* "$r"/kind/bin/*
  # Debian puts containerd in /usr/bin and the CNI plugins in /usr/lib/cni.
  ln -sf /usr/bin/containerd "$r/usr/local/bin/containerd"
  rm -rf "$r/opt/cni/bin"; mkdir -p "$r/opt/cni"; ln -s /usr/lib/cni "$r/opt/cni/bin"
  # This VM has no CAP_SYS_RESOURCE: runc cannot set the negative oom_score_adj
  # kubelet gives pause and critical pods.
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$r/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$r/etc/containerd/config.toml" || die "containerd config not patched"
  chroot "$r" /bin/bash -euc '
    # The steps of kind'"'"'s base Dockerfile that shape systemd for a container.
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    grep -q "^ReadKMsg=no" /etc/systemd/journald.conf || echo ReadKMsg=no >>/etc/systemd/journald.conf
    ln -sf /lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
    systemctl mask systemd-binfmt.service >/dev/null 2>&1
    ctr oci spec | jq ".hooks.createContainer += [{\"path\": \"/kind/bin/mount-product-files.sh\"}] | del(.process.rlimits)" \
      >/etc/containerd/cri-base.json'
}

build_node_base() {
  tree node-base node_base_tree
  import_rootfs "$TREE" "$1-nostop" --change 'ENV container=docker' \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint","/sbin/init"]'
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$1-nostop" | DOCKER_BUILDKIT=0 $DOCKER build -q -t "$1" - >/dev/null
  $DOCKER rmi "$1-nostop" >/dev/null
}

# static_image IMAGE BINARY...: an image holding static binaries in /usr/local/bin.
static_image() {
  local img=$1 t; shift
  t=$(mktemp -d "$WORK/img.XXXX")
  mkdir -p "$t/usr/local/bin" "$t/etc" "$t/tmp" "$t/var/lib"; chmod 1777 "$t/tmp"
  install -m 0755 "$@" "$t/usr/local/bin/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534::/:/sbin/nologin\n' >"$t/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$t/etc/group"
  echo 'hosts: files dns' >"$t/etc/nsswitch.conf"
  import_rootfs "$t" "$img" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change "LABEL kubelink.k8s-stamp=$K8S_STAMP"
}

# current_image IMAGE: IMAGE is there and built from the current binaries.
current_image() {
  [[ $($DOCKER image inspect -f '{{index .Config.Labels "kubelink.k8s-stamp"}}' "$1" 2>/dev/null) == "$K8S_STAMP" ]]
}

control_plane_images() {
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    current_image "registry.k8s.io/$c:$K8S_VERSION" || static_image "registry.k8s.io/$c:$K8S_VERSION" "$BIN/$c"
  done
  current_image registry.k8s.io/etcd:3.6.5-0 || static_image registry.k8s.io/etcd:3.6.5-0 "$BIN/etcd"
  if ! current_image "registry.k8s.io/kube-proxy:$K8S_VERSION"; then
    mkdir -p "$WORK/proxy"; install -m 0755 "$BIN/kube-proxy" "$WORK/proxy/"
    printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nLABEL kubelink.k8s-stamp=%s\n' "$DEBIAN_NET" "$K8S_STAMP" >"$WORK/proxy/Dockerfile"
    DOCKER_BUILDKIT=0 $DOCKER build -q -t "registry.k8s.io/kube-proxy:$K8S_VERSION" "$WORK/proxy" >/dev/null
  fi
  # Our CoreDNS build (v1.14.0: the upstream plugins kubelink and a cluster
  # DNS use, plus kubelinkglobal) also serves as the cluster DNS, under the
  # tag kubeadm v1.34 asks for. Built each time a node image is (one file),
  # so the node image never holds an older build than its tag names.
  mkdir -p "$WORK/coredns"; install -m 0755 "$COREDNS_BIN" "$WORK/coredns/coredns"
  printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$WORK/coredns/Dockerfile"
  DOCKER_BUILDKIT=0 $DOCKER build -q -t registry.k8s.io/coredns/coredns:v1.12.1 "$WORK/coredns" >/dev/null
  if ! have_image registry.k8s.io/pause:3.10.1; then
    local src
    src=$(cd "$ROOT/lab/tools/k8s" && GOWORK=off go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    mkdir -p "$WORK/pause"
    gcc -Os -static -DVERSION=3.10.1 -o "$WORK/pause/pause" "$src"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$WORK/pause/Dockerfile"
    DOCKER_BUILDKIT=0 $DOCKER build -q -t registry.k8s.io/pause:3.10.1 "$WORK/pause" >/dev/null
  fi
  have_image registry.k8s.io/pause:3.10 || $DOCKER tag registry.k8s.io/pause:3.10.1 registry.k8s.io/pause:3.10
}

build_node() {
  local img=$1 box=kubelink-node-build
  cached_image "$NODE_BASE" build_node_base
  drop_tree node-base
  control_plane_images
  mkdir -p "$WORK/node"
  install -m 0755 "$BIN/kubeadm" "$BIN/kubelet" "$BIN/kubectl" "$WORK/node/"
  printf 'FROM %s\nCOPY kubeadm kubelet kubectl /usr/bin/\n' "$NODE_BASE" >"$WORK/node/Dockerfile"
  DOCKER_BUILDKIT=0 $DOCKER build -q -t "$img-stage" "$WORK/node" >/dev/null
  $DOCKER rm -f -v $box >/dev/null 2>&1 || true
  $DOCKER run -d --name $box --entrypoint=sleep --security-opt seccomp=unconfined "$img-stage" infinity >/dev/null
  $DOCKER exec $box bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  for _ in $(seq 1 100); do $DOCKER exec $box ctr version >/dev/null 2>&1 && break; sleep 0.2; done
  # shellcheck disable=SC2086
  $DOCKER save $CP_IMAGES | $DOCKER exec -i $box ctr -n k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
  for i in $CP_IMAGES; do $DOCKER exec $box ctr -n k8s.io images label "$i" io.cri-containerd.pinned=pinned >/dev/null; done
  # (sleep is PID 1 and reaps nothing: a stopped containerd stays a zombie)
  $DOCKER exec $box bash -c "echo -n $K8S_VERSION >/kind/version; pkill -x containerd; for i in \$(seq 1 150); do ps -o stat= -C containerd | grep -qv Z || exit 0; sleep 0.1; done; exit 1" ||
    die "containerd in the build container did not stop: $($DOCKER exec $box ps ax 2>&1 | tail -5)"
  $DOCKER exec $box rm -f /tmp/containerd.log
  $DOCKER commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint","/sbin/init"]' --change 'CMD []' $box "$img" >/dev/null
  $DOCKER rm -f -v $box >/dev/null
  $DOCKER rmi "$img-stage" >/dev/null || true
}

# --trees-only: the Debian trees of the images not cached yet, without docker.
if [[ ${1:-} == --trees-only ]]; then
  tree debian-net debian_net_tree "$DEBIAN_NET"
  tree node-base node_base_tree "$NODE_BASE"
  log "Debian trees ready under $ROOTFS (or their images' tars under $CACHE/images)"
  exit 0
fi
cached_image "$DEBIAN_NET" build_debian_net
drop_tree debian-net
[[ ${1:-} == --debian-net-only ]] && exit 0
# The two Debian trees need no Kubernetes binary: lab-up builds them while
# the binaries compile (debootstrap waits on the network and the disk, the
# compiler on the CPU).
if [[ ${1:-} == --bases-only ]]; then cached_image "$NODE_BASE" build_node_base; drop_tree node-base; exit 0; fi
for b in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd; do
  [[ -x $BIN/$b ]] || die "$BIN/$b missing: run lab/scripts/k8s-bins.sh first (make lab-up does)"
done
[[ -x $COREDNS_BIN ]] || die "$COREDNS_BIN missing: run lab/scripts/coredns-bin.sh first"
cached_image "$NODE" build_node
# Node images of earlier CoreDNS builds or recipes: their tars go, and so do
# the images where no cluster uses them (docker refuses those in use).
for t in "$CACHE"/images/kubelink-lab_node_*.tar; do
  if [[ -e $t && $t != "$CACHE/images/$(echo "$NODE" | tr '/:' '__').tar" ]]; then rm -f "$t"; fi
done
for i in $($DOCKER images --format '{{.Repository}}:{{.Tag}}' kubelink-lab/node); do
  [[ $i == "$NODE" ]] || $DOCKER rmi "$i" >/dev/null 2>&1 || true
done
log "node image $NODE ready"
