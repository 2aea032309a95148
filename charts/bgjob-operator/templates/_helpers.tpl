{{/* The release's full name, at most 63 characters. */}}
{{- define "bgjob.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bgjob.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bgjob.labels" -}}
{{ include "bgjob.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bgjob.serviceAccountName" -}}
{{- default (include "bgjob.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "bgjob.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* What kopf (the framework) and our informers need: list and watch the three kinds. */}}
{{- define "bgjob.frameworkRules" -}}
- apiGroups: [bgjob.dev]
  resources: [backgroundjobs]
  verbs: [list, watch]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [list, watch]
{{- end -}}

{{/* What the operator (the application) needs, and nothing more. */}}
{{- define "bgjob.appRules" -}}
- apiGroups: [bgjob.dev]
  resources: [backgroundjobs]
  verbs: [get]
- apiGroups: [bgjob.dev]
  resources: [backgroundjobs/status]
  verbs: [patch]
- apiGroups: [bgjob.dev]
  resources: [backgroundjobs/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, create, update, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
