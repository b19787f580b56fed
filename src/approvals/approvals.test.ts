import { createSecretKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { guardPolicy } from '../api/builders.js';
import type { AuditEntryInput } from '../audit/record.js';
import type { AuditSink } from '../audit/sink.js';
import type { MatchedRule } from '../engine/types.js';
import { createLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import { Approvals, type ApprovalRequest } from './approvals.js';
import { approvalTtlMs, argumentsDigest, argumentsPreview, digestKey, newApproval, phaseOf, PREVIEW_MAX } from './ask.js';
import { MemoryApprovalStore } from './memory-store-fixture.js';

const MATCHED: MatchedRule[] = [{ policy: 'dba-review', namespace: 'team-a', rule: 'drops', action: 'require_approval', enforcement: 'Enforce', message: 'needs a DBA' }];

function setup(opts: { retentionMs?: number; pendingLimit?: number } = {}) {
  let now = new Date('2026-11-29T10:00:00.000Z');
  const store = new MemoryApprovalStore();
  const records: AuditEntryInput[] = [];
  /** While set, the audit log refuses every record with this reason. */
  const log = { down: undefined as string | undefined };
  const audit = { append: (e: AuditEntryInput) => (log.down ? { ok: false, reason: log.down } : (records.push(e), { ok: true })) } as unknown as AuditSink;
  const events: string[] = [];
  /** Error lines the approvals logged, JSON. */
  const errors: string[] = [];
  const metrics = new Metrics();
  const approvals = new Approvals({
    store,
    audit,
    metrics,
    log: createLogger('error', (line) => errors.push(line), 'json'),
    isLeader: () => true,
    event: (a, reason, note) => events.push(`${reason} ${a.metadata.name}: ${note}`),
    options: { defaultTtlMs: 3_600_000, retentionMs: opts.retentionMs ?? 86_400_000, pendingLimit: opts.pendingLimit ?? 20 },
    now: () => now,
  });
  let n = 0;
  const request = (over: Partial<ApprovalRequest> = {}): ApprovalRequest => ({
    ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'drop_table', parameters: { table: 'users', password: 'hunter2' } },
    namespace: 'team-a',
    actionId: `act_${String(++n).padStart(12, '0')}`,
    matched: MATCHED,
    message: 'needs a DBA',
    revision: 'rev-1',
    requestedBy: 'system:serviceaccount:team-a:etl-bot',
    requesters: ['token:etl'],
    ttlMs: 3_600_000,
    ...over,
  });
  return { store, approvals, records, log, events, errors, metrics, request, advance: (ms: number) => (now = new Date(now.getTime() + ms)), now: () => now };
}

describe('Approvals.settle', () => {
  it('asks for a Pending approval naming exactly the call, who asked and who may not decide', async () => {
    const { approvals, request, events } = setup();
    const s = await approvals.settle(request());
    expect(s.outcome).toBe('pending');
    if (s.outcome !== 'pending') return;
    expect(s.created).toBe(true);
    const a = s.approval;
    expect(a.metadata.name).toMatch(/^apr-[0-9a-f]{12}$/);
    expect(a.metadata.namespace).toBe('team-a');
    expect(a.spec).toMatchObject({
      agentId: 'etl-bot',
      actionType: 'tool_call',
      target: 'drop_table',
      argumentsDigest: argumentsDigest({ table: 'users', password: 'hunter2' }, undefined),
      argumentsPreview: '{"password":"[REDACTED]","table":"users"}',
      rules: [{ policy: 'team-a/dba-review', rule: 'drops' }],
      message: 'needs a DBA',
      revision: 'rev-1',
      requestedAt: '2026-11-29T10:00:00.000Z',
      expiresAt: '2026-11-29T11:00:00.000Z',
      requestedBy: 'system:serviceaccount:team-a:etl-bot',
      requesters: ['system:serviceaccount:team-a:etl-bot', 'token:etl'],
    });
    expect(a.status).toEqual({ phase: 'Pending' });
    expect(a.spec.upstream).toBeUndefined();
    expect(events).toEqual([`ApprovalRequested ${a.metadata.name}: Agent 'etl-bot' asks to call 'drop_table': needs a DBA`]);
  });

  it('reuses the pending approval for the same ask, also for asks made while it is being created', async () => {
    const { approvals, request, store } = setup();
    const [a, b] = await Promise.all([approvals.settle(request()), approvals.settle(request())]);
    const c = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'drop_table', parameters: { password: 'hunter2', table: 'users' } } }));
    expect(store.creates).toBe(1);
    const names = [a, b, c].map((s) => (s.outcome === 'pending' ? `${s.approval.metadata.name}:${s.created}` : s.outcome));
    expect(names).toEqual([expect.stringMatching(/:true$/), names[0]!.replace(':true', ':false'), names[0]!.replace(':true', ':false')]);
  });

  it.each(['https://shop.example.com/search?keyword=shoes', 'fetch?author=tolkien&monkey=1', 'https://user@host/path'])('asks for an approval of a target whose names only look like secrets (%s)', async (target) => {
    const { approvals, request } = setup();
    expect(await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target, parameters: {} } }))).toMatchObject({ outcome: 'pending' });
  });

  it.each(['postgres://app:s3cret@db/prod', 'drop_table?token=abc123', 'x;api_key=k'])('asks no approval for a target that holds a secret (%s): approvers would be shown it', async (target) => {
    const { approvals, request, store } = setup();
    const s = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target, parameters: {} } }));
    expect(s).toEqual({ outcome: 'unavailable', reason: expect.stringMatching(/^no approval was requested: the target holds what looks like a password or token/) });
    expect(store.creates).toBe(0);
  });

  it('allows the same call once after approval; the next one asks anew', async () => {
    const { approvals, request, store } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved', 'alice', 'ticket 42');
    const used = await approvals.settle(request({ actionId: 'act_aaaaaaaaaaaa' }));
    expect(used.outcome).toBe('used');
    const stored = store.get('team-a', first.approval.metadata.name)!;
    expect(stored.status).toMatchObject({ phase: 'Used', decidedBy: 'alice', reason: 'ticket 42', actionId: 'act_aaaaaaaaaaaa', usedAt: '2026-11-29T10:00:00.000Z' });
    const again = await approvals.settle(request());
    expect(again.outcome).toBe('pending');
    if (again.outcome === 'pending') expect(again.approval.metadata.name).not.toBe(first.approval.metadata.name);
  });

  it('a call that cannot be made after all (readyToUse says why) is refused and leaves its approval Approved for the retry; it is asked only of an Approved one', async () => {
    const { approvals, request, store, advance } = setup();
    const asked: string[] = [];
    const notReady = async () => (asked.push('asked'), 'Header mismatch: Mcp-Param-Table');
    const first = await approvals.settle(request({ readyToUse: notReady }));
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    expect(asked).toEqual([]); // pending: nothing to use
    store.decide(first.approval, 'Approved', 'alice');
    const refused = await approvals.settle(request({ readyToUse: notReady }));
    expect(refused).toMatchObject({
      outcome: 'refused',
      reason: `Header mismatch: Mcp-Param-Table; approval ${first.approval.metadata.name} is not used, and allows the call once it can be made`,
    });
    expect(asked).toEqual(['asked']);
    expect(store.get('team-a', first.approval.metadata.name)!.status?.phase).toBe('Approved');
    // It may take a while (the gateway lists the upstream): the approval is used as it is then, at that time.
    const used = await approvals.settle(request({ readyToUse: async () => void advance(60_000) }));
    expect(used.outcome).toBe('used');
    expect(store.get('team-a', first.approval.metadata.name)!.status).toMatchObject({ phase: 'Used', usedAt: '2026-11-29T10:01:00.000Z' });
  });

  it('an approval that expires while readyToUse is asked is not used: named, the call is refused; looked up by the ask, a new one is asked for', async () => {
    const { approvals, request, store, advance } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    const name = first.approval.metadata.name;
    store.decide(first.approval, 'Approved', 'alice');
    const named = await approvals.settle(request({ approvalId: name, readyToUse: async () => void advance(3_600_001) }));
    expect(named).toMatchObject({ outcome: 'refused', reason: expect.stringMatching(new RegExp(`^approval ${name} expired at `)) });
    const byAsk = await approvals.settle(request({ readyToUse: async () => void advance(1) }));
    expect(byAsk).toMatchObject({ outcome: 'pending', created: true });
    expect(store.get('team-a', name)!.status?.phase).toBe('Approved'); // never Used (the sweep marks it Expired)
  });

  it('an approval covers the rules it was given for: a rule asking since (a stricter one added) needs a new approval', async () => {
    const { approvals, request, store } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved', 'alice');
    const stricter: MatchedRule[] = [...MATCHED, { policy: 'security', namespace: 'team-a', rule: 'prod-drops', action: 'require_approval', enforcement: 'Enforce' }];
    const named = await approvals.settle(request({ matched: stricter, approvalId: first.approval.metadata.name }));
    expect(named).toMatchObject({
      outcome: 'refused',
      reason: `approval ${first.approval.metadata.name} does not cover this call: policy 'team-a/security' rule 'prod-drops' asks for approval too, and it was given for 'team-a/dba-review' rule 'drops' only`,
    });
    const byAsk = await approvals.settle(request({ matched: stricter }));
    expect(byAsk.outcome).toBe('pending');
    if (byAsk.outcome === 'pending') expect(byAsk.approval.spec.rules).toEqual([{ policy: 'team-a/dba-review', rule: 'drops' }, { policy: 'team-a/security', rule: 'prod-drops' }]);
    expect(store.get('team-a', first.approval.metadata.name)!.status?.phase).toBe('Approved');
    // A rule that stops asking takes nothing away: the old approval still allows the call the old rules ask about.
    expect((await approvals.settle(request())).outcome).toBe('used');
  });

  it('one approval allows one call even when several decisions race for it', async () => {
    const { approvals, request, store } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved');
    const outcomes = await Promise.all([1, 2, 3, 4].map(() => approvals.settle(request())));
    expect(outcomes.filter((o) => o.outcome === 'used')).toHaveLength(1);
    expect(outcomes.filter((o) => o.outcome === 'pending')).toHaveLength(3);
  });

  it('refuses the call while its approval is denied, and asks anew once the denial has expired', async () => {
    const { approvals, request, store, advance } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Denied', 'bob', 'not in prod');
    const refused = await approvals.settle(request());
    expect(refused).toMatchObject({ outcome: 'refused', reason: `approval ${first.approval.metadata.name} was denied by bob: not in prod (the same call is refused until 2026-11-29T11:00:00.000Z)` });
    advance(3_600_001);
    const later = await approvals.settle(request());
    expect(later.outcome).toBe('pending');
  });

  it('an approval past its expiry allows nothing: named, it is refused; looked up by the ask, a new one is asked for', async () => {
    const { approvals, request, store, advance } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved');
    advance(3_600_000);
    expect(phaseOf(store.get('team-a', first.approval.metadata.name)!, new Date('2026-11-29T11:00:00.000Z'))).toBe('Expired');
    const named = await approvals.settle(request({ approvalId: first.approval.metadata.name }));
    expect(named).toMatchObject({ outcome: 'refused', reason: `approval ${first.approval.metadata.name} expired at 2026-11-29T11:00:00.000Z; call again without approval_id to ask anew` });
    const byAsk = await approvals.settle(request());
    expect(byAsk.outcome).toBe('pending');
    expect(store.get('team-a', first.approval.metadata.name)!.status?.phase).toBe('Approved'); // never used
  });

  it('an approval covers only its own arguments, agent, target and upstream', async () => {
    const { approvals, request, store } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved');
    const id = first.approval.metadata.name;
    const other = { agentId: 'etl-bot', actionType: 'tool_call', target: 'drop_table', parameters: { table: 'payments' } };
    expect(await approvals.settle(request({ ask: other, approvalId: id }))).toMatchObject({ outcome: 'refused', reason: expect.stringContaining(`approval ${id} does not cover this call: its arguments differ`) });
    expect(await approvals.settle(request({ ask: { ...other, parameters: { table: 'users', password: 'hunter2' }, upstream: 'tools/db' }, approvalId: id }))).toMatchObject({
      reason: `approval ${id} does not cover this call: it is for upstream '(none)', not 'tools/db'`,
    });
    expect(await approvals.settle(request({ ask: { ...other, agentId: 'other-bot' }, approvalId: id }))).toMatchObject({ reason: `approval ${id} does not cover this call: it is for agent 'etl-bot', not 'other-bot'` });
    // Looked up by its ask, changed arguments get an approval of their own.
    const changed = await approvals.settle(request({ ask: other }));
    expect(changed.outcome === 'pending' && changed.created).toBe(true);
    expect(store.get('team-a', id)!.status?.phase).toBe('Approved');
  });

  it('refuses an approval_id that does not exist, and an approval that was already used', async () => {
    const { approvals, request, store } = setup();
    expect(await approvals.settle(request({ approvalId: 'apr-000000000000' }))).toMatchObject({ outcome: 'refused', reason: expect.stringContaining('approval apr-000000000000 does not exist in namespace team-a') });
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    store.decide(first.approval, 'Approved');
    await approvals.settle(request({ actionId: 'act_bbbbbbbbbbbb' }));
    expect(await approvals.settle(request({ approvalId: first.approval.metadata.name }))).toMatchObject({ outcome: 'refused', reason: expect.stringContaining('was already used (by act_bbbbbbbbbbbb)') });
  });

  it('an agent has at most --approval-pending-limit approvals waiting: beyond it nothing is stored and the call stays unallowed', async () => {
    const { approvals, request, store } = setup({ pendingLimit: 2 });
    const ask = (table: string, agentId = 'etl-bot') =>
      request({ ask: { agentId, actionType: 'tool_call', target: 'drop_table', parameters: { table } }, requestedBy: `system:serviceaccount:team-a:${agentId}` });
    const [a, b, c] = await Promise.all([approvals.settle(ask('a')), approvals.settle(ask('b')), approvals.settle(ask('c'))]);
    expect([a.outcome, b.outcome]).toEqual(['pending', 'pending']);
    expect(c).toEqual({
      outcome: 'unavailable',
      reason: "no approval was requested: agent 'etl-bot' already has 2 approvals waiting for a person (--approval-pending-limit 2); decide or deny them, or wait until they expire",
    });
    expect(store.creates).toBe(2);
    // The same ask still finds its own; another agent (another caller) has its own allowance; a decision frees a place.
    expect((await approvals.settle(ask('a'))).outcome).toBe('pending');
    expect((await approvals.settle(ask('x', 'other-bot'))).outcome).toBe('pending');
    if (a.outcome === 'pending') store.decide(a.approval, 'Denied');
    expect((await approvals.settle(ask('c'))).outcome).toBe('pending');
  });

  it('a caller has at most --approval-pending-limit approvals waiting across every agent id it uses, counted before any is stored', async () => {
    const { approvals, request, store, metrics } = setup({ pendingLimit: 3 });
    const ask = (agentId: string, requestedBy = 'token:stranger') =>
      request({ ask: { agentId, actionType: 'tool_call', target: 'issue_refund', parameters: { amount: 900 } }, requestedBy, requesters: [] });
    // One burst under ten made-up agent ids: each id is within its own allowance, the caller is not.
    const burst = await Promise.all(Array.from({ length: 10 }, (_, i) => approvals.settle(ask(`flood-${i}`))));
    expect(burst.filter((s) => s.outcome === 'pending')).toHaveLength(3);
    expect(store.creates).toBe(3);
    expect(burst.find((s) => s.outcome === 'unavailable')).toEqual({
      outcome: 'unavailable',
      reason:
        "no approval was requested: caller 'token:stranger' already has 3 approvals waiting for a person, for any agent (--approval-pending-limit 3, per agent and per caller); decide or deny them, or wait until they expire",
    });
    expect(await metrics.exposition()).toMatch(/policyguard_approvals_total\{event="limited"\} 7\n/);
    // Another caller has its own allowance; a decision frees a place.
    expect((await approvals.settle(ask('flood-0', 'token:other'))).outcome).toBe('pending');
    const first = burst.find((s) => s.outcome === 'pending');
    if (first?.outcome === 'pending') store.decide(first.approval, 'Denied');
    expect((await approvals.settle(ask('flood-9'))).outcome).toBe('pending');
  });

  it('a store that cannot create leaves the call unallowed, saying why', async () => {
    const { approvals, request, store } = setup();
    store.failCreate = 'HTTP 404: the server could not find the requested resource';
    expect(await approvals.settle(request())).toEqual({ outcome: 'unavailable', reason: 'no approval could be requested: HTTP 404: the server could not find the requested resource' });
  });
});

