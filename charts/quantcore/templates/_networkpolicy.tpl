{{/* Pieces of NetworkPolicy rules shared by templates/networkpolicies.yaml. */}}

{{/* A podSelector body for one workload role the operator creates: any MarketFeed's pods of
     that component (.w: values.workloads, .component: the label value). */}}
{{- define "quantcore.componentSelector" -}}
matchLabels:
  {{ .w.componentLabel }}: {{ .component }}
matchExpressions:
  - key: {{ .w.feedLabel }}
    operator: Exists
{{- end -}}

{{/* One rule: peers under `key` (from/to; omitted when empty, meaning any) and TCP ports
     (and UDP too when .udp, for DNS). Ports may be numbers or container port names. */}}
{{- define "quantcore.peersAndPorts" -}}
{{- if .peers }}
{{ .key }}:
  {{- toYaml .peers | nindent 2 }}
{{- end }}
ports:
{{- range .ports }}
  - port: {{ . }}
    protocol: TCP
{{- end }}
{{- if .udp }}
{{- range .ports }}
  - port: {{ . }}
    protocol: UDP
{{- end }}
{{- end }}
{{- end -}}

{{/* Egress to a service outside the cluster (the exchange, the object store): public
     addresses (.cidrs less .except, so never private ranges), plus any .peers (an in-cluster
     market-data mirror or S3 API, say). */}}
{{- define "quantcore.publicEgress" -}}
to:
{{- range .cidrs }}
  - ipBlock:
      cidr: {{ . }}
      {{- with $.except }}
      except:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- with .peers }}
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
{{- range .ports }}
  - port: {{ . }}
    protocol: TCP
{{- end }}
{{- end -}}

{{/* Egress to the Kubernetes API server (the root context). Listed peers win; otherwise the
     addresses and ports of the `kubernetes` Service's endpoints, looked up at install, each as
     a single-address block; only where nothing can be looked up (`helm template` offline) any
     destination on apiServer.ports. */}}
{{- define "quantcore.apiServerEgress" -}}
{{- $api := .Values.networkPolicies.apiServer }}
{{- $peers := $api.peers }}
{{- $ports := $api.ports }}
{{- if not $peers }}
{{- $slices := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "" }}
{{- $found := list }}
{{- $foundPorts := list }}
{{- range ($slices.items | default list) }}
{{- if eq (index (.metadata.labels | default dict) "kubernetes.io/service-name" | default "") "kubernetes" }}
{{- $bits := ternary "128" "32" (eq .addressType "IPv6") }}
{{- range .endpoints }}
{{- range .addresses }}
{{- $found = append $found (dict "ipBlock" (dict "cidr" (printf "%s/%s" . $bits))) }}
{{- end }}
{{- end }}
{{- range .ports }}
{{- $foundPorts = append $foundPorts .port }}
{{- end }}
{{- end }}
{{- end }}
{{- if $found }}
{{- $peers = $found | uniq }}
{{- $ports = $foundPorts | uniq }}
{{- end }}
{{- end }}
{{- include "quantcore.peersAndPorts" (dict "key" "to" "peers" $peers "ports" $ports) }}
{{- end -}}

{{/* The operator's pods as a peer from a MarketFeed's namespace (the root context). */}}
{{- define "quantcore.operatorPeer" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ .Release.Namespace }}
podSelector:
  matchLabels:
    {{- include "quantcore.selectorLabels" . | nindent 4 }}
{{- end -}}
