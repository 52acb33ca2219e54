{{/*
Names, labels and the pieces of the controller's pod shared by the
DaemonSet and the Deployment (templates/controller.yaml).
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "rtmanager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource: <release>-<chart>, or the release name
alone when it already contains the chart's name. Kubernetes names (and
label values) are at most 63 characters.
*/}}
{{- define "rtmanager.fullname" -}}
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

{{- define "rtmanager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the controller's pods; never change them on upgrade. */}}
{{- define "rtmanager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtmanager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "rtmanager.labels" -}}
helm.sh/chart: {{ include "rtmanager.chart" . }}
{{ include "rtmanager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rtmanager
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rtmanager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtmanager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag (tag defaults to appVersion), or repository@digest. */}}
{{- define "rtmanager.image" -}}
{{- $repository := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/* "true" when the pod mounts the node's Docker socket, else "". */}}
{{- define "rtmanager.mountsSocket" -}}
{{- if not .Values.docker.host }}true{{ end }}
{{- end }}

{{/* The DOCKER_HOST the controller uses. */}}
{{- define "rtmanager.dockerHost" -}}
{{- if .Values.docker.host }}
{{- .Values.docker.host }}
{{- else }}
{{- printf "unix://%s" (required "docker.socketPath is required when docker.host is empty" .Values.docker.socketPath) }}
{{- end }}
{{- end }}

{{/*
A comma-separated key=value list (RTM_NODE_LABELS, RTM_CAPACITY) from a
string, kept as it is, or a map, rendered k=v,k2=v2 in key order.
*/}}
{{- define "rtmanager.keyValues" -}}
{{- if kindIs "map" . }}
{{- $parts := list }}
{{- range $key, $value := . }}
{{- $parts = append $parts (printf "%s=%v" $key $value) }}
{{- end }}
{{- join "," $parts }}
{{- else if . }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
A humantime duration of whole seconds, minutes or hours ("90s", "2m",
"1h") in seconds; "" for any other form (the chart then cannot compare it).
*/}}
{{- define "rtmanager.durationSeconds" -}}
{{- $text := toString . }}
{{- if regexMatch "^[0-9]+s$" $text }}
{{- trimSuffix "s" $text }}
{{- else if regexMatch "^[0-9]+m$" $text }}
{{- mul (trimSuffix "m" $text | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $text }}
{{- mul (trimSuffix "h" $text | atoi) 3600 }}
{{- end }}
{{- end }}

{{/*
The pod's securityContext: root for the Docker socket, or the non-root
user with the socket's group when docker.socketGroupId is set; then
.Values.podSecurityContext over it.
*/}}
{{- define "rtmanager.podSecurityContext" -}}
{{- $context := dict "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- $gid := toString .Values.docker.socketGroupId }}
{{- if $gid }}
{{- if not (regexMatch "^[0-9]+$" $gid) }}
{{- fail (printf "docker.socketGroupId must be a numeric group id, not %q" $gid) }}
{{- end }}
{{- $_ := set $context "runAsNonRoot" true }}
{{- $_ := set $context "runAsUser" (int64 .Values.docker.runAsUser) }}
{{- $_ := set $context "runAsGroup" (int64 .Values.docker.runAsGroup) }}
{{- $_ := set $context "fsGroup" (int64 .Values.docker.runAsGroup) }}
{{- $_ := set $context "supplementalGroups" (list (int64 $gid)) }}
{{- else if include "rtmanager.mountsSocket" . }}
{{- /* The image's USER is non-root; the socket is root:docker 0660. */}}
{{- $_ := set $context "runAsUser" 0 }}
{{- $_ := set $context "runAsGroup" 0 }}
{{- end }}
{{- toYaml (mergeOverwrite $context (deepCopy .Values.podSecurityContext)) }}
{{- end }}

{{/* The controller's environment: every variable is one `rtmanager --help` lists. */}}
{{- define "rtmanager.env" -}}
{{- $endpoints := join "," .Values.etcd.endpoints -}}
- name: RTM_ETCD_ENDPOINTS
  value: {{ required "etcd.endpoints is required: the etcd endpoints the controller stores its state in, e.g. --set 'etcd.endpoints={http://etcd.etcd:2379}'" $endpoints | quote }}
- name: RTM_PREFIX
  value: {{ .Values.etcd.prefix | quote }}
- name: RTM_ETCD_TIMEOUT
  value: {{ .Values.etcd.timeout | quote }}
{{- with .Values.etcd.tls }}
{{- if .enabled }}
- name: RTM_ETCD_CA_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) (required "etcd.tls.caKey is required when etcd.tls.enabled" .caKey) | quote }}
{{- if or .certKey .keyKey }}
{{- if not (and .certKey .keyKey) }}
{{- fail "etcd.tls.certKey and etcd.tls.keyKey go together: set both for a client certificate, or neither" }}
{{- end }}
- name: RTM_ETCD_CERT_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .certKey | quote }}
- name: RTM_ETCD_KEY_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.etcd.auth }}
{{- if .enabled }}
{{- $secret := required "etcd.auth.secretName is required when etcd.auth.enabled" .secretName }}
- name: RTM_ETCD_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ .userKey | quote }}
- name: RTM_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ .passwordKey | quote }}
{{- end }}
{{- end }}
- name: DOCKER_HOST
  value: {{ include "rtmanager.dockerHost" . | quote }}
