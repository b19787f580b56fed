/**
 * Assemble and run the server in standalone mode: store, audit sink, incident log, tools, HTTP.
 * Tests call {@link startStandalone} directly (on port 0); the CLI wraps it with signals.
 */
import { join } from 'node:path';
import { openFileAuditSink } from '../audit/file-sink.js';
import { openFileIncidentLog } from '../audit/incident-file.js';
import type { ServeConfig } from '../config.js';
import type { Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { createHttpApp, listen } from '../mcp/http.js';
import { Tools } from '../mcp/tools.js';
import { StandaloneStore } from '../store/standalone.js';

export interface RunningPolicyGuard {
  url: string;
  store: StandaloneStore;
  metrics: Metrics;
  /** Stop accepting requests, drain, flush the audit log, stop watching. */
  close(): Promise<void>;
}

export async function startStandalone(config: ServeConfig, log: Logger): Promise<RunningPolicyGuard> {
  const configDir = config.configDir!;
  const dataDir = config.dataDir!;
  const store = await StandaloneStore.open({
    configDir,
    dataDir,
    log,
    engine: { defaultDecision: config.defaultDecision, unknownAgentTrust: config.unknownAgentTrust, clusterPolicyNamespace: null },
  });
  const metrics = new Metrics();
  const audit = await openFileAuditSink({ dir: join(dataDir, 'audit'), log: (msg) => log.warn(msg) });
  const incidents = await openFileIncidentLog(join(dataDir, 'incidents.jsonl'));
  metrics.gauge('policyguard_audit_buffered_records', 'Audit records waiting to be written.', () => audit.stats.buffered);
  metrics.gauge('policyguard_audit_dropped_records', 'Audit records lost because the sink could not keep up (should stay 0).', () => audit.stats.dropped);
  metrics.gauge('policyguard_policy_rules', 'Rules in force.', () => store.snapshot().counts.rules);
  metrics.gauge('policyguard_agents', 'GuardAgents in force.', () => store.snapshot().counts.agents);
  metrics.gauge('policyguard_invalid_objects', 'Objects or files not (fully) in force.', () => store.problems().length);

  const tools = new Tools({
    store,
    audit,
    incidents,
    metrics,
    log,
    options: { autoRegister: config.autoRegister, autoRegisterLimit: config.autoRegisterLimit },
  });
  const app = createHttpApp({ tools, store, metrics, log, bodyLimit: config.bodyLimit });
  const http = await listen(app, config.host, config.port);
  log.info('PolicyGuard serving', { mode: 'standalone', url: `${http.url}/mcp`, configDir, dataDir, auth: config.auth });
  if (config.auth === 'none') log.warn('--auth none: callers are not authenticated; use this only on a trusted machine');

  return {
    url: http.url,
    store,
    metrics,
    async close() {
      await http.close();
      await audit.close();
      await store.close();
    },
  };
}
