/**
 * The six tools over config-samples, as a server runs them in standalone mode: a folder store, a
 * file audit sink and incident log in `root`, metrics, no authorization checks and no
 * auto-registration (it would change the snapshot between two requests a test compares).
 * For tests that serve the tools without a whole server. Test-only.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openAuthorizer } from '../auth/authorize.js';
import { openFileAuditSink } from '../audit/file-sink.js';
import { openFileIncidentLog } from '../audit/incident-file.js';
import type { AuditSink } from '../audit/sink.js';
import { silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import { StandaloneStore } from '../store/standalone.js';
import { Tools } from './tools.js';

const SAMPLES = new URL('../../config-samples', import.meta.url).pathname;

export interface SampleTools {
  store: StandaloneStore;
  audit: AuditSink;
  metrics: Metrics;
  tools: Tools;
  /** Close the audit sink and the store, and remove `root`. */
  close(): Promise<void>;
}

export async function openSampleTools(root: string): Promise<SampleTools> {
  const store = await StandaloneStore.open({ configDir: SAMPLES, dataDir: join(root, 'data'), log: silentLogger, engine: { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null }, watch: false });
  const audit = await openFileAuditSink({ dir: join(root, 'data', 'audit'), log: () => {} });
  const incidents = await openFileIncidentLog(join(root, 'data', 'incidents.jsonl'), { log: () => {} });
  const metrics = new Metrics();
  const tools = new Tools({ store, authorizer: openAuthorizer(), audit, incidents, metrics, log: silentLogger, options: { autoRegister: false, autoRegisterLimit: 0, autoRegisterPerCaller: 1, unknownAgents: 'evaluate' } });
  return {
    store,
    audit,
    metrics,
    tools,
    async close() {
      await audit.close();
      await store.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