- name: RTM_NODE_NAME
{{- if .Values.controller.nodeName }}
  value: {{ .Values.controller.nodeName | quote }}
{{- else }}
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
- name: RTM_NODE_LABELS
  value: {{ include "rtmanager.keyValues" .Values.controller.nodeLabels | quote }}
- name: RTM_CAPACITY
  value: {{ include "rtmanager.keyValues" .Values.controller.capacity | quote }}
- name: RTM_PORT_RANGE
  value: {{ .Values.controller.portRange | quote }}
- name: RTM_PLACEMENT_STRATEGY
  value: {{ .Values.controller.placementStrategy | quote }}
- name: RTM_NODE_FAILURE_GRACE
  value: {{ .Values.controller.nodeFailureGrace | quote }}
- name: RTM_SELF_FENCE_AFTER
  value: {{ .Values.controller.selfFenceAfter | quote }}
- name: RTM_CONCURRENCY
  value: {{ .Values.controller.concurrency | quote }}
- name: RTM_LEASE_TTL
  value: {{ .Values.controller.leaseTTL | quote }}
- name: RTM_RESYNC
  value: {{ .Values.controller.resync | quote }}
- name: RTM_METRICS_ADDR
  value: {{ printf "%s:%v" (required "metrics.listenHost is required" .Values.metrics.listenHost) .Values.metrics.port | quote }}
- name: RTM_LOG_FORMAT
  value: {{ .Values.controller.logFormat | quote }}
- name: RTM_HISTORY_RETENTION
  value: {{ .Values.controller.historyRetention | quote }}
- name: RTM_GC_GRACE
  value: {{ .Values.controller.gcGrace | quote }}
- name: RTM_RECONCILE_TIMEOUT
  value: {{ .Values.controller.reconcileTimeout | quote }}
- name: RTM_DRAIN_TIMEOUT
  value: {{ .Values.controller.drainTimeout | quote }}
- name: RTM_HOST_PORTS
  value: {{ .Values.controller.hostPorts | quote }}
- name: RTM_HOST_IPS
  value: {{ .Values.controller.hostIps | quote }}
- name: RTM_HISTORY_GRACE
  value: {{ .Values.controller.historyGrace | quote }}
- name: RTM_ADVERTISE_ADDRESS
{{- if .Values.controller.advertiseAddress }}
  value: {{ .Values.controller.advertiseAddress | quote }}
{{- else }}
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
- name: RTM_PROBE_CONCURRENCY
  value: {{ .Values.controller.probeConcurrency | quote }}
- name: RTM_ALLOWED_CAPABILITIES
  value: {{ .Values.controller.allowedCapabilities | quote }}
- name: RTM_PIDS_LIMIT
  value: {{ .Values.controller.pidsLimit | quote }}
- name: RTM_DEFAULT_MEMORY
  value: {{ .Values.controller.defaultMemory | quote }}
- name: RTM_MAX_MEMORY
  value: {{ .Values.controller.maxMemory | quote }}
- name: RTM_DEFAULT_CPUS
  value: {{ .Values.controller.defaultCpus | quote }}
- name: RTM_MAX_CPUS
  value: {{ .Values.controller.maxCpus | quote }}
- name: RTM_LOG_MAX_SIZE
  value: {{ .Values.controller.logMaxSize | quote }}
- name: RTM_LOG_MAX_FILES
  value: {{ .Values.controller.logMaxFiles | quote }}
- name: RTM_ALLOWED_HOST_PATHS
  value: {{ join "," .Values.controller.allowedHostPaths | quote }}
- name: RTM_IMAGE_PULL_TIMEOUT
  value: {{ .Values.controller.imagePullTimeout | quote }}
