{{/* Names, labels and the pieces every workload shares. */}}

{{- define "likeness.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "likeness.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: likeness
{{- end -}}

{{/* Selector of every pod of the release; ctx = root. */}}
{{- define "likeness.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector of one service's pods; dict "root" $ "name" "generation". */}}
{{- define "likeness.componentSelector" -}}
{{ include "likeness.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "likeness.image" -}}
{{- $img := index .root.Values.image .kind -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if $img.digest -}}
{{ printf "%s:%s@%s" $img.repository $tag $img.digest }}
{{- else -}}
{{ printf "%s:%s" $img.repository $tag }}
{{- end -}}
{{- end -}}

{{- define "likeness.storeSecret" -}}
{{- default (printf "%s-store" (include "likeness.fullname" .)) .Values.store.existingSecret -}}
{{- end -}}

{{- define "likeness.serviceAuthSecret" -}}
{{- default (printf "%s-service-auth" (include "likeness.fullname" .)) .Values.serviceAuth.existingSecret -}}
{{- end -}}

{{- define "likeness.databaseSecret" -}}
{{- default (printf "%s-database" (include "likeness.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "likeness.hasDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end -}}
{{- end -}}

{{/* Headless Service of a service: one DNS record per ready pod, for gRPC round_robin. */}}
{{- define "likeness.headless" -}}
{{- printf "%s-%s-headless" (include "likeness.fullname" .root) .name -}}
{{- end -}}

{{/* Checkov skips shared by every workload, each with its reason. */}}
{{- define "likeness.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_35=Settings come only from LIKENESS_* environment variables (pydantic-settings); the store and database secrets are injected through secretKeyRef, never written into the pod spec.
{{- if not .digest }}
checkov.io/skip2: CKV_K8S_43=Images are pinned by an immutable release tag; set image.<kind>.digest to pin by digest as well.
{{- end }}
{{- end -}}
