{{/*
The three components share one Deployment, Service and ServiceMonitor shape; templates range over
"taskflow.components" and pass a context (dict "root" $ "key" <values key>) to these helpers.
*/}}

{{- define "taskflow.components" -}}backend recurrenceWorker notifier{{- end }}
{{- define "taskflow.workers" -}}recurrenceWorker notifier{{- end }}

{{- define "taskflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* <fullname>-<component>, e.g. taskflow-recurrence-worker. */}}
{{- define "taskflow.name" -}}
{{- printf "%s-%s" (include "taskflow.fullname" .root) (kebabcase .key) }}
{{- end }}

{{- define "taskflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ kebabcase .key }}
{{- end }}

{{- define "taskflow.labels" -}}
{{ include "taskflow.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "taskflow.metadata" -}}
name: {{ include "taskflow.name" . }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "taskflow.labels" . | nindent 2 }}
{{- end }}

{{- define "taskflow.image" -}}
{{- $c := index .root.Values .key }}
{{- $tag := $c.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s/%s:%s" .root.Values.image.registry $c.image.repository $tag }}
{{- end }}

{{/* The backend's container port is named http (the API); the workers' is metrics. */}}
{{- define "taskflow.portName" -}}
{{- if eq .key "backend" }}http{{ else }}metrics{{ end }}
{{- end }}

{{/* The Dapr app id of a component, empty when it runs without a sidecar. */}}
{{- define "taskflow.daprAppId" -}}
{{- if .root.Values.dapr.enabled }}
{{- if eq .key "backend" }}{{ .root.Values.dapr.backendAppId }}{{ end }}
{{- if eq .key "notifier" }}{{ .root.Values.dapr.notifierAppId }}{{ end }}
{{- end }}
{{- end }}

{{/* Set when an autoscaler owns the replica count (HPA for the backend, KEDA for workers). */}}
{{- define "taskflow.autoscaled" -}}
{{- if eq .key "backend" }}
{{- if .root.Values.backend.autoscaling.enabled }}true{{ end }}
{{- else if .root.Values.keda.enabled }}true{{ end }}
{{- end }}

{{/* The full name of a worker's topic, with KAFKA_TOPIC_PREFIX as the worker applies it. */}}
{{- define "taskflow.topic" -}}
{{- $c := index .root.Values .key }}
{{- printf "%s%s" .root.Values.kafka.topicPrefix (index .root.Values.kafka.topics $c.topic).name }}
{{- end }}

{{- define "taskflow.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.existingSecret }}
      key: {{ .secretKey }}
{{- end }}

{{- define "taskflow.env" -}}
{{- $c := index .root.Values .key }}
{{- include "taskflow.secretEnv" (dict "root" .root "name" "DATABASE_URL" "secretKey" .root.Values.secretKeys.databaseUrl) }}
{{- if eq .key "backend" }}
{{ include "taskflow.secretEnv" (dict "root" .root "name" "JWT_SECRET" "secretKey" .root.Values.secretKeys.jwtSecret) }}
- name: HTTP_ADDR
  value: {{ printf "0.0.0.0:%d" (int $c.port) | quote }}
- name: EVENT_PUBLISHER
  value: {{ ternary "dapr" $c.eventPublisher .root.Values.dapr.enabled }}
- name: DAPR_HTTP_ENDPOINT
  value: {{ .root.Values.dapr.httpEndpoint | quote }}
- name: DAPR_PUBSUB_NAME
  value: {{ .root.Values.dapr.pubsubName | quote }}
{{- else }}
- name: METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int $c.port) | quote }}
- name: KAFKA_GROUP_ID
  value: {{ $c.consumerGroup | quote }}
{{- end }}
{{- if include "taskflow.daprAppId" . }}
{{- if eq .key "notifier" }}
- name: SUBSCRIBER
  value: {{ .root.Values.dapr.notifierSubscriber | quote }}
- name: DAPR_HTTP_ENDPOINT
  value: {{ .root.Values.dapr.httpEndpoint | quote }}
- name: DAPR_PUBSUB_NAME
  value: {{ .root.Values.dapr.pubsubName | quote }}
{{- end }}
- name: STATE_STORE
  value: {{ .root.Values.dapr.stateStore | quote }}
- name: DAPR_STATE_STORE
  value: {{ .root.Values.dapr.stateStoreName | quote }}
{{- end }}
{{- range $name, $value := $c.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "taskflow.probes" -}}
{{- $port := include "taskflow.portName" . }}
{{- $p := .root.Values.probes }}
startupProbe:
  httpGet: {path: /health, port: {{ $port }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /health, port: {{ $port }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /ready, port: {{ $port }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Pod-level settings shared by the Deployments and the migrations Job. */}}
{{- define "taskflow.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "taskflow.deployment" -}}
{{- $c := index .root.Values .key }}
{{- $appId := include "taskflow.daprAppId" . }}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "taskflow.metadata" . | nindent 2 }}
spec:
  {{- if not (include "taskflow.autoscaled" .) }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "taskflow.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "taskflow.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
        {{- if $appId }}
        dapr.io/enabled: "true"
        dapr.io/app-id: {{ $appId | quote }}
        dapr.io/app-port: {{ $c.port | quote }}
        dapr.io/enable-metrics: "true"
        dapr.io/metrics-port: {{ .root.Values.dapr.metricsPort | quote }}
        dapr.io/enable-app-health-check: "true"
        dapr.io/app-health-check-path: /health
        dapr.io/log-as-json: "true"
        {{- end }}
    spec:
      {{- include "taskflow.podSpecCommon" . | trim | nindent 6 }}
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
        {{- range $topologyKey := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
          topologyKey: {{ $topologyKey }}
          whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "taskflow.selectorLabels" $ | nindent 14 }}
        {{- end }}
      containers:
        - name: {{ kebabcase .key }}
          image: {{ include "taskflow.image" . }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          ports:
            - name: {{ include "taskflow.portName" . }}
              containerPort: {{ $c.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "taskflow.fullname" .root }}
          env:
            {{- include "taskflow.env" . | trim | nindent 12 }}
          {{- include "taskflow.probes" . | trim | nindent 10 }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml .root.Values.securityContext | nindent 12 }}
{{- end }}

{{- define "taskflow.service" -}}
{{- $c := index .root.Values .key }}
apiVersion: v1
kind: Service
metadata:
  {{- include "taskflow.metadata" . | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    {{- include "taskflow.selectorLabels" . | nindent 4 }}
  ports:
    {{- if eq .key "backend" }}
    - name: http
      port: {{ $c.port }}
      targetPort: http
      protocol: TCP
    {{- end }}
    - name: metrics
      port: {{ ternary $c.metricsServicePort $c.port (eq .key "backend") }}
      targetPort: {{ include "taskflow.portName" . }}
      protocol: TCP
{{- end }}
