{{- define "meridian.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meridian.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meridian.control" -}}{{ include "meridian.fullname" . }}-control{{- end -}}
{{- define "meridian.controlHeadless" -}}{{ include "meridian.fullname" . }}-control-peers{{- end -}}

{{/* The DNS suffix of the control pods: <pod>.<this>. */}}
{{- define "meridian.controlDomain" -}}
{{ include "meridian.controlHeadless" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}

{{/* Every control pod's DNS name, comma-separated. */}}
{{- define "meridian.controlHosts" -}}
{{- $name := include "meridian.control" . -}}
{{- $domain := include "meridian.controlDomain" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.control.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s" $name $i $domain) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{- define "meridian.controlSecret" -}}
{{- .Values.control.existingSecret | default (printf "%s-control" (include "meridian.fullname" .)) -}}
{{- end -}}

{{- define "meridian.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "meridian.fullname" .)) -}}
{{- end -}}

{{- define "meridian.joinSecret" -}}
{{- .Values.edges.existingJoinSecret | default (printf "%s-join-tokens" (include "meridian.fullname" .)) -}}
{{- end -}}

{{- define "meridian.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "meridian.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