- name: RTM_IMAGE_CHECK_INTERVAL
  value: {{ .Values.controller.imageCheckInterval | quote }}
{{- with .Values.registryAuth }}
{{- if .secretName }}
- name: RTM_REGISTRY_AUTH_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) (required "registryAuth.key is required with registryAuth.secretName" .key) | quote }}
{{- end }}
{{- end }}
{{- with .Values.controller.network }}
- name: RTM_NETWORK
  value: {{ . | quote }}
{{- end }}
{{- with .Values.controller.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The controller's pod template (spec.template of either kind). */}}
{{- define "rtmanager.podTemplate" -}}
metadata:
  labels:
    {{- include "rtmanager.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "rtmanager.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "rtmanager.podSecurityContext" . | nindent 4 }}
  containers:
    - name: rtmanager
      image: {{ include "rtmanager.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      env:
        {{- include "rtmanager.env" . | nindent 8 }}
      ports:
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: metrics
        {{- with .Values.probes.startup }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        {{- with .Values.probes.liveness }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        {{- with .Values.probes.readiness }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or (include "rtmanager.mountsSocket" .) .Values.etcd.tls.enabled .Values.registryAuth.secretName .Values.extraVolumeMounts }}
      volumeMounts:
        {{- if include "rtmanager.mountsSocket" . }}
        - name: docker-socket
          mountPath: {{ .Values.docker.socketPath }}
        {{- end }}
        {{- if .Values.etcd.tls.enabled }}
        - name: etcd-tls
          mountPath: {{ .Values.etcd.tls.mountPath }}
          readOnly: true
        {{- end }}
        {{- if .Values.registryAuth.secretName }}
        # The directory, not a subPath: a subPath mount never sees Secret updates.
        - name: registry-auth
          mountPath: {{ .Values.registryAuth.mountPath }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
  {{- if or (include "rtmanager.mountsSocket" .) .Values.etcd.tls.enabled .Values.registryAuth.secretName .Values.extraVolumes }}
  volumes:
    {{- if include "rtmanager.mountsSocket" . }}
    - name: docker-socket
      hostPath:
        path: {{ .Values.docker.socketPath }}
        type: Socket
    {{- end }}
    {{- if .Values.etcd.tls.enabled }}
    - name: etcd-tls
      secret:
        secretName: {{ required "etcd.tls.secretName is required when etcd.tls.enabled" .Values.etcd.tls.secretName }}
        # 0440 (octal): readable by the pod's fsGroup when running non-root.
        defaultMode: 288
    {{- end }}
    {{- if .Values.registryAuth.secretName }}
    - name: registry-auth
      secret:
        secretName: {{ .Values.registryAuth.secretName }}
        # 0440 (octal), as above.
        defaultMode: 288
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Checks of combinations that would deploy something broken. */}}
{{- define "rtmanager.validate" -}}
{{- if not (has .Values.kind (list "DaemonSet" "Deployment")) }}
{{- fail (printf "kind must be DaemonSet or Deployment, not %q" (toString .Values.kind)) }}
{{- end }}
{{- if not (has (toString .Values.controller.logFormat) (list "json" "text")) }}
{{- fail (printf "controller.logFormat must be json or text, not %q" (toString .Values.controller.logFormat)) }}
{{- end }}
{{- $drain := include "rtmanager.durationSeconds" .Values.controller.drainTimeout }}
{{- if and $drain (le (int64 .Values.terminationGracePeriodSeconds) (int64 $drain)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed controller.drainTimeout (%s), or Kubernetes kills the controller while it drains" .Values.terminationGracePeriodSeconds (toString .Values.controller.drainTimeout)) }}
{{- end }}
{{- if not (has (toString .Values.controller.placementStrategy) (list "Packed" "Distributed")) }}
{{- fail (printf "controller.placementStrategy must be Packed or Distributed, not %q" (toString .Values.controller.placementStrategy)) }}
{{- end }}
{{- $ttl := include "rtmanager.durationSeconds" .Values.controller.leaseTTL }}
{{- $grace := include "rtmanager.durationSeconds" .Values.controller.nodeFailureGrace }}
{{- $fence := include "rtmanager.durationSeconds" .Values.controller.selfFenceAfter }}
{{- if and $ttl $grace $fence (gt (int64 $fence) 0) }}
{{- if lt (int64 $fence) (int64 $ttl) }}
{{- fail (printf "controller.selfFenceAfter (%s) must be at least controller.leaseTTL (%s), or 0s to turn the self-fence off" (toString .Values.controller.selfFenceAfter) (toString .Values.controller.leaseTTL)) }}
{{- end }}
{{- if ge (add (int64 $fence) 10) (add (int64 $ttl) (int64 $grace)) }}
{{- fail (printf "controller.selfFenceAfter (%s) + 5s (stop bound) + 5s (clock drift margin) must be less than controller.leaseTTL (%s) + controller.nodeFailureGrace (%s), or another node may start a game before the lost one has stopped it" (toString .Values.controller.selfFenceAfter) (toString .Values.controller.leaseTTL) (toString .Values.controller.nodeFailureGrace)) }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes through the Service" }}
{{- end }}
{{- end }}
