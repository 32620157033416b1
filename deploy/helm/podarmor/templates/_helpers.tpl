{{/*
Labels every object carries; "component" is webhook or enforcer where one applies.
app.kubernetes.io/name is what deploy/monitoring's ServiceMonitors select on.
*/}}
{{- define "podarmor.labels" -}}
app.kubernetes.io/part-of: podarmor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "podarmor.webhook.selector" -}}
app.kubernetes.io/name: podarmor-webhook
{{- end }}

{{- define "podarmor.enforcer.selector" -}}
app.kubernetes.io/name: podarmor-enforcer
{{- end }}

{{- define "podarmor.webhook.labels" -}}
{{ include "podarmor.webhook.selector" . }}
app.kubernetes.io/component: webhook
{{ include "podarmor.labels" . }}
{{- end }}

{{- define "podarmor.enforcer.labels" -}}
{{ include "podarmor.enforcer.selector" . }}
app.kubernetes.io/component: enforcer
{{ include "podarmor.labels" . }}
{{- end }}

{{/* An image reference: REGISTRY/NAME:TAG, TAG defaulting to the appVersion. */}}
{{- define "podarmor.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end }}

{{/*
Names shared with the binaries' defaults and other manifests; change them only together.
*/}}
{{- define "podarmor.webhookConfigurationName" -}}podarmor{{- end }}
{{- define "podarmor.tlsSecretName" -}}podarmor-webhook-tls{{- end }}
{{- define "podarmor.certManagerSecretName" -}}podarmor-webhook-cert{{- end }}
{{- define "podarmor.leaseName" -}}podarmor-webhook-certs{{- end }}

{{/* True (non-empty) when the webhook manages its own certificates. */}}
{{- define "podarmor.selfManagedTLS" -}}
{{- if eq .Values.webhook.tls.mode "self" }}true{{ end -}}
{{- end }}

{{/*
Annotations of both webhook configurations: cert-manager's CA injector fills caBundle
in certManager mode.
*/}}
{{- define "podarmor.webhookConfigurationAnnotations" -}}
{{- if eq .Values.webhook.tls.mode "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/podarmor-webhook
{{- end }}
{{- end }}

{{/*
Whether to render a monitoring.coreos.com/v1 object of kind (index . 1) under the
setting (index . 2): "auto" when the cluster serves it, true always, false never.
*/}}
{{- define "podarmor.monitoringEnabled" -}}
{{- $root := index . 0 -}}
{{- $setting := index . 2 | toString -}}
{{- if eq $setting "true" }}true
{{- else if and (eq $setting "auto") ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" (index . 1))) }}true
{{- end }}
{{- end }}

{{/* Flags for what $APISERVER and $CLUSTER_CIDRS stand for; name is the flag prefix. */}}
{{- define "podarmor.clusterArgs" -}}
{{- $root := index . 0 -}}
{{- range $root.Values.cluster.apiServerAddresses }}
- --{{ index $ 1 }}={{ . }}
{{- end }}
{{- range $root.Values.cluster.cidrs }}
- --{{ index $ 2 }}={{ . }}
{{- end }}
{{- end }}
