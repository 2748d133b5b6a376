{{/* Names, labels and shared pieces of every IIR object. */}}

{{- define "iir.fullname" -}}
{{- if contains "iir" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-iir" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "iir.name" -}}{{ include "iir.fullname" .root }}-{{ .component }}{{- end -}}

{{- define "iir.labels" -}}
app.kubernetes.io/name: iir-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: iir
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "iir.selector" -}}
app.kubernetes.io/name: iir-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- /* An image by digest when image.digests names one for the component (recommended), else by tag. */ -}}
{{- define "iir.image" -}}
{{- $digest := index (.root.Values.image.digests | default dict) .component -}}
{{- if $digest -}}
{{ .root.Values.image.registry }}/iir-{{ .component }}@{{ $digest }}
{{- else -}}
{{ .root.Values.image.registry }}/iir-{{ .component }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "iir.secretName" -}}{{ include "iir.fullname" . }}-secrets{{- end -}}

{{/* Pod-level hardening shared by every component. */}}
{{- define "iir.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "iir.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* Environment every service shares: log format, datastores, tracing. */}}
{{- define "iir.commonEnv" -}}
- {name: IIR_LOG_LEVEL, value: INFO}
{{- if .Values.otel.endpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .Values.otel.endpoint | quote }}}
{{- end }}
{{- end -}}

{{- /* Secrets reach the services as files (IIR_<NAME>_FILE), never as environment variables. */ -}}
{{- define "iir.secretsMount" -}}
- {name: secrets, mountPath: /var/run/secrets/iir, readOnly: true}
{{- end -}}

{{- /* The datastore URLs and the master key, from the chart's Secret or the existing ones named. */ -}}
{{- define "iir.secretsVolume" -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if .redis }}
      - secret:
          name: {{ .root.Values.redis.existingSecret | default (include "iir.secretName" .root) }}
          items: [{key: {{ .root.Values.redis.secretKey }}, path: redis-url}]
      {{- end }}
      {{- if .database }}
      - secret:
          name: {{ .root.Values.database.existingSecret | default (include "iir.secretName" .root) }}
          items: [{key: {{ .root.Values.database.secretKey }}, path: database-url}]
      - secret:
          name: {{ .root.Values.masterKey.existingSecret | default (include "iir.secretName" .root) }}
          items: [{key: {{ .root.Values.masterKey.secretKey }}, path: master-key}]
      {{- end }}
{{- end -}}

{{- define "iir.extraEnv" -}}
{{- range $k, $v := . }}
- {name: {{ $k }}, value: {{ $v | quote }}}
{{- end }}
{{- end -}}

{{- define "iir.grpcAddr" -}}{{ include "iir.name" . }}:{{ .port }}{{- end -}}

{{- define "iir.providerKeysSecret" -}}
{{- if .Values.providers.existingSecret -}}{{ .Values.providers.existingSecret }}{{- else if .Values.providers.apiKeys -}}{{ include "iir.fullname" . }}-provider-keys{{- end -}}
{{- end -}}

{{- /* Scheduling options every workload takes from its values (nodeSelector, tolerations, affinity,
topologySpreadConstraints, priorityClassName). */ -}}
{{- define "iir.podPlacement" -}}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end -}}
