{{/* The operator's RBAC rules come from files/rbac.yaml, generated from quantcore.operator.rbac
     (`make chart-rbac`): the operator's own list of what it touches, so nothing more is granted. */}}

{{- define "quantcore.namespacedRules" -}}
{{- (.Files.Get "files/rbac.yaml" | fromYaml).namespaced | toYaml -}}
{{- end -}}

{{- define "quantcore.clusterRules" -}}
{{- (.Files.Get "files/rbac.yaml" | fromYaml).cluster | toYaml -}}
{{- end -}}
