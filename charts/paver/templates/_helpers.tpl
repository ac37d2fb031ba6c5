{{/*
Labels on every object: app.kubernetes.io/name (what manifests/ has always
carried), the standard Helm labels unless helmLabels is false, and
commonLabels.
*/}}
{{- define "paver.labels" -}}
app.kubernetes.io/name: paver
{{- if .Values.helmLabels }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The operator Pods' selector: fixed, so that an install from manifests/ and
one from the chart select the same Pods (a Deployment's selector cannot
change).
*/}}
{{- define "paver.selectorLabels" -}}
app.kubernetes.io/name: paver
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator image: repository:tag, and @digest when pinned. */}}
{{- define "paver.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/* Where the credentials Secret is mounted. */}}
{{- define "paver.credentialsDir" -}}/etc/paver/git{{- end }}
