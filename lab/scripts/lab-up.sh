#!/usr/bin/env bash
# make lab-up: two (LAB_CLUSTERS=3: three) offline kind clusters with
# kubelink between them, built as a user would: kubelinkctl install per
# cluster, then one kubelinkctl join (with three, a second join brings lab-c
# into the running mesh of a and b). No script writes a KubeLink, a
# member's ServiceAccount or a token.
#   lab-a: control plane + worker, pods 10.110.0.0/16, services 100.64.0.0/20, mesh 192.168.0.11 (the mesh authority)
#   lab-b: control plane,          pods 10.120.0.0/16, services 100.64.16.0/20, mesh 192.168.0.12
#   lab-c: control plane,          pods 10.130.0.0/16, services 100.64.32.0/20, mesh 192.168.0.13
# LAB_MODE=wireguard (default) or bridge chooses the data plane. Re-running it
# on a running lab re-deploys (e.g. to switch LAB_MODE) without recreating
# the clusters. kube-proxy runs in nftables mode in lab-a and in iptables
# mode in lab-b, so one e2e pass covers both modes on both ends of every
# link; LAB_KUBE_PROXY=iptables or nftables forces one mode on both (a
# cluster running another mode is recreated). Everything is built offline
# and cached under ~/.cache/kubelink.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
MODE=${LAB_MODE:-wireguard}
TAG=${TAG:?TAG (image version) is required; make lab-up sets it}
NODE_IMAGE=${NODE_IMAGE:-}
case $MODE in wireguard|bridge) ;; *) die "LAB_MODE=$MODE: must be wireguard or bridge" ;; esac
case ${LAB_KUBE_PROXY:-} in
  '') declare -A PROXY=([a]=nftables [b]=iptables [c]=iptables) ;;
  iptables|nftables) declare -A PROXY=([a]=$LAB_KUBE_PROXY [b]=$LAB_KUBE_PROXY [c]=$LAB_KUBE_PROXY) ;;
  *) die "LAB_KUBE_PROXY=$LAB_KUBE_PROXY: must be iptables or nftables (unset: nftables in lab-a, iptables in lab-b and lab-c)" ;;
esac
case ${LAB_CLUSTERS:-2} in
  2) CLUSTERS=(a b) ;;
  3) CLUSTERS=(a b c) ;;
  *) die "LAB_CLUSTERS=$LAB_CLUSTERS: must be 2 or 3" ;;
esac
start=$(date +%s)

"$ROOT/lab/scripts/host-prep.sh"
# On a cold machine the Debian trees of the node image (debootstrap: network
# and disk) are built while the Kubernetes binaries compile (CPU).
bases=""
if [[ -z $NODE_IMAGE ]]; then
  mkdir -p "$LAB_DIR"
  # Its own process group (setsid), so that stopping it stops its
  # children (debootstrap, the compiler) too.
  setsid "$ROOT/lab/scripts/node-image.sh" --bases-only >"$LAB_DIR/node-bases.log" 2>&1 &
  bases=$!
  # If lab-up stops early, so does the build (its own trap removes its tree).
  trap '[[ -z $bases ]] || kill -- "-$bases" 2>/dev/null || true' EXIT
fi
"$ROOT/lab/scripts/k8s-bins.sh" kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl etcd
"$ROOT/lab/scripts/coredns-bin.sh"
if [[ -n $bases ]] && ! wait "$bases"; then
  bases=""
  cat "$LAB_DIR/node-bases.log" >&2
  die "building the node image's Debian trees failed (log: $LAB_DIR/node-bases.log)"
fi
bases=""
# The registry's binary compiles (CPU) while the node image and the images
# are assembled (docker: disk); a cold machine saves most of a minute.
mkdir -p "$LAB_DIR"
setsid "$ROOT/lab/scripts/registry.sh" build >"$LAB_DIR/registry-build.log" 2>&1 &
regbuild=$!
trap '[[ -z $regbuild ]] || kill -- "-$regbuild" 2>/dev/null || true' EXIT
if [[ -z $NODE_IMAGE ]]; then
  "$ROOT/lab/scripts/node-image.sh"
  NODE_IMAGE=$("$ROOT/lab/scripts/node-image.sh" --print-node-image)
fi
"$ROOT/lab/scripts/images.sh" "$TAG"
if ! wait "$regbuild"; then
  regbuild=""
  cat "$LAB_DIR/registry-build.log" >&2
  die "building the registry failed (log: $LAB_DIR/registry-build.log)"
