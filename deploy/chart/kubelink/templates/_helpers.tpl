{{/*
Labels of every object. Called with a dict: ctx (the root context) and name
(the component, e.g. kubelink-broker; "kubelink" for what all share).
*/}}
{{- define "kubelink.labels" -}}
{{ include "kubelink.selectorLabels" . }}
app.kubernetes.io/instance: {{ .ctx.Release.Name | quote }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service | quote }}
app.kubernetes.io/part-of: kubelink
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
{{- end }}

{{/*
Selector labels: the component name alone, as the manifests before the chart
selected by. A Deployment's selector cannot change, and the e2e tests and the
lab's scripts find the pods by app.kubernetes.io/name.
*/}}
{{- define "kubelink.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/*
An image reference: <image.registry>/<repository>:<tag>, or
<repository>:<tag> without a registry. The tag is image.tag, else the
chart's appVersion, and never "latest". Called with a dict: ctx and
repository.
*/}}
{{- define "kubelink.image" -}}
{{- $tag := toString (.ctx.Values.image.tag | default .ctx.Chart.AppVersion) -}}
{{- if eq (lower $tag) "latest" -}}
{{- fail "image.tag must not be \"latest\": kubelink images are versioned and every node must run the same build; set image.tag to a version (or leave it empty for the chart's appVersion)" -}}
{{- end -}}
{{- $repo := required "images.<component> must name an image repository (e.g. kubelink/broker)" .repository -}}
{{- with .ctx.Values.image.registry -}}{{ trimSuffix "/" . }}/{{- end -}}
{{ $repo }}:{{ $tag }}
{{- end }}

{{/*
Restarts the pods that read the ConfigMap kubelink-cluster (envFrom, read
only at start) when an upgrade changes it.
*/}}
{{- define "kubelink.configChecksum" -}}
checksum/kubelink-cluster: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
kubelink.oneOf: fails unless value is one of allowed. Called with a list:
the value's name, the value, the allowed choices.
*/}}
{{- define "kubelink.oneOf" -}}
{{- $name := index . 0 -}}{{- $value := index . 1 -}}{{- $allowed := index . 2 -}}
{{- if not (has $value $allowed) -}}
{{- fail (printf "%s=%v is not valid: choose one of %s" $name $value (join ", " $allowed)) -}}
{{- end -}}
{{- end }}

