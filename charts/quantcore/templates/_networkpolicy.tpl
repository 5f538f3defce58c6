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

{{/* Egress to the exchange's public addresses, never to private ranges. */}}
{{- define "quantcore.exchangeEgress" -}}
to:
{{- range .cidrs }}
  - ipBlock:
      cidr: {{ . }}
      {{- with $.except }}
      except:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
ports:
{{- range .ports }}
  - port: {{ . }}
    protocol: TCP
{{- end }}
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
