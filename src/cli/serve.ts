/**
 * Assemble and run the server: a store (standalone folder or Kubernetes), an audit sink, an
 * incident log, the tools and the HTTP edge. Tests call {@link startServer} directly (on port
 * 0); the CLI wraps it with signal handling.
 */
import type { KeyObject } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { GROUP, type GuardAgent } from '../api/schemas.js';
import { Approvals, type ApprovalsDeps } from '../approvals/approvals.js';
import { FileApprovalStore } from '../approvals/file-store.js';
import { KubeApprovalStore } from '../approvals/kube-store.js';
import type { ApprovalStore } from '../approvals/store.js';
import { createAuditIncidentLog } from '../audit/audit-incidents.js';
import { ConfigMapAnchorStore } from '../audit/configmap-anchor.js';
import { openConfigMapAuditSink } from '../audit/configmap-sink.js';
import { openFileAuditSink } from '../audit/file-sink.js';
import type { IncidentLog, IncidentRecord } from '../audit/incident-file.js';
import { openFileIncidentLog } from '../audit/incident-file.js';
import type { AuditSink } from '../audit/sink.js';
import { LOOPBACK_HOSTS, unknownEnvironment, weakenedProtections, type ServeConfig } from '../config.js';
import { CrdCheck } from '../controller/crd-check.js';
import { EventReason, EventRecorder, incidentEvent, type EventTarget } from '../controller/events.js';
import { LeaderElector } from '../controller/leader.js';
import { ReportWriter } from '../controller/reports.js';
import { StatusWriter } from '../controller/status.js';
import type { EngineOptions } from '../engine/types.js';
import type { KubeConfig } from '@kubernetes/client-node';
import { noAuthenticator, tokenFileAuthenticator, tokenReviewAuthenticator, type Authenticator } from '../auth/authenticate.js';
import { identityAuthorizer, openAuthorizer, type Authorizer } from '../auth/authorize.js';
import { readAuditKeyFile } from '../audit/key.js';
import { digestKey } from '../approvals/ask.js';
import { kubernetesCredentials, localCredentials } from '../gateway/credentials.js';
import { Gateway } from '../gateway/gateway.js';
import { sessionKey } from '../gateway/session.js';
import { parseRate, RateLimiter } from '../auth/rate-limit.js';
import { loadKubeConfig, podNamespace } from '../kube/client.js';
import type { Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { createHttpApp, listen } from '../mcp/http.js';
import { Tools } from '../mcp/tools.js';
import { acquireDataDirLock } from '../store/data-dir-lock.js';
import { closeAll } from './shutdown.js';
import { KubernetesStore } from '../store/kubernetes.js';
import { StandaloneStore } from '../store/standalone.js';
import type { PolicyStore } from '../store/store.js';

export interface RunningPolicyGuard {
  url: string;
  store: PolicyStore;
  metrics: Metrics;
  /** Stop accepting requests, drain, flush the audit log, stop watching. */
  close(): Promise<void>;
}

interface Backend {
  store: PolicyStore;
  /** Kubernetes mode: for TokenReview and SubjectAccessReview. */
  kubeConfig?: KubeConfig;
  audit: AuditSink;
  incidents: IncidentLog;
  /** GuardApprovals: the data dir's, or the cluster's. */
  approvalStore: ApprovalStore;
  /** Events about approvals (kubernetes mode). */
  approvalEvent?: ApprovalsDeps['event'];
  /** Extra details for the start-up log line. */
  describe: Record<string, string>;
  close(): Promise<void>;
}

function engineOptions(config: ServeConfig, clusterPolicyNamespace: string | null): EngineOptions {
  return { defaultDecision: config.defaultDecision, unknownAgentTrust: config.unknownAgentTrust, clusterPolicyNamespace };
}

async function standaloneBackend(config: ServeConfig, log: Logger, metrics: Metrics): Promise<Backend> {
  const dataDir = config.dataDir!;
  // Before anything in the data dir is opened: a second server must not touch its audit chain.
  const lock = await acquireDataDirLock({ dataDir, log });
  let store: StandaloneStore | undefined;
  try {
    store = await StandaloneStore.open({ configDir: config.configDir!, dataDir, log, engine: engineOptions(config, null), rescanIntervalMs: config.rescanInterval });
    const audit = await openFileAuditSink({ dir: join(dataDir, 'audit'), failureMode: config.auditFailureMode, keyFile: config.auditKeyFile, anchorIntervalMs: config.auditAnchorInterval, acceptMissingAnchor: config.auditAcceptMissingAnchor, timings: metrics.auditTimings, log: (msg) => log.warn(msg) });
    const incidents = await openFileIncidentLog(join(dataDir, 'incidents.jsonl'), { log: (msg) => log.warn(msg) });
    const approvalStore = await FileApprovalStore.open(dataDir, log);
    const opened = store;
    return {
      store: opened,
      audit,
      incidents,
      approvalStore,
      describe: { mode: 'standalone', configDir: config.configDir!, dataDir },
      // Every step runs, also when records could not be written: the caller reports them, the folder is let go.
      close: () =>
        closeAll(log, [
          ['close the approvals store', () => approvalStore.close()],
          ['flush the audit log', () => audit.close()],
          ['close the store', () => opened.close()],
          ['release the data-dir lock', () => lock.release()],
        ]),
    };
  } catch (err) {
    // A refused start (a bad audit key, a log cut below its anchor) leaves nothing running.
    await store?.close();
    await lock.release();
    throw err;
  }
}

function eventTarget(agent: GuardAgent): EventTarget {
  const { name, namespace, uid } = agent.metadata;
  return { apiVersion: agent.apiVersion, kind: agent.kind, name, namespace: namespace!, ...(uid ? { uid } : {}) };
}

async function kubernetesBackend(config: ServeConfig, log: Logger, metrics: Metrics): Promise<Backend> {
  const kubeConfig = loadKubeConfig(config.kubeconfig);
  const namespace = config.namespace ?? podNamespace() ?? 'policyguard';
  const replica = config.replicaId ?? hostname();
  const elector = config.leaderElection
    ? new LeaderElector({
        kubeConfig,
        namespace,
        name: 'policyguard-leader',
        identity: replica,
        leaseDurationMs: config.leaseDuration,
        renewDeadlineMs: config.renewDeadline,
        retryPeriodMs: config.retryPeriod,
        log,
        onChange: (leading) => leading && statusWriter.sync(),
      })
    : undefined;
  const isLeader = () => elector?.isLeader() ?? true;
  const recorder = new EventRecorder({ kubeConfig, controller: 'policyguard.dev/controller', instance: replica, log });
  metrics.gauge('policyguard_events_folded', 'Event occurrences folded into an aggregate Event (too many distinct notes or too high a rate).', () => recorder.stats.folded);
  metrics.gauge('policyguard_events_dropped', 'Event occurrences never written (rate limit or forgotten series); the audit log still has them.', () => recorder.stats.dropped);
  // The store holds every decision while the installed CRDs are not this version's.
  // GuardUpstream and GuardApproval came in later releases: a cluster may not have them yet
  // (their watches are optional too), but one that does must have this version's.
  const optional = new Set([`guardupstreams.${GROUP}`, `guardapprovals.${GROUP}`]);
  const crdCheck = new CrdCheck({ kubeConfig, log, optional, onChange: () => store.refresh() });
  const store = new KubernetesStore({
    kubeConfig,
    crdProblems: () => crdCheck.problems(),
    engine: engineOptions(config, config.clusterPolicyNamespace ?? namespace),
    log,
    watchNamespaces: config.watchNamespaces,
    writeNamespace: namespace,
    isLeader,
    onCompiled: () => {
      metrics.watchTiming.compiled();
      statusWriter.sync();
    },
    watchObserver: (resource) => metrics.watchTiming.watch(resource),
    onSuspended: (agent, s) => recorder.record(eventTarget(agent), EventReason.AgentSuspended, 'Suspend', `Agent '${agent.spec.agentId ?? agent.metadata.name}' suspended: ${s.reason}`),
  });
  const statusWriter = new StatusWriter({ kubeConfig, store, log, isLeader });
  metrics.gauge('policyguard_status_writes', 'Status updates this replica wrote (only the leader writes).', () => statusWriter.writes);
  metrics.gauge('policyguard_watch_events', 'List/watch activity of the controller: full lists, watch connections, failures, 410 Gone re-lists.', () =>
    Object.entries(store.watchStats()).map(([kind, n]) => [{ kind }, n] as [Record<string, string>, number]),
    ['kind'],
  );
  metrics.gauge(
    'policyguard_watch_last_event_timestamp_seconds',
    'Per resource, when its stalest watch last heard from the API server (a list, an event, a bookmark, or a new watch connection), in Unix seconds; 0 until every watch of it has.',
    () => [...metrics.watchTiming.lastHeard()].map(([resource, ms]) => [{ resource }, ms / 1000] as [Record<string, string>, number]),
    ['resource'],
  );
  const dataDirLock = config.auditSink === 'file' ? await acquireDataDirLock({ dataDir: config.dataDir!, log }) : undefined;
  const audit =
    config.auditSink === 'configmap'
      ? await openConfigMapAuditSink({ kubeConfig, namespace, replica, failureMode: config.auditFailureMode, keyFile: config.auditKeyFile, anchorIntervalMs: config.auditAnchorInterval, acceptMissingAnchor: config.auditAcceptMissingAnchor, timings: metrics.auditTimings, log: (msg) => log.warn(msg) })
      : await openFileAuditSink({
          dir: join(config.dataDir!, 'audit'),
          failureMode: config.auditFailureMode,
          keyFile: config.auditKeyFile,
          // Outside the data volume: whoever can cut the log there cannot also move its anchor.
          anchor: new ConfigMapAnchorStore({ kubeConfig, namespace, replica }),
          anchorIntervalMs: config.auditAnchorInterval,
          acceptMissingAnchor: config.auditAcceptMissingAnchor,
          timings: metrics.auditTimings,
          log: (msg) => log.warn(msg),
        });
  const reports =
    config.reports === 'off'
      ? undefined
      : new ReportWriter({
          kubeConfig,
          store,
          audit,
          log,
          isLeader,
          mode: config.reports,
          windowMs: config.reportsWindow,
          intervalMs: config.reportsInterval,
          // With the file sink the leader reads only its own log (docs/deploy.md, "Policy reports").
          coverage: config.auditSink === 'configmap' ? 'all replicas (ConfigMap audit sink)' : `replica ${replica} only (file audit sink)`,
        });
  if (reports) {
    metrics.gauge('policyguard_report_writes', 'Policy reports this replica applied (only the leader writes).', () => reports.writes);
    metrics.gauge('policyguard_report_write_failures', 'Policy report writes that failed (retried on the next interval).', () => reports.failures);
  }
  // Events expire; the incidents themselves live in the audit log for compliance queries.
  const incidents = createAuditIncidentLog(audit, (i: IncidentRecord) => {
    const agent = i.agent_id ? store.snapshot().agent(i.agent_id)?.source : undefined;
    if (!agent?.metadata.namespace) return; // no GuardAgent to regard (yet): the audit log has it
    const { reason, note } = incidentEvent(i);
    recorder.record(eventTarget(agent), reason, i.type, note);
  });
  const approvalStore = new KubeApprovalStore({ kubeConfig, watchNamespaces: config.watchNamespaces, log });
  await crdCheck.start();
  store.start();
  approvalStore.start();
  elector?.start();
  reports?.start();
  return {
    store,
    kubeConfig,
    audit,
    incidents,
    approvalStore,
    approvalEvent: (a, reason, note) => {
      const { name, namespace, uid } = a.metadata;
      recorder.record({ apiVersion: a.apiVersion, kind: a.kind, name, namespace: namespace!, ...(uid ? { uid } : {}) }, reason, 'Approval', note);
    },
    describe: { mode: 'kubernetes', namespace, replica, auditSink: config.auditSink, watch: config.watchNamespaces.join(',') || 'all namespaces' },
    close: () =>
      closeAll(log, [
        ['stop the CRD check', () => crdCheck.stop()],
        ['stop the status writer', () => statusWriter.stop()],
        ['stop the policy reports', () => reports?.stop()],
        ['give up the Lease', () => elector?.stop()],
        ['send the last Events', () => recorder.close()],
        ['flush the audit log', () => audit.close()],
        ['close the approvals store', () => approvalStore.close()],
        ['close the store', () => store.close()],
        ['release the data-dir lock', () => dataDirLock?.release()],
      ]),
  };
}

async function authenticatorFor(config: ServeConfig, backend: Backend, log: Logger): Promise<Authenticator> {
  switch (config.auth) {
    case 'none':
      return noAuthenticator();
    case 'token':
      return tokenFileAuthenticator(config.tokenFile!, log);
    case 'kubernetes':
      return tokenReviewAuthenticator({
        kubeConfig: backend.kubeConfig!,
        audiences: config.acceptApiServerAudience ? [] : config.tokenAudiences,
        cacheTtlMs: config.authCacheTtl,
        log,
      });
  }
}

/**
 * The inline gateway (src/gateway). Header values for upstreams come from Secrets in a cluster
 * and from files or the environment in standalone mode; session ids are signed with a key
 * derived from the audit key, so every replica that shares it can serve any session.
 */
async function gatewayFor(config: ServeConfig, backend: Backend, tools: Tools, approvals: Approvals, authorizer: Authorizer, auditKey: KeyObject | undefined, metrics: Metrics, log: Logger): Promise<Gateway> {
  const key = sessionKey(auditKey);
  const ttlMs = config.authCacheTtl;
  return new Gateway({
    store: backend.store,
    pipeline: tools.pipeline,
    authorizer,
    audit: backend.audit,
    credentials: backend.kubeConfig ? kubernetesCredentials({ kubeConfig: backend.kubeConfig, ttlMs }) : localCredentials({ env: config.environment, ttlMs }),
    sessionKey: key,
    metrics,
    log,
    options: { denyAs: config.gatewayDenyAs, approvalHoldMs: config.approvalHold, responseLimitBytes: config.gatewayResponseLimit },
    approvals,
  });
}

/** Bound to loopback, only loopback Host headers make sense (DNS rebinding); elsewhere any, unless set. */
function allowedHosts(config: ServeConfig): string[] {
  if (config.allowedHosts) return config.allowedHosts.map((h) => h.toLowerCase());
  return LOOPBACK_HOSTS.has(config.host) ? ['127.0.0.1', 'localhost', '[::1]'] : [];
}

export async function startServer(config: ServeConfig, log: Logger): Promise<RunningPolicyGuard> {
  const metrics = new Metrics();
  const backend = config.standalone ? await standaloneBackend(config, log, metrics) : await kubernetesBackend(config, log, metrics);
  const { store, audit, incidents } = backend;
  metrics.gauge('policyguard_audit_buffered_records', 'Audit records waiting to be written.', () => audit.stats.buffered);
  metrics.gauge('policyguard_audit_dropped_records', 'Audit records lost while their decisions went on (--audit-failure-mode open; should stay 0).', () => audit.stats.dropped);
  metrics.gauge('policyguard_audit_write_failures', 'Writes of audit records to storage that failed since start, each retry counted (should stay 0; in open mode the sign that records wait in memory).', () => audit.stats.failedWrites);
  metrics.gauge('policyguard_audit_writes_failing', 'Writes of audit records to storage that failed in a row, up to now; 0 once one succeeds.', () => audit.stats.writesFailing);
  metrics.gauge('policyguard_audit_refused_records', 'Audit records refused because the log could not take them; their decisions were denied (--audit-failure-mode closed).', () => audit.stats.refused);
  metrics.gauge('policyguard_policy_rules', 'Rules in force.', () => store.snapshot().counts.rules);
  metrics.gauge('policyguard_agents', 'GuardAgents in force.', () => store.snapshot().counts.agents);
  metrics.gauge('policyguard_invalid_objects', 'Objects or files not (fully) in force.', () => store.problems().length);
  metrics.gauge('policyguard_leader', '1 when this replica holds the Lease (always 1 in standalone mode).', () => (store.isLeader() ? 1 : 0));
  metrics.gauge('policyguard_ready', '1 once the first full load of policies and agents is in force (what /readyz answers).', () => (store.notReady() === undefined ? 1 : 0));
  // Loaded only when asked for: without --otel-endpoint no OpenTelemetry code runs (docs/observability.md).
  const droppedSpans = metrics.counter('policyguard_trace_spans_dropped_total', 'Spans lost before reaching --otel-endpoint, by reason: queue_full (the export queue was full), export_failed (the endpoint did not take their batch).', ['reason']);
  const tracer = config.otelEndpoint
    ? (await import('../telemetry/tracing.js')).startTracing({
        endpoint: config.otelEndpoint,
        instance: config.replicaId ?? hostname(),
        sampleRatio: config.otelSampleRatio,
        onDroppedSpans: (count, reason) => droppedSpans.inc({ reason }, count),
        log,
      })
    : undefined;

  const authenticator = await authenticatorFor(config, backend, log);
  metrics.gauge('policyguard_token_reviews', 'TokenReviews sent to the API server since start (failed and repeated ones are cached).', () => authenticator.remoteChecks);
  const authorizer = config.auth === 'none' ? openAuthorizer() : identityAuthorizer({ ...(backend.kubeConfig ? { kubeConfig: backend.kubeConfig } : {}), cacheTtlMs: config.authCacheTtl, log });
  const rate = config.rateLimit === '0' ? undefined : parseRate(config.rateLimit)!;
  const authFailures = config.authFailureLimit === '0' ? undefined : parseRate(config.authFailureLimit)!;
  // Read once more here (the sink read it too): session ids and argument digests use keys derived from it.
  const auditKey = config.auditKeyFile ? await readAuditKeyFile(config.auditKeyFile) : undefined;
  // What the key does besides signing the audit log; in standalone mode there is one replica and one person.
  if (!auditKey && !config.standalone) {
    log.warn('no --audit-key-file: gateway session ids work only on the replica that opened them, and GuardApproval argument digests are plain sha256, so whoever reads an approval can test guesses of its redacted arguments');
  }
  const approvals = new Approvals({
    store: backend.approvalStore,
    digestKey: digestKey(auditKey),
    audit,
    metrics,
    log,
    isLeader: () => store.isLeader(),
    ...(backend.approvalEvent ? { event: backend.approvalEvent } : {}),
    options: { defaultTtlMs: config.approvalTtl, retentionMs: config.approvalRetention, pendingLimit: config.approvalPendingLimit },
  });
  approvals.start();
  const tools = new Tools({
    store,
    authorizer,
    audit,
    incidents,
    metrics,
    log,
    approvals,
    options: {
      autoRegister: config.autoRegister,
      autoRegisterLimit: config.autoRegisterLimit,
      autoRegisterPerCaller: config.autoRegisterPerCaller,
      unknownAgents: config.unknownAgents,
    },
  });
  const app = createHttpApp({
    tools,
    gateway: await gatewayFor(config, backend, tools, approvals, authorizer, auditKey, metrics, log),
    store,
    metrics,
    log,
    authenticator,
    ...(rate ? { rateLimiter: new RateLimiter(rate.requests, rate.windowMs) } : {}),
    ...(authFailures ? { authFailureLimiter: new RateLimiter(authFailures.requests, authFailures.windowMs) } : {}),
    allowedHosts: allowedHosts(config),
    allowedOrigins: config.allowedOrigins.map((o) => o.toLowerCase()),
    bodyLimit: config.bodyLimit,
    ...(tracer ? { tracer } : {}),
    uiApprovals: { store: backend.approvalStore, ...(config.standalone ? { dataDir: config.dataDir! } : {}) },
  });
  const http = await listen(app, { host: config.host, port: config.port, maxConnections: config.maxConnections, ...(config.tlsCert ? { tls: { cert: config.tlsCert, key: config.tlsKey! } } : {}) });
  log.info('PolicyGuard serving', { ...backend.describe, url: `${http.url}/mcp`, auth: config.auth });
  for (const warning of [...weakenedProtections(config), ...unknownEnvironment(config.environment)]) log.warn(warning);

  return {
    url: http.url,
    store,
    metrics,
    close: () =>
      closeAll(log, [
        ['drain the HTTP server', () => http.close()],
        ['stop the authenticator', () => authenticator.close()],
        ['close the approvals', () => approvals.close()],
        ['close the backend', () => backend.close()],
        ['flush the traces', () => tracer?.shutdown()],
      ]),
  };
}
