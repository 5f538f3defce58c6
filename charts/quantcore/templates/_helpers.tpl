{{/* Names, labels and small shared pieces of the QuantCore chart. */}}

{{- define "quantcore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quantcore.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "quantcore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quantcore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quantcore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "quantcore.labels" -}}
helm.sh/chart: {{ include "quantcore.chart" . }}
{{ include "quantcore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quantcore
{{- end -}}

{{/* Labels for cluster- or namespace-wide objects that are not the operator pod itself. */}}
{{- define "quantcore.commonLabels" -}}
helm.sh/chart: {{ include "quantcore.chart" . }}
app.kubernetes.io/name: {{ include "quantcore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quantcore
{{- end -}}

{{- define "quantcore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quantcore.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: a digest pins exactly what was scanned, else the tag. */}}
{{- define "quantcore.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces that get the workload NetworkPolicies. */}}
{{- define "quantcore.policyNamespaces" -}}
{{- $ns := .Values.networkPolicies.namespaces | default .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson $ns -}}
{{- end -}}

{{- define "quantcore.sparkImage" -}}
{{- if .Values.sparkImage.digest -}}
{{- printf "%s@%s" .Values.sparkImage.repository .Values.sparkImage.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.sparkImage.repository (default .Chart.AppVersion .Values.sparkImage.tag) -}}
{{- end -}}
{{- end -}}
