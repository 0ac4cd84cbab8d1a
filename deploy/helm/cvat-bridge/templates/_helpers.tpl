{{/* Names and labels. */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.fullname" -}}
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

{{- define "bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cvat
{{- end -}}

{{/* selectorLabels: pass (dict "ctx" . "component" "api") */}}
{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bridge.secretName" -}}
{{- default (include "bridge.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The Secret and key holding BRIDGE_DATABASE_URL. */}}
{{- define "bridge.databaseSecretName" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "bridge.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "bridge.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
BRIDGE_DATABASE_URL
{{- end -}}
{{- end -}}

{{- define "bridge.postgresqlName" -}}
{{- printf "%s-postgresql" (include "bridge.fullname" .) -}}
{{- end -}}

{{- define "bridge.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "bridge.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* Fail early on settings the bridge itself would refuse, with what to fix. */}}
{{- define "bridge.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "cvat-bridge: set database.url or database.existingSecret, or postgresql.enabled=true: replicas and workers must share one PostgreSQL job store (SQLite cannot be shared between pods)" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "cvat-bridge: postgresql.enabled=true and an external database are both set; choose one" -}}
{{- end -}}
{{- if not (regexMatch "^https?://[^/_:]+(:[0-9]+)?(/.*)?$" .Values.cvat.url) -}}
{{- fail (printf "cvat-bridge: cvat.url=%q needs http:// or https:// and a host without underscores (e.g. http://cvat-backend-service.cvat.svc.cluster.local:8080)" .Values.cvat.url) -}}
{{- end -}}
{{- if not (contains "{name}" .Values.nuclio.functionUrl) -}}
{{- fail "cvat-bridge: nuclio.functionUrl must contain {name}, e.g. http://nuclio-{name}.nuclio.svc.cluster.local:8080" -}}
{{- end -}}
{{- if not (has .Values.worker.autoscaling.kind (list "keda" "hpa")) -}}
{{- fail "cvat-bridge: worker.autoscaling.kind must be keda or hpa" -}}
{{- end -}}
{{- if not (has .Values.worker.autoscaling.keda.trigger (list "prometheus" "postgresql")) -}}
{{- fail "cvat-bridge: worker.autoscaling.keda.trigger must be prometheus or postgresql" -}}
{{- end -}}
{{- if and (not .Values.worker.enabled) (lt (int .Values.api.inProcessWorkers) 1) -}}
{{- fail "cvat-bridge: worker.enabled=false and api.inProcessWorkers=0: nothing would run the jobs; set api.inProcessWorkers" -}}
{{- end -}}
{{- if lt (int .Values.worker.threads) 1 -}}
{{- fail "cvat-bridge: worker.threads must be at least 1" -}}
{{- end -}}
{{- end -}}

{{/* Pod spec pieces shared by the API and the worker. */}}
{{- define "bridge.envFrom" -}}
- configMapRef:
    name: {{ include "bridge.fullname" . }}
- secretRef:
    name: {{ include "bridge.secretName" . }}
{{- end -}}

{{- define "bridge.databaseEnv" -}}
- name: BRIDGE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bridge.databaseSecretName" . }}
      key: {{ include "bridge.databaseSecretKey" . }}
{{- end -}}

{{- define "bridge.volumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "bridge.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* spread: (dict "ctx" . "component" "api") */}}
{{- define "bridge.spread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "bridge.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* A namespaceSelector for a namespace name; none (= the release namespace) when empty. */}}
{{- define "bridge.nsSelector" -}}
{{- if . -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ . }}
{{- end -}}
{{- end -}}
