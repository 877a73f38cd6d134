#!/bin/sh
# The kind lab's CNI agent (kindnetd is not available offline). On its node it
#   - writes the CNI config: the ptp plugin with host-local IPAM on the node's
#     pod CIDR (node.spec.podCIDR, allocated by the controller manager), so
#     kubelet finds a network and the node becomes Ready;
#   - routes every other node's pod CIDR via that node's InternalIP;
#   - masquerades pod traffic to the node network (NODE_NET), and nothing
#     else: traffic into the mesh keeps its pod source up to the broker.
# It repeats every INTERVAL seconds and on exit leaves everything in place
# (pods keep their network while the agent restarts).
# Environment: NODE_NAME, CLUSTER_POD_CIDR, NODE_NET, CNI_DIR (host's
# /etc/cni/net.d), INTERVAL (default 5).
set -eu
: "${NODE_NAME:?}" "${CLUSTER_POD_CIDR:?}" "${NODE_NET:?}" "${CNI_DIR:?}"
INTERVAL=${INTERVAL:-5}
conf=$CNI_DIR/10-kubelink-lab.conflist
trap 'exit 0' TERM INT

sync_once() {
  own=$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')
  [ -n "$own" ] || { echo "node $NODE_NAME has no podCIDR yet"; return 1; }
  want=$(printf '{"cniVersion": "0.4.0", "name": "kubelink-lab", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1500,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}' "$own")
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$conf.tmp" && mv "$conf.tmp" "$conf"
    echo "wrote $conf for $own"
  fi
  kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {.spec.podCIDR}{"\n"}{end}' |
    while read -r name ip cidr; do
      [ "$name" = "$NODE_NAME" ] || [ -z "$ip" ] || [ -z "$cidr" ] && continue
      if ! ip route show "$cidr" | grep -q "via $ip "; then
        ip route replace "$cidr" via "$ip" && echo "route $cidr via $ip ($name)"
      fi
    done
  iptables -t nat -C POSTROUTING -s "$CLUSTER_POD_CIDR" -d "$NODE_NET" -j MASQUERADE 2>/dev/null ||
    iptables -t nat -A POSTROUTING -s "$CLUSTER_POD_CIDR" -d "$NODE_NET" -j MASQUERADE
}

while :; do
  sync_once || echo "sync failed; retrying in ${INTERVAL}s"
  sleep "$INTERVAL" &
  wait $! || true
done