describe('Approvals.wait', () => {
  it('returns as soon as a person decides, and on the hold bound otherwise', async () => {
    const { approvals, request, store } = setup();
    const first = await approvals.settle(request());
    if (first.outcome !== 'pending') throw new Error(first.outcome);
    const waiting = approvals.wait(first.approval, 60_000);
    store.decide(first.approval, 'Approved');
    expect(await waiting).toBe('Approved');
    const second = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'drop_table', parameters: {} } }));
    if (second.outcome !== 'pending') throw new Error(second.outcome);
    expect(await approvals.wait(second.approval, 10)).toBe('timeout');
    const denied = approvals.wait(second.approval, 60_000);
    store.decide(second.approval, 'Denied');
    expect(await denied).toBe('Denied');
  });
});

describe('Approvals sweep and lifecycle records', () => {
  it('records decisions once, marks expired approvals Expired and deletes final ones after the retention', async () => {
    const { approvals, request, store, records, events, advance } = setup({ retentionMs: 60_000 });
    const a = await approvals.settle(request());
    const b = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'truncate', parameters: {} } }));
    if (a.outcome !== 'pending' || b.outcome !== 'pending') throw new Error('not pending');
    store.decide(a.approval, 'Denied', 'bob', 'no');
    expect(records.map((r) => r.action.type)).toEqual(['approval_denied']);
    expect(records[0]).toMatchObject({ action_id: null, agent_id: 'etl-bot', caller: 'bob', approval: { ref: `team-a/${a.approval.metadata.name}`, phase: 'Denied', decided_by: 'bob' } });
    advance(3_600_000);
    await approvals.sweep();
    // The denial (final at 10:00) is past the retention; the undecided one expires now.
    expect(store.get('team-a', a.approval.metadata.name)).toBeUndefined();
    expect(store.get('team-a', b.approval.metadata.name)!.status?.phase).toBe('Expired');
    expect(records.map((r) => r.action.type)).toEqual(['approval_denied', 'approval_deleted', 'approval_expired']);
    expect(events.at(-1)).toBe(`ApprovalExpired ${b.approval.metadata.name}: Expired undecided at 2026-11-29T11:00:00.000Z`);
    advance(59_000);
    await approvals.sweep();
    expect(store.list()).toHaveLength(1);
    advance(1_000);
    await approvals.sweep();
    expect(store.list()).toHaveLength(0);
    expect(records.map((r) => r.action.type)).toEqual(['approval_denied', 'approval_deleted', 'approval_expired', 'approval_deleted']);
    expect(records.at(-1)!.approval).toEqual({ ref: `team-a/${b.approval.metadata.name}`, phase: 'Expired' });
  });
});

