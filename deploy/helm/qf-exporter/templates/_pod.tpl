{{/* The pod template both workloads share (the Deployment and the sharded StatefulSet). */}}
{{- define "qf-exporter.podTemplate" -}}
{{- $secret := include "qf-exporter.credentialsSecretName" . -}}
{{- $shardFromHostname := and .Values.sharding.enabled (not (include "qf-exporter.podIndexLabel" .)) -}}
metadata:
  labels:
    {{- include "qf-exporter.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed configuration or credentials roll the pods.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/credentials: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "qf-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: qf-exporter
      image: {{ include "qf-exporter.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if $shardFromHostname }}
      # The ordinal is the end of the pod's name (no pod-index label before 1.28).
      command: ["/bin/sh", "-c", 'exec qf-exporter "$@" --shard="${HOSTNAME##*-}"', "qf-exporter"]
      {{- end }}
      args:
        - --config.file=/etc/qf-exporter/config/{{ .Values.config.key }}
        - --web.listen-address=:{{ .Values.containerPort }}
        - --log.level={{ .Values.log.level }}
        - --log.format={{ .Values.log.format }}
        {{- if .Values.webConfig.existingSecret }}
        - --web.config.file=/etc/qf-exporter/web/{{ .Values.webConfig.key }}
        {{- end }}
        {{- if .Values.sharding.enabled }}
        {{- if not $shardFromHostname }}
        - --shard=$(SHARD)
        {{- end }}
        - --total-shards={{ .Values.sharding.shards }}
        {{- end }}
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or $secret .Values.extraEnv (and .Values.sharding.enabled (not $shardFromHostname)) }}
      env:
        {{- if and .Values.sharding.enabled (not $shardFromHostname) }}
        - name: SHARD
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- if $secret }}
        - name: QIANFAN_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $secret }}
              key: {{ .Values.credentials.accessKeyKey }}
        - name: QIANFAN_SECRET_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $secret }}
              key: {{ .Values.credentials.secretKeyKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http-metrics
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      livenessProbe:
        {{- include "qf-exporter.probe" (dict "probe" .Values.livenessProbe "root" .) | nindent 8 }}
      readinessProbe:
        {{- include "qf-exporter.probe" (dict "probe" .Values.readinessProbe "root" .) | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/qf-exporter/config
          readOnly: true
        {{- if .Values.webConfig.existingSecret }}
        - name: web-config
          mountPath: /etc/qf-exporter/web
          readOnly: true
        {{- end }}
        # Writable scratch space on a read-only root (inline PEM in the web config
        # passes through a private temporary file).
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "qf-exporter.configMapName" . }}
    {{- with .Values.webConfig.existingSecret }}
    - name: web-config
      secret:
        secretName: {{ . }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
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
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
