/**
 * The decision pipeline with real Approvals over in-memory implementations of our own stores
 * and an audit sink whose availability the test switches: what happens to an Approved
 * GuardApproval when the decision that would use it cannot be recorded.
 */
import { describe, expect, it } from 'vitest';
import { guardPolicy } from '../api/builders.js';
import { Approvals } from '../approvals/approvals.js';
import { MemoryApprovalStore } from '../approvals/memory-store-fixture.js';
import type { AuditEntryInput } from '../audit/record.js';
import type { AuditSink } from '../audit/sink.js';
import { ANONYMOUS } from '../auth/authenticate.js';
import { openAuthorizer } from '../auth/authorize.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from '../engine/types.js';
import { silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { DecisionPipeline, type DecisionInput } from './pipeline.js';

function setup() {
  const snapshot = PolicySnapshot.compile({ agents: [], policies: [guardPolicy({ name: 'people-decide' }, { rules: [{ name: 'drops', match: { tools: ['drop_*'] }, action: 'require_approval' }] })] }, DEFAULT_ENGINE_OPTIONS);
  const store = { snapshot: () => snapshot, writeNamespace: undefined, isLeader: () => true } as unknown as PolicyStore;
  /** While set, the audit log refuses every record with this reason. */
  const log = { down: undefined as string | undefined, records: [] as AuditEntryInput[] };
  const audit = {
    available: () => log.down,
    append: (e: AuditEntryInput) => (log.down ? { ok: false, reason: log.down } : (log.records.push(e), { ok: true })),
  } as unknown as AuditSink;
  const approvalStore = new MemoryApprovalStore();
  const metrics = new Metrics();
  const approvals = new Approvals({ store: approvalStore, audit, metrics, log: silentLogger, isLeader: () => true, options: { defaultTtlMs: 3_600_000, retentionMs: 86_400_000, pendingLimit: 20 } });
  const pipeline = new DecisionPipeline({
    store,
    authorizer: openAuthorizer(),
    audit,
    incidents: { record: async (i: unknown) => i } as never,
    metrics,
    log: silentLogger,
    options: { autoRegister: false, autoRegisterLimit: 0, autoRegisterPerCaller: 1, unknownAgents: 'evaluate' },
    approvals,
  });
  const input = (over: Partial<DecisionInput> = {}): DecisionInput => ({ principal: ANONYMOUS, agentId: 'etl', actionType: 'tool_call', target: 'drop_table', parameters: { table: 'users' }, context: '', ...over });
  return { pipeline, approvalStore, log, input };
}

describe('DecisionPipeline and approvals', () => {
  it('an audit log that stops taking records while the call is readied leaves the approval unused, and the call denied saying why', async () => {
    const { pipeline, approvalStore, log, input } = setup();
    const asked = await pipeline.decide(input());
    if (!asked.ok || asked.settlement?.outcome !== 'pending') throw new Error('expected a pending approval');
    approvalStore.decide(asked.settlement.approval, 'Approved', 'alice');
    const name = asked.settlement.approval.metadata.name;

    // The gateway's own check passes, but meanwhile the log has failed.
    const refused = await pipeline.decide(input({ readyToUse: async () => void (log.down = 'disk full') }));
    if (!refused.ok) throw new Error(refused.error);
    expect(refused.decision.decision).toBe('deny');
    expect(refused.settlement).toMatchObject({
      outcome: 'refused',
      reason: `the audit log cannot take the decision's record (disk full); approval ${name} is not used, and allows the call once it can be made`,
    });
    expect(approvalStore.get(undefined, name)!.status?.phase).toBe('Approved');

    log.down = undefined;
    const used = await pipeline.decide(input());
    if (!used.ok) throw new Error(used.error);
    expect(used.decision).toMatchObject({ decision: 'allow', approval_id: name });
    expect(approvalStore.get(undefined, name)!.status?.phase).toBe('Used');
  });
});
