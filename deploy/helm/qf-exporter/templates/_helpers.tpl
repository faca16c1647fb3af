{{/* The chart's name, as in prometheus-community's charts. */}}
{{- define "qf-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release's, joined with the chart's unless it holds it already. */}}
{{- define "qf-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "qf-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "qf-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "qf-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qf-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qf-exporter.labels" -}}
helm.sh/chart: {{ include "qf-exporter.chart" . }}
{{ include "qf-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "qf-exporter.image" -}}
{{- with .Values.image.registry }}{{ . }}/{{ end }}
{{- .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{- define "qf-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "qf-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the configuration: the user's, or the chart's. */}}
{{- define "qf-exporter.configMapName" -}}
{{- default (printf "%s-config" (include "qf-exporter.fullname" .)) .Values.config.existingConfigMap }}
{{- end }}

{{/* The Secret holding the credentials, or nothing when there are none. */}}
{{- define "qf-exporter.credentialsSecretName" -}}
{{- $c := .Values.credentials }}
{{- if and (not $c.existingSecret) (ne (empty $c.accessKey) (empty $c.secretKey)) }}
{{- fail "credentials: set both accessKey and secretKey, or neither" }}
{{- end }}
{{- if $c.existingSecret }}
{{- $c.existingSecret }}
{{- else if $c.accessKey }}
{{- printf "%s-credentials" (include "qf-exporter.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Whether the pod reads its ordinal from the apps.kubernetes.io/pod-index label (set from
Kubernetes 1.28); older clusters take it from the hostname, <statefulset>-<ordinal>.
*/}}
{{- define "qf-exporter.podIndexLabel" -}}
{{- if semverCompare ">=1.28.0-0" .Capabilities.KubeVersion.Version }}true{{ end }}
{{- end }}

{{/*
A probe from values: HTTPS when the web config serves TLS; with basic auth on every path,
a TCP check unless the probe sends its own Authorization header (kubelet cannot read a
password from a Secret).
*/}}
{{- define "qf-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $web := .root.Values.webConfig }}
{{- if $probe.httpGet }}
{{- if and $web.basicAuth (not $probe.httpGet.httpHeaders) }}
{{- $_ := set $probe "tcpSocket" (dict "port" $probe.httpGet.port) }}
{{- $_ := unset $probe "httpGet" }}
{{- else if $web.tls }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
