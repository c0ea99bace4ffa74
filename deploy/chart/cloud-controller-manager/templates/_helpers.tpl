{{/* The chart's name, or nameOverride. */}}
{{- define "ccm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, else the release name if it contains the chart's, else both. */}}
{{- define "ccm.fullname" -}}
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

{{- define "ccm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ccm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ccm.labels" -}}
{{ include "ccm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ccm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ccm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether --cloud-config is passed (some source of configuration is given). */}}
{{- define "ccm.hasCloudConfig" -}}
{{- with .Values.cloudConfig -}}
{{- if or .existingSecret .existingConfigMap .content -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap or Secret the chart renders for cloudConfig.content. */}}
{{- define "ccm.cloudConfigName" -}}
{{- printf "%s-config" (include "ccm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The volume source of the provider configuration. */}}
{{- define "ccm.cloudConfigVolume" -}}
{{- with .Values.cloudConfig -}}
{{- if .existingSecret }}
secret:
  secretName: {{ .existingSecret }}
{{- else if .existingConfigMap }}
configMap:
  name: {{ .existingConfigMap }}
{{- else if .secret }}
secret:
  secretName: {{ include "ccm.cloudConfigName" $ }}
{{- else }}
configMap:
  name: {{ include "ccm.cloudConfigName" $ }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Values that cannot work together fail the render with a message naming them. */}}
{{- define "ccm.validate" -}}
{{- if not .Values.cloudProvider -}}
{{- fail "cloudProvider is required (--cloud-provider: a provider compiled into the image, e.g. fake or aws)" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true (otherwise every replica would run the controllers)" -}}
{{- end -}}
{{- if and .Values.routes.configure .Values.routes.allocateNodeCidrs (not .Values.routes.clusterCidr) -}}
{{- fail "routes.clusterCidr is required when routes.configure and routes.allocateNodeCidrs are true" -}}
{{- end -}}
{{- if not (has .Values.loggingFormat (list "json" "text")) -}}
{{- fail (printf "loggingFormat must be json or text, not %q" .Values.loggingFormat) -}}
{{- end -}}
{{- $managed := list "--cloud-provider" "--cloud-config" "--cluster-name" "--controllers" "--leader-elect" "--leader-elect-resource-name" "--leader-elect-resource-namespace" "--configure-cloud-routes" "--allocate-node-cidrs" "--cluster-cidr" "--bind-address" "--secure-port" "--cert-dir" "--tls-cert-file" "--tls-private-key-file" "--logging-format" -}}
{{- range .Values.extraArgs -}}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" -}}
{{- if has $flag $managed -}}
{{- fail (printf "extraArgs: %s is set by the chart from a value; set that value instead (see values.yaml)" $flag) -}}
{{- end -}}
{{- end -}}
{{- end -}}