describe('lifecycle records while the audit log is down', () => {
  it('a decision made while the log refuses records is recorded once it takes them again, in order', async () => {
    const { approvals, request, store, records, log } = setup();
    const a = await approvals.settle(request());
    const b = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'truncate', parameters: {} } }));
    if (a.outcome !== 'pending' || b.outcome !== 'pending') throw new Error('not pending');
    log.down = 'disk full';
    store.decide(a.approval, 'Approved', 'alice', 'ticket 7');
    await approvals.sweep();
    expect(records).toEqual([]);
    log.down = undefined;
    store.decide(b.approval, 'Denied', 'bob', 'no');
    // The held one first, then the new one.
    expect(records.map((r) => [r.action.type, r.caller])).toEqual([
      ['approval_approved', 'alice'],
      ['approval_denied', 'bob'],
    ]);
    expect(records[0]!.action.parameters).toMatchObject({ reason: 'ticket 7', decidedBy: 'alice' });
  });

  it('is retried at each sweep, without waiting for another lifecycle step', async () => {
    const { approvals, request, store, records, log } = setup();
    const a = await approvals.settle(request());
    if (a.outcome !== 'pending') throw new Error('not pending');
    log.down = 'read-only file system';
    store.decide(a.approval, 'Denied', 'bob', 'no');
    log.down = undefined;
    await approvals.sweep();
    expect(records.map((r) => r.action.type)).toEqual(['approval_denied']);
  });

  it('gets a last try at close, and each one still refused is logged by approval and step', async () => {
    const { approvals, request, store, records, log, errors } = setup();
    const a = await approvals.settle(request());
    const b = await approvals.settle(request({ ask: { agentId: 'etl-bot', actionType: 'tool_call', target: 'truncate', parameters: {} } }));
    if (a.outcome !== 'pending' || b.outcome !== 'pending') throw new Error('not pending');
    log.down = 'disk full';
    store.decide(a.approval, 'Approved', 'alice', 'ticket 7');
    store.decide(b.approval, 'Denied', 'bob', 'no');
    errors.length = 0;
    await approvals.close();
    const lost = errors.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lost.map((e) => [e.msg, e.approval, e.event, e.reason])).toEqual([
      ['an approval lifecycle step was never recorded in the audit log', `team-a/${a.approval.metadata.name}`, 'approval_approved', 'disk full'],
      ['an approval lifecycle step was never recorded in the audit log', `team-a/${b.approval.metadata.name}`, 'approval_denied', 'disk full'],
    ]);
    expect(records).toEqual([]);
  });

  it('held records the log takes again by close are appended then, not lost', async () => {
    const { approvals, request, store, records, log, errors } = setup();
    const a = await approvals.settle(request());
    if (a.outcome !== 'pending') throw new Error('not pending');
    log.down = 'disk full';
    store.decide(a.approval, 'Approved', 'alice', 'ticket 7');
    log.down = undefined;
    errors.length = 0;
    await approvals.close();
    expect(records.map((r) => r.action.type)).toEqual(['approval_approved']);
    expect(errors).toEqual([]);
  });
});