fi
regbuild=""
cat "$LAB_DIR/registry-build.log"
IMAGES="kubelink/broker kubelink/router kubelink/meshdns kubelink/certwatch kubelink/mcs kubelink/coredns kubelink/verifier kubelink-lab/toolbox kubelink-lab/cni"
# Every image is pulled from the lab's registry (lab/scripts/registry.sh),
# as on a user's cluster; nothing is loaded into the nodes.
REG=localhost:5001
"$ROOT/lab/scripts/registry.sh" start
# shellcheck disable=SC2086
"$ROOT/lab/scripts/registry.sh" push "$TAG" $IMAGES

# Per-cluster facts: pod CIDR, service CIDR, mesh address, node roles.
declare -A POD=([a]=10.110.0.0/16 [b]=10.120.0.0/16 [c]=10.130.0.0/16)
declare -A SVC=([a]=100.64.0.0/20 [b]=100.64.16.0/20 [c]=100.64.32.0/20)
declare -A MESH=([a]=192.168.0.11 [b]=192.168.0.12 [c]=192.168.0.13)
declare -A NODES=([a]="control-plane worker" [b]="control-plane" [c]="control-plane")
# A lab-c from an earlier LAB_CLUSTERS=3 stays in the mesh (make lab-down
# removes it).
if [[ ${#CLUSTERS[@]} == 2 ]] && "$KIND" get clusters 2>/dev/null | grep -x lab-c >/dev/null; then
  log "lab-c exists (an earlier LAB_CLUSTERS=3): keeping it in the mesh; make lab-down removes it"
  CLUSTERS=(a b c)
fi
kc() { local c=$1; shift; "$KUBECTL" --kubeconfig "$LAB_DIR/$c/kubeconfig" "$@"; }
HELM=${HELM:-$CACHE/tools/helm}
[[ -x $HELM ]] || die "helm not found at $HELM: run make tools (make lab-up builds it)"

create_cluster() { # c
  local c=$1 d=$LAB_DIR/$1 name=lab-$1 role
  mkdir -p "$d"
  if "$KIND" get clusters 2>/dev/null | grep -x "$name" >/dev/null; then
    "$KIND" get kubeconfig --name "$name" >"$d/kubeconfig"
    local have; have=$(kube_proxy_mode "$c" || true)  # unreadable: recreated below
    if [[ $have != "${PROXY[$c]}" ]]; then
      log "cluster $name runs kube-proxy in ${have:-an unknown} mode, wanted ${PROXY[$c]}: recreating it"
      "$KIND" delete cluster --name "$name" >/dev/null 2>&1
    elif ! $DOCKER exec "lab-$c-control-plane" grep -q /etc/containerd/certs.d /etc/containerd/config.toml 2>/dev/null; then
      log "cluster $name has no containerd registry configuration (an older lab): recreating it"
      "$KIND" delete cluster --name "$name" >/dev/null 2>&1
    elif [[ $(kc "$c" -n kubelink get deploy kubelink-broker -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null || true) == "" ]] &&
      kc "$c" -n kubelink get deploy kubelink-broker >/dev/null 2>&1; then
      # Helm adopts no objects it did not create.
      log "cluster $name runs kubelink deployed without the chart (an older lab): recreating it"
      "$KIND" delete cluster --name "$name" >/dev/null 2>&1
    elif cluster_healthy "$c"; then
      log "cluster $name exists and is healthy (kube-proxy $have); reusing it"
      return
    fi
    if "$KIND" get clusters 2>/dev/null | grep -x "$name" >/dev/null; then
      # e.g. its node containers did not survive a dockerd restart
      log "cluster $name exists but is not healthy; recreating it"
      "$KIND" delete cluster --name "$name" >/dev/null 2>&1
    fi
  fi
  {
    echo "kind: Cluster"
    echo "apiVersion: kind.x-k8s.io/v1alpha4"
    echo "networking: {ipFamily: ipv4, podSubnet: ${POD[$c]}, serviceSubnet: ${SVC[$c]}, disableDefaultCNI: true, kubeProxyMode: ${PROXY[$c]}}"
    echo "kubeadmConfigPatches:"
    echo "- |"
    echo "  kind: KubeletConfiguration"
    echo "  failCgroupV1: false"
    # containerd reads per-registry hosts (the lab's registry) from here.
    echo "containerdConfigPatches:"
    echo "- |-"
    echo "  [plugins.\"io.containerd.grpc.v1.cri\".registry]"
    echo "    config_path = \"/etc/containerd/certs.d\""
    echo "nodes:"
    for role in ${NODES[$c]}; do
      echo "- role: $role"
      echo "  image: $NODE_IMAGE"
    done
  } >"$d/kind.yaml"
  log "creating cluster $name"
  local s; s=$(date +%s)
  # No --wait: the nodes become Ready only once the lab's CNI agent runs.
  "$KIND" create cluster --name "$name" --config "$d/kind.yaml" --kubeconfig "$d/kubeconfig" >"$d/create.log" 2>&1 ||
    { tail -30 "$d/create.log" >&2; die "kind create cluster $name failed (log: $d/create.log)"; }
  log "cluster $name created in $(( $(date +%s) - s ))s"
}

# kube_proxy_mode c: the mode in the cluster's kube-proxy configuration
# (empty when it cannot be read).
kube_proxy_mode() {
  timeout 20 "$KUBECTL" --kubeconfig "$LAB_DIR/$1/kubeconfig" --request-timeout=5s -n kube-system \
    get configmap kube-proxy -o jsonpath='{.data.config\.conf}' 2>/dev/null | awk '$1 == "mode:" {gsub(/"/, "", $2); print $2; exit}'
}

# cluster_healthy c: every node container runs and every node is Ready.
cluster_healthy() {
  local c=$1 n want=0 ready
  for n in ${NODES[$c]}; do
    want=$((want + 1))
    [[ $($DOCKER inspect -f '{{.State.Running}}' "lab-$c-$n" 2>/dev/null) == true ]] || return 1
  done
  ready=$(timeout 20 "$KUBECTL" --kubeconfig "$LAB_DIR/$c/kubeconfig" --request-timeout=5s get nodes \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True)
  [[ $ready == "$want" ]]
}

node_ip() { $DOCKER inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "$1"; }

# start_cni c: the lab's CNI agent (lab/cni), then every node Ready.
start_cni() {
  local c=$1
  kc "$c" -n kube-system create configmap kubelink-lab-cni --from-literal=CLUSTER_POD_CIDR="${POD[$c]}" \
    --from-literal=NODE_NET="$NODE_NET" --dry-run=client -o yaml | kc "$c" apply -f - >/dev/null
  sed "s|image: kubelink-lab/cni:TAG|image: $REG/kubelink-lab/cni:$TAG|" "$ROOT/lab/cni/lab-cni.yaml" | kc "$c" apply -f - >/dev/null
  kc "$c" wait --for=condition=Ready nodes --all --timeout=300s >/dev/null ||
    die "the nodes of lab-$c did not become Ready (lab/scripts/lab-diag.sh shows why)"
}

# The cluster DNS forwards the mesh domain to the kubelink CoreDNS (kind's
# Corefile does not import coredns-custom, so --coredns-configure cannot).
# kubelinkctl install does this itself; only the helm install needs it.
hook_cluster_dns() {
  local c=$1 ip cf
  ip=$(kc "$c" -n kubelink get svc kubelink-coredns -o jsonpath='{.spec.clusterIP}')
  cf=$(kc "$c" -n kube-system get cm coredns -o jsonpath='{.data.Corefile}')
  # The same block as kubelink-meshdns's coredns-custom hook: no cached
  # SERVFAIL (a dead member's timeouts would outlive its Down by 5 s), and
  # the link gate's 1-s TTLs kept (CoreDNS's minimum would make them 5 s).
  # The lab runs kubelink-mcs, so clusterset.local goes there too.
  local body="    errors"$'\n'"    cache 5 {"$'\n'"        success 10000 5 0"$'\n'"        denial 10000 5 0"$'\n'"        servfail 0"$'\n'"    }"$'\n'"    forward . $ip"$'\n'"}"
  # (the marker line: kubelinkctl uninstall removes only a clusterset block under it)
  local want="kubelink:53 {"$'\n'"$body"$'\n'"# kubelink: clusterset.local to the kubelink CoreDNS (kubelinkctl install)"$'\n'"clusterset.local:53 {"$'\n'"$body"
  if [[ $cf == *"$want"* ]]; then return; fi
  # an older block of ours is replaced
  cf=$(awk '/^# kubelink: clusterset\.local/{next} /^(kubelink|clusterset\.local):53 \{/{skip=1; depth=0} skip{n=gsub(/\{/,"{"); m=gsub(/\}/,"}"); depth+=n-m; if (depth<=0 && (n||m)) {skip=0}; next} {print}' <<<"$cf")
  cf+=$'\n'"$want"
  kc "$c" -n kube-system create cm coredns --from-literal=Corefile="$cf" --dry-run=client -o yaml | kc "$c" apply -f - >/dev/null
  kc "$c" -n kube-system rollout restart deploy/coredns >/dev/null
}

deploy() { # c
  local c=$1 d=$LAB_DIR/$1 bridge_name authority=()
  bridge_name=$(node_ip "lab-$c-control-plane")
  # a holds the mesh CA (its certwatch makes one); join registers the
  # others at it.
  [[ $c == a ]] && authority=(--mesh-authority)
  # kubelink through its chart: the per-cluster values of lab/values/$c.yaml,
  # plus what is only known at run time. pullPolicy Always: a rebuilt image
  # of the same (dirty) tag is pulled again. By default as a user would,
  # with kubelinkctl install (it discovers the rest and waits for the
  # broker); LAB_INSTALL=helm installs the chart with the helm CLI instead.
  local port=30777
  [[ $MODE == bridge ]] && port=30088
  case ${LAB_INSTALL:-kubelinkctl} in
  kubelinkctl)
    local s; s=$(date +%s)
    [[ -x $ROOT/bin/kubelinkctl ]] || die "bin/kubelinkctl is missing: run make kubelinkctl (make lab-up builds it)"
    "$ROOT/bin/kubelinkctl" install --kubeconfig "$d/kubeconfig" --chart "$ROOT/deploy/chart/kubelink" \
      --name "$c" --mesh-cidr 192.168.0.0/24 --address "${MESH[$c]}" \
      --data-plane "$MODE" --announce "$bridge_name:$port" --node-cidr "$NODE_NET" --registry "$REG" --version "$TAG" \
      "${authority[@]}" -f "$ROOT/lab/values/$c.yaml" --set image.pullPolicy=Always >"$d/install.log" 2>&1 ||
      { cat "$d/install.log" >&2; die "kubelinkctl install into lab-$c failed (log: $d/install.log)"; }
    log "kubelinkctl install into lab-$c: $(( $(date +%s) - s ))s"
    ;;
  helm)
    "$HELM" upgrade --install kubelink "$ROOT/deploy/chart/kubelink" --kubeconfig "$d/kubeconfig" \
      --namespace kubelink --create-namespace -f "$ROOT/lab/values/$c.yaml" \
      --set-string "cluster.nodeCIDR=$NODE_NET,dataPlane=$MODE,bridge.name=$bridge_name,bridge.identities=kubelink://default/$c,image.registry=$REG,image.tag=$TAG,image.pullPolicy=Always" \
      --set "meshAuthority.enabled=$([[ $c == a ]] && echo true || echo false)" \
      >"$d/helm.log" 2>&1 || { cat "$d/helm.log" >&2; die "helm upgrade --install kubelink into lab-$c failed"; }
    # The chart makes no LocalLink: with helm alone the user writes it, with
    # the endpoint join reads (kubelinkctl install does both).
    kc "$c" apply -f - >/dev/null <<Y
apiVersion: kubelink.mandelsoft.org/v1alpha1
kind: KubeLink
metadata: {name: $c, annotations: {kubelink.mandelsoft.org/endpoint: "$bridge_name:$port"}}
spec: {endpoint: LocalLink, clusterAddress: ${MESH[$c]}/24, cidr: ${SVC[$c]}}
Y
    ;;
  *) die "LAB_INSTALL=$LAB_INSTALL: must be kubelinkctl or helm" ;;
  esac
  # The lab's own workload: echo and client pods, and the cluster's name.
  local f
  for f in "$ROOT"/lab/workload/*.yaml "$ROOT/lab/values/lab-cluster-$c.yaml"; do
    echo ---; sed "s|image: kubelink-lab/toolbox.*|image: $REG/kubelink-lab/toolbox:$TAG|" "$f"
  done | kc "$c" apply -f - >"$d/apply.log" ||
    { cat "$d/apply.log" >&2; die "apply of the lab workload to lab-$c failed"; }
}

# join c...: kubelinkctl join of the clusters c..., which waits until every
# link between them is Up.
join() {
  local args=() c s names="" out; s=$(date +%s)
  for c in "$@"; do args+=(--context "kind-lab-$c"); names+="${names:+, }lab-$c"; done
  out=$LAB_DIR/join-$(IFS=; echo "$*").log
  "$ROOT/bin/kubelinkctl" join --kubeconfig "$KCS" "${args[@]}" --timeout 5m >"$out" 2>&1 ||
    { cat "$out" >&2; die "kubelinkctl join of $names failed (log: $out)"; }
  log "kubelinkctl join of $names: $(( $(date +%s) - s ))s"
}

# in_parallel fn c...: runs fn for every cluster at once (kind creates
# clusters side by side, kubelinkctl installs them so: each mostly waits on
# its own cluster), then fails if one of them did (it said why).
in_parallel() {
  local fn=$1 c pids=() failed=0; shift
  for c in "$@"; do "$fn" "$c" & pids+=($!); done
  for c in "${pids[@]}"; do wait "$c" || failed=1; done
  ((failed == 0)) || die "$fn failed for a cluster (above)"
}

# setup_cluster c: the registry on its nodes, the lab's CNI, kubelink and
# the lab's workload.
setup_cluster() {
  local c=$1 n
  for n in ${NODES[$c]}; do "$ROOT/lab/scripts/registry.sh" configure-node "lab-$c-$n"; done
  start_cni "$c"
  for _ in $(seq 1 60); do kc "$c" get sa default >/dev/null 2>&1 && break; sleep 1; done
  deploy "$c"
}

mkdir -p "$LAB_DIR"
in_parallel create_cluster "${CLUSTERS[@]}"
KCS=""  # the clusters' kubeconfigs, as a KUBECONFIG list
for c in "${CLUSTERS[@]}"; do KCS+=${KCS:+:}$LAB_DIR/$c/kubeconfig; done
NODE_NET=$($DOCKER network inspect kind -f '{{range .IPAM.Config}}{{if .Subnet}}{{.Subnet}} {{end}}{{end}}' | tr ' ' '\n' | grep -m1 '\.')
[[ -n $NODE_NET ]] || die "no IPv4 subnet on docker network kind"
in_parallel setup_cluster "${CLUSTERS[@]}"
if [[ ${LAB_INSTALL:-kubelinkctl} == helm ]]; then
  for c in "${CLUSTERS[@]}"; do hook_cluster_dns "$c"; done
fi
# The mesh of a and b; with three clusters, c then joins the running mesh
# (the links between a and b stay as they are).
join a b
[[ ${#CLUSTERS[@]} == 3 ]] && join a b c
for c in "${CLUSTERS[@]}"; do
  kc "$c" rollout status deploy/echo --timeout=180s >/dev/null
  kc "$c" rollout status ds/client --timeout=180s >/dev/null
  kc "$c" -n kube-system rollout status deploy/coredns --timeout=180s >/dev/null
  kc "$c" -n kubelink rollout status deploy/kubelink-coredns --timeout=180s >/dev/null
done
echo "$MODE" >"$LAB_DIR/mode"
# read by the e2e tests (TestKubeProxyMode): one line per cluster
for c in "${CLUSTERS[@]}"; do echo "$c ${PROXY[$c]}"; done >"$LAB_DIR/kube-proxy"
PROXIES=""
for c in "${CLUSTERS[@]}"; do PROXIES+="${PROXIES:+, }${PROXY[$c]} in lab-$c"; done
log "lab up in $(( $(date +%s) - start ))s (LAB_MODE=$MODE, ${#CLUSTERS[@]} clusters, kube-proxy $PROXIES)"
ECHO_B=$(kc b get svc echo -o jsonpath='{.spec.clusterIP}')
ECHO_A=$(kc a get svc echo -o jsonpath='{.spec.clusterIP}')
CLIENT_A=$(kc a get pod -l app=client -o jsonpath='{.items[0].metadata.name}')
CLIENT_B=$(kc b get pod -l app=client -o jsonpath='{.items[0].metadata.name}')
cat <<T

The lab is up ($MODE data plane; kube-proxy $PROXIES). Links:
$(cat "$LAB_DIR/join-$(IFS=; echo "${CLUSTERS[*]}").log" | sed -n '/^CLUSTER/,$p')

Try:
  export KUBECONFIG=$KCS
  bin/kubelinkctl show all$(for c in "${CLUSTERS[@]}"; do printf ' --context kind-lab-%s' "$c"; done)
  kubectl --context kind-lab-a exec $CLIENT_A -- wget -qO- http://$ECHO_B/                  # A → B by ClusterIP
  kubectl --context kind-lab-a exec $CLIENT_A -- wget -qO- http://echo.default.svc.b.kubelink/   # A → B by name
  kubectl --context kind-lab-b exec $CLIENT_B -- wget -qO- http://$ECHO_A/                  # B → A
  kubectl --context kind-lab-a get kubelinks -o wide
  make e2e            # the end-to-end tests against this lab
  make lab-down       # remove everything
T
