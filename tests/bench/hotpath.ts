/**
 * The hot path in process, no HTTP: what one `validate_action` costs inside the server, and its
 * parts — the decision pipeline (identity, evaluation, limits, audit append, metrics) over the
 * config-samples store and a real file audit sink, the audit record alone, and the metric
 * updates a decision makes — batch-timed like the engine bench (./stats.ts). Baseline: the
 * engine's evaluation of the same requests, the floor under the pipeline. Run before and
 * after a change to see what it costs per decision (docs/performance.md, "Hot path").
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ANONYMOUS } from '../../src/auth/authenticate.js';
import { openAuthorizer } from '../../src/auth/authorize.js';
import { openFileAuditSink } from '../../src/audit/file-sink.js';
import { openFileIncidentLog } from '../../src/audit/incident-file.js';
import { GENESIS_HASH, sealAuditRecord, type AuditEntryInput } from '../../src/audit/record.js';
import { DecisionPipeline, type DecisionInput } from '../../src/decide/pipeline.js';
import { silentLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { StandaloneStore } from '../../src/store/standalone.js';
import { printFigure } from './report.js';
import { measureBestOf } from './stats.js';

const SAMPLES = fileURLToPath(new URL('../../config-samples', import.meta.url));

/** Allowed calls only (a deny also records an incident, which is asynchronous and not the hot path). */
const INPUTS: DecisionInput[] = [
  ['support-bot', 'read_customer', { customer_id: 42 }],
  ['data-processor', 'query_sales', { table: 'orders', limit: 100 }],
  ['support-bot', 'issue_refund', { amount: 120, order: 'o-1' }],
  ['data-processor', 'send_email', { to: 'someone@partner.org', subject: 'report' }],
  ['support-bot', 'get_ticket', { id: 'T-7' }],
].map(([agentId, target, parameters]) => ({ principal: ANONYMOUS, agentId: agentId as string, actionType: 'tool_call', target: target as string, parameters: parameters as Record<string, unknown>, context: '' }));

export async function runHotPathBench(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'policyguard-bench-hot-'));
  const store = await StandaloneStore.open({ configDir: SAMPLES, dataDir: dir, log: silentLogger, engine: { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null } });
  // A long flush interval and a large buffer: the batch writes are not what is measured here.
  const audit = await openFileAuditSink({ dir: join(dir, 'audit'), flushIntervalMs: 50, maxBuffered: 10_000_000, log: () => {} });
  const incidents = await openFileIncidentLog(join(dir, 'incidents.jsonl'), { log: () => {} });
  const metrics = new Metrics();
  const pipeline = new DecisionPipeline({
    store,
    authorizer: openAuthorizer(),
    audit,
    incidents,
    metrics,
    log: silentLogger,
    options: { autoRegister: false, autoRegisterLimit: 0, autoRegisterPerCaller: 0, unknownAgents: 'evaluate' },
  });
  try {
    const us = (ns: number) => ns / 1000;
    const snapshot = store.snapshot();
    const engine = measureBestOf(3, (i: DecisionInput) => snapshot.evaluate({ agentId: i.agentId!, actionType: i.actionType, target: i.target, parameters: i.parameters, context: i.context }), INPUTS, { budgetMs: 500 });
    const decide = measureBestOf(3, (i: DecisionInput) => pipeline.decide(i), INPUTS, { budgetMs: 1000 });
    const entries: AuditEntryInput[] = INPUTS.map((i) => {
      const d = snapshot.evaluate({ agentId: i.agentId!, actionType: i.actionType, target: i.target, parameters: i.parameters, context: i.context });
      return {
        action_id: 'act_000000000000',
        agent_id: i.agentId!,
        caller: 'anonymous',
        action: { type: i.actionType, target: i.target, parameters: i.parameters as Record<string, unknown>, context: '' },
        evaluation: { allowed: d.allowed, decision: d.decision, require_approval: d.require_approval, reason: d.reason, matched: d.matched, audit_findings: d.audit_findings },
        revision: d.revision,
      };
    });
    const record = measureBestOf(3, (e: AuditEntryInput) => sealAuditRecord(e, GENESIS_HASH), entries, { budgetMs: 500 });
    const labels = [{ decision: 'allow' }, { decision: 'deny' }, { decision: 'require_approval' }];
    const counter = measureBestOf(3, (l: Record<string, string>) => metrics.decisions.inc(l), labels, { budgetMs: 300 });
    const histogram = measureBestOf(3, (v: number) => metrics.decisionSeconds.observe(v), [0.00002, 0.00005, 0.0002], { budgetMs: 300 });
    await audit.flush();

    printFigure({ name: 'hotpath.decide.p50', value: us(decide.p50), unit: 'µs', baseline: { label: 'engine', value: us(engine.p50) }, note: 'DecisionPipeline.decide: identity, evaluation, limits, audit append, metrics (allowed calls, config-samples)' });
    printFigure({ name: 'hotpath.decide.p99', value: us(decide.p99), unit: 'µs', baseline: { label: 'engine', value: us(engine.p99) }, note: `best of ${decide.rounds}; batch ${decide.batch}` });
    printFigure({ name: 'hotpath.audit_record.p50', value: us(record.p50), unit: 'µs', baseline: { label: 'decide', value: us(decide.p50) }, note: 'sealAuditRecord: redaction, canonical JSON, sha256, the stored line' });
    printFigure({ name: 'hotpath.metrics.counter_inc', value: counter.p50, unit: 'ns', note: 'policyguard_decisions_total.inc({decision}), p50' });
    printFigure({ name: 'hotpath.metrics.histogram_observe', value: histogram.p50, unit: 'ns', note: 'a latency histogram observe(), p50' });
  } finally {
    await audit.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}
