{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "policyguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed to the chart name unless it already contains it. */}}
{{- define "policyguard.fullname" -}}
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

{{- define "policyguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "policyguard.labels" -}}
helm.sh/chart: {{ include "policyguard.chart" . }}
{{ include "policyguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: policyguard
{{- end }}

{{- define "policyguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "policyguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "policyguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "policyguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "policyguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "policyguard.clusterPolicyNamespace" -}}
{{- default .Release.Namespace .Values.clusterPolicyNamespace }}
{{- end }}

{{/*
Watched namespaces as a comma-separated list; empty means all namespaces. A non-empty list
always includes the release namespace (MCP writes land there, so the server must see them)
and the cluster policy namespace.
*/}}
{{- define "policyguard.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- $all := concat .Values.watchNamespaces (list .Release.Namespace (include "policyguard.clusterPolicyNamespace" .)) }}
{{- $all | uniq | sortAlpha | join "," }}
{{- end }}
{{- end }}

{{/* The in-cluster URL of the MCP endpoint. */}}
{{- define "policyguard.mcpUrl" -}}
{{- printf "%s://%s.%s:%v/mcp" (include "policyguard.scheme" .) (include "policyguard.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{/* http, or https when tls.secretName is set. */}}
{{- define "policyguard.scheme" -}}
{{- if .Values.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* A probe from values, switched to HTTPS when the server serves TLS. */}}
{{- define "policyguard.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .root.Values.tls.secretName $probe.httpGet }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Host headers accepted on /mcp: config.allowedHosts, or every name of the Service plus loopback
(kubectl port-forward connects as 127.0.0.1/localhost).
*/}}
{{- define "policyguard.allowedHosts" -}}
{{- if .Values.config.allowedHosts }}
{{- join "," .Values.config.allowedHosts }}
{{- else }}
{{- $svc := include "policyguard.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- join "," (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost" "127.0.0.1" "[::1]") }}
{{- end }}
{{- end }}

{{/* True when the pods need a data volume (the file audit sink). */}}
{{- define "policyguard.fileSink" -}}
{{- if eq .Values.audit.sink "file" }}true{{ end }}
{{- end }}

{{/* The Secret holding the audit HMAC key: audit.key.existingSecret, the chart's own, or "" for none. */}}
{{- define "policyguard.auditKeySecret" -}}
{{- if .Values.audit.key.existingSecret }}
{{- .Values.audit.key.existingSecret }}
{{- else if .Values.audit.key.create }}
{{- printf "%s-audit-key" (include "policyguard.fullname" .) }}
{{- end }}
{{- end }}

{{/* A duration of the server's form (500ms, 15s, 2m) in milliseconds. */}}
{{- define "policyguard.durationMs" -}}
{{- $n := regexFind "^[0-9]+" . | int }}
{{- if hasSuffix "ms" . }}{{ $n }}{{ else if hasSuffix "s" . }}{{ mul $n 1000 }}{{ else }}{{ mul $n 60000 }}{{ end }}
{{- end }}

{{/* Combinations the schema cannot express; each fails the install with what to change. */}}
{{- define "policyguard.validate" -}}
{{- $p := .Values.audit.persistence }}
{{- $le := .Values.leaderElection }}
{{- if and (not $le.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "leaderElection.enabled=false with replicaCount=%d: every replica would write status, registrations and suspensions. Keep leader election on, or set replicaCount=1." (int .Values.replicaCount)) }}
{{- end }}
{{- if and $le.enabled (ge (include "policyguard.durationMs" $le.renewDeadline | int) (include "policyguard.durationMs" $le.leaseDuration | int)) }}
{{- fail (printf "leaderElection.renewDeadline (%s) must be shorter than leaderElection.leaseDuration (%s)" $le.renewDeadline $le.leaseDuration) }}
{{- end }}
{{- if and .Values.admission.enabled (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "admission.enabled=true needs Kubernetes >= 1.30 (ValidatingAdmissionPolicy, admissionregistration.k8s.io/v1); this cluster is %s. Upgrade, or set admission.enabled=false and accept that whoever may create GuardAgents may grant trustLevel admin (docs/deploy.md, \"Trust levels\")" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.shutdownDelaySeconds) 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdownDelaySeconds (%d) + 5: after the preStop delay the server still drains requests, flushes the audit log and writes its last anchor, and is killed when the grace period ends" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownDelaySeconds)) }}
{{- end }}
{{- $kagent := .Values.kagent.remoteMCPServer }}
{{- if and $kagent.enabled (ne .Values.config.auth "none") (not $kagent.headersFrom) }}
{{- fail (printf "kagent.remoteMCPServer.enabled=true with config.auth=%s: kagent would call without a token and get 401 on every call. Set kagent.remoteMCPServer.headersFrom to a Secret holding its Authorization header (docs/deploy.md, \"kagent\")" .Values.config.auth) }}
{{- end }}
{{- if and (include "policyguard.fileSink" .) $p.enabled (gt (int .Values.replicaCount) 1) (not $p.existingClaim) (not (has "ReadWriteMany" $p.accessModes)) }}
{{- fail (printf "audit.sink=file with replicaCount=%d: the pods share one PersistentVolumeClaim, so audit.persistence.accessModes must include ReadWriteMany (or set audit.persistence.existingClaim, or replicaCount=1, or audit.sink=configmap)" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