describe('lifecycle records after a restart', () => {
  it('an approval first seen already decided (the initial list of a restarted replica) is not recorded again', async () => {
    const { store, records, request } = setup();
    const req = request();
    const decided = newApproval({ ...req, digest: argumentsDigest(req.ask.parameters, undefined), now: new Date('2026-11-29T09:59:00.000Z') });
    await store.create({ ...decided, status: { phase: 'Approved', decidedBy: 'alice', decidedAt: '2026-11-29T09:59:30.000Z' } });
    expect(records).toEqual([]);
  });
});

describe('what an approval covers', () => {
  it('the digest ignores key order and whitespace, and any change of value changes it', () => {
    for (const key of [undefined, digestKey(createSecretKey(Buffer.alloc(32, 7)))]) {
      expect(argumentsDigest({ a: 1, b: { c: [1, 2] } }, key)).toBe(argumentsDigest(JSON.parse('{ "b": {"c":[1,2]}, "a":1 }'), key));
      expect(argumentsDigest({ a: 1 }, key)).not.toBe(argumentsDigest({ a: '1' }, key));
    }
    expect(argumentsDigest({ a: 1 }, undefined)).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('with the audit key the digest is keyed, so reading an approval does not let anyone test guesses of redacted values', () => {
    const args = { amount: 900, password: 'hunter2' };
    const key = digestKey(createSecretKey(Buffer.alloc(32, 7)));
    const digest = argumentsDigest(args, key);
    expect(digest).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    // The reviewer's attack: hash each guess as the preview shows it, compare with the digest.
    const guesses = ['hunter1', 'hunter2', 'hunter3'].map((password) => argumentsDigest({ amount: 900, password }, undefined).replace('sha256:', 'hmac-sha256:'));
    expect(guesses).not.toContain(digest);
    expect(argumentsDigest(args, digestKey(createSecretKey(Buffer.alloc(32, 8))))).not.toBe(digest);
    expect(digestKey(undefined)).toBeUndefined();
  });

  it('the preview writes control and invisible characters as JSON escapes: the same JSON, shown as it is by kubectl', () => {
    const args = { note: 'ok\u200b\u2066', table: 'tmp_\u202eelbat\u202c', typed: '\\u202e' };
    const preview = argumentsPreview(args);
    expect(preview).toBe('{"note":"ok\\u200b\\u2066","table":"tmp_\\u202eelbat\\u202c","typed":"\\\\u202e"}');
    expect(JSON.parse(preview)).toEqual(args);
  });

  it('the preview is redacted and bounded, saying how much was cut', () => {
    const preview = argumentsPreview({ sql: 'x'.repeat(10_000) });
    expect(preview.length).toBeLessThanOrEqual(PREVIEW_MAX);
    expect(preview).toContain('(10010 characters in all; the digest covers every one)');
  });

  it('the validity is the shortest approval.ttl of the matching require_approval rules, else the default', () => {
    const policies = [
      guardPolicy({ name: 'a', namespace: 'team-a' }, { rules: [{ name: 'r', action: 'require_approval', approval: { ttl: '30m' } }, { action: 'require_approval' }] }),
      guardPolicy({ name: 'b', namespace: 'team-a' }, { rules: [{ name: 's', action: 'require_approval', approval: { ttl: '2h' } }] }),
    ];
    const m = (policy: string, rule: string): MatchedRule => ({ policy, namespace: 'team-a', rule, action: 'require_approval', enforcement: 'Enforce' });
    expect(approvalTtlMs(policies, [m('a', 'r'), m('b', 's')], 3_600_000)).toBe(1_800_000);
    expect(approvalTtlMs(policies, [m('b', 's')], 3_600_000)).toBe(7_200_000);
    expect(approvalTtlMs(policies, [m('a', 'rule-1')], 3_600_000)).toBe(3_600_000);
  });
});