{{/*
Checks the values before anything is rendered (templates/validate.yaml), so
that a wrong value fails the install with a message instead of crash-looping
pods.
*/}}
{{- define "kubelink.validate" -}}
{{- $v := .Values -}}
{{- /* A switch given as a string ("false" from --set-string) would count as true. */ -}}
{{- range $name, $val := dict "meshAuthority.enabled" $v.meshAuthority.enabled "meshMember.enabled" $v.meshMember.enabled "autoConnect.enabled" $v.autoConnect.enabled "broker.podDisruptionBudget.enabled" $v.broker.podDisruptionBudget.enabled "metrics.service.enabled" $v.metrics.service.enabled "metrics.serviceMonitor.enabled" $v.metrics.serviceMonitor.enabled -}}
{{- if not (kindIs "bool" $val) -}}
{{- fail (printf "%s must be true or false, not %q: set switches with --set or a values file, not --set-string" $name (toString $val)) -}}
{{- end -}}
{{- end -}}
{{- if not $v.cluster.podCIDR -}}
{{- fail "cluster.podCIDR is required: the cluster's pod network, e.g. 10.110.0.0/16 (the --cluster-cidr of kube-controller-manager, or the IP pool of the CNI; kubectl get nodes -o jsonpath='{.items[*].spec.podCIDRs}' shows the per-node slices of it)" -}}
{{- end -}}
{{- if not $v.cluster.serviceCIDR -}}
{{- fail "cluster.serviceCIDR is required: the cluster's service CIDR, e.g. 100.64.0.0/20 (kubectl get servicecidr, or the --service-cluster-ip-range of kube-apiserver)" -}}
{{- end -}}
{{- if not $v.cluster.nodeCIDR -}}
{{- fail "cluster.nodeCIDR is required: the network of the nodes' InternalIPs, e.g. 172.18.0.0/16 (kubectl get nodes -o wide; usually the VPC or LAN subnet)" -}}
{{- end -}}
{{- if not $v.dns.serviceIP -}}
{{- fail "dns.serviceIP is required: the ClusterIP of the kubelink DNS Service, a free address of cluster.serviceCIDR, by convention its network address + 11 (100.64.0.11 for 100.64.0.0/20)" -}}
{{- end -}}
{{- if not $v.bridge.name -}}
{{- fail "bridge.name is required: the DNS name or IP address under which peers reach this cluster's broker (a node's address with broker.expose.type=NodePort, the gateway node's with HostPort, the load balancer's with LoadBalancer); certwatch issues the certificate for it and does not start without it" -}}
{{- end -}}
{{- include "kubelink.oneOf" (list "dataPlane" $v.dataPlane (list "wireguard" "bridge")) -}}
{{- include "kubelink.oneOf" (list "certificates.mode" $v.certificates.mode (list "self" "csr")) -}}
{{- include "kubelink.oneOf" (list "ipForwarding" $v.ipForwarding (list "broker" "sysctl" "initContainer")) -}}
{{- include "kubelink.oneOf" (list "broker.expose.type" $v.broker.expose.type (list "NodePort" "LoadBalancer" "HostPort")) -}}
{{- if and (eq $v.broker.expose.type "HostPort") (not $v.broker.expose.hostPort.node) -}}
{{- fail "broker.expose.hostPort.node is required with broker.expose.type=HostPort: the node (its kubernetes.io/hostname label) whose address the peers reach, e.g. --set broker.expose.hostPort.node=gw-1 (kubectl get nodes -L kubernetes.io/hostname)" -}}
{{- end -}}
{{- if $v.broker.expose.externalTrafficPolicy -}}
{{- include "kubelink.oneOf" (list "broker.expose.externalTrafficPolicy" $v.broker.expose.externalTrafficPolicy (list "Cluster" "Local")) -}}
{{- end -}}
{{- $mtu := int64 (default 0 $v.broker.mtu) -}}
{{- if and (ne $mtu 0) (or (lt $mtu 1280) (gt $mtu 9000)) -}}
{{- fail (printf "broker.mtu %v: must be 0 (the node interface's MTU less 80) or 1280 to 9000" $v.broker.mtu) -}}
{{- end -}}
{{- if and $v.meshAuthority.enabled $v.meshMember.enabled -}}
{{- fail "meshAuthority.enabled and meshMember.enabled are both true: a cluster is either the mesh authority (it holds the CA) or a member (the authority signs its certificate), never both" -}}
{{- end -}}
{{- if and $v.meshAuthority.enabled (ne $v.certificates.mode "self") -}}
{{- fail (printf "meshAuthority.enabled needs certificates.mode=self (the authority holds the CA), not %s" $v.certificates.mode) -}}
{{- end -}}
{{- if and $v.meshMember.enabled (ne $v.certificates.mode "csr") -}}
{{- fail (printf "meshMember.enabled needs certificates.mode=csr (a member's certificate is signed by the authority), not %s" $v.certificates.mode) -}}
{{- end -}}
{{- if and (eq $v.certificates.mode "csr") (not $v.meshMember.enabled) -}}
{{- fail "certificates.mode=csr needs meshMember.enabled=true: the member's certwatch asks the mesh authority through the kubeconfig in meshMember.authoritySecret" -}}
{{- end -}}
{{- if and $v.meshMember.enabled (not $v.meshMember.authoritySecret) -}}
{{- fail "meshMember.authoritySecret is required with meshMember.enabled: the Secret (key kubeconfig) with the authority's API server and this member's token there" -}}
{{- end -}}
{{- if and (eq $v.certificates.mode "csr") (not $v.bridge.identities) -}}
{{- fail "bridge.identities is required with certificates.mode=csr: this cluster's identities (kubelink://<mesh>/<cluster>, comma separated) that the authority is asked to certify" -}}
{{- end -}}
{{- if and $v.autoConnect.enabled (ne $v.dataPlane "bridge") -}}
{{- fail (printf "autoConnect.enabled needs dataPlane=bridge (the broker proposes links from the bridge handshake), not %s" $v.dataPlane) -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes through the metrics Services" -}}
{{- end -}}
{{- if lt (int $v.broker.replicas) 1 -}}
{{- fail "broker.replicas must be at least 1" -}}
{{- end -}}
{{- end }}
