{{/*
Chart name, overridable with nameOverride. Truncated to 63 characters, the
limit for label values and DNS labels.
*/}}
{{- define "remora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: fullnameOverride, or the release name when
it already contains the chart name, or "<release>-<name>".
*/}}
{{- define "remora.fullname" -}}
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

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding). The release
namespace is part of it so two releases of the same name in different
namespaces do not overwrite each other's RBAC.
*/}}
{{- define "remora.clusterName" -}}
{{- printf "%s-%s" (include "remora.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
Chart label value: "<name>-<version>".
*/}}
{{- define "remora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the controller pods. They must never change between
releases: a Deployment's selector is immutable.
*/}}
{{- define "remora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Labels for every object of the chart.
*/}}
{{- define "remora.labels" -}}
helm.sh/chart: {{ include "remora.chart" . }}
{{ include "remora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: remora
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the ServiceAccount the controller runs as.
*/}}
{{- define "remora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "remora.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Controller image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "remora.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
The mesh's root namespace; defaults to the release namespace.
*/}}
{{- define "remora.rootNamespace" -}}
{{- default .Release.Namespace .Values.rootNamespace }}
{{- end }}

{{/*
"host:port" listen address for a port; IPv6 hosts are bracketed.
Usage: include "remora.listenAddr" (list $ .Values.xds.port)
*/}}
{{- define "remora.listenAddr" -}}
{{- $root := index . 0 }}
{{- $host := $root.Values.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int (index . 1)) }}
{{- else }}
{{- printf "%s:%d" $host (int (index . 1)) }}
{{- end }}
{{- end }}

{{/*
The Secret holding the mesh CA.
*/}}
{{- define "remora.meshCaSecret" -}}
{{- .Values.identity.caSecretName | default (printf "%s-mesh-ca" (include "remora.fullname" .)) }}
{{- end }}
