import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { guardAgent, guardPolicy } from '../api/builders.js';
import { fromSeedRule, SeedRuleSchema } from '../api/seed.js';
import { LABEL_AUTO_REGISTERED, trustRank, type ArgumentCondition, type GuardAgent, type GuardPolicy } from '../api/schemas.js';
import { compilePolicy, type CompiledRule } from './compile.js';
import { anyMatch, foldCase } from './glob.js';
import { Check, encoded, RuleIndex } from './rule-index.js';
import { PolicySnapshot } from './snapshot.js';
import { DEFAULT_ENGINE_OPTIONS, type ActionRequest, type Decision, type EngineOptions } from './types.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const agents: GuardAgent[] = [
  guardAgent({ name: 'low' }, { trustLevel: 'low' }),
  guardAgent({ name: 'medium', labels: { team: 'data' } }, { trustLevel: 'medium' }),
  guardAgent({ name: 'admin' }, { trustLevel: 'admin' }),
  guardAgent({ name: 'frozen' }, { trustLevel: 'high', suspended: true }),
  guardAgent({ name: 'restricted' }, { trustLevel: 'high', allowedTools: ['query_*', 'read_*'], deniedTools: ['read_secrets'] }),
];

const destructive = guardPolicy(
  { name: 'destructive' },
  {
    priority: 200,
    rules: [{ name: 'no-deletes', match: { tools: ['delete_*', 'DROP_*'], trustLevelBelow: 'admin' }, action: 'deny', message: 'Delete operations require admin trust level' }],
  },
);
const approvals = guardPolicy(
  { name: 'approvals' },
  { rules: [{ name: 'deploys', match: { tools: ['deploy_*'], actionTypes: ['tool_call'] }, action: 'require_approval' }] },
);
const reads = guardPolicy({ name: 'reads' }, { priority: 10, rules: [{ match: { tools: ['read_*'] }, action: 'allow', message: 'Reads are fine' }] });
const auditOnly = guardPolicy(
  { name: 'audit-email' },
  { enforcement: 'Audit', rules: [{ name: 'external-email', match: { tools: ['send_email'], arguments: [{ path: 'to', operator: 'Glob', values: ['*@external.com'] }] }, action: 'deny' }] },
);
const disabled = guardPolicy({ name: 'off' }, { enforcement: 'Disabled', rules: [{ action: 'deny' }] });
const dataTeamOnly = guardPolicy(
  { name: 'data-team' },
  { agentSelector: { matchLabels: { team: 'data' } }, rules: [{ name: 'no-export', match: { tools: ['export_*'] }, action: 'deny' }] },
);
const policies = [destructive, approvals, reads, auditOnly, disabled, dataTeamOnly];

function snapshot(opts: Partial<EngineOptions> = {}, a = agents, p = policies) {
  return PolicySnapshot.compile({ agents: a, policies: p }, { ...DEFAULT_ENGINE_OPTIONS, ...opts });
}

const call = (agentId: string, target: string, extra: Partial<ActionRequest> = {}): ActionRequest => ({
  agentId,
  target,
  actionType: 'tool_call',
  parameters: {},
  ...extra,
});

describe('decision semantics (docs/decisions.md), step by step', () => {
  const snap = snapshot();
  it.each([
    // step 1: unknown agents get unknownAgentTrust (low) and are not registered
    ['unknown agent is low trust', call('nobody', 'delete_users'), 'deny', /admin/],
    ['unknown agent may read', call('nobody', 'read_data'), 'allow', /Reads are fine/],
    // step 3: suspended
    ['suspended agent is denied', call('frozen', 'read_data'), 'deny', /frozen.*suspended/],
    // step 4: deniedTools beats allowedTools and allow rules
    ['deniedTools', call('restricted', 'read_secrets'), 'deny', /explicitly denied/],
    // step 5: allowedTools restricts
    ['outside allowedTools', call('restricted', 'send_email'), 'deny', /not in allowed list/],
    ['inside allowedTools', call('restricted', 'query_sales'), 'allow', /default policy/],
    // step 6: deny > require_approval > allow > default
    ['deny rule', call('medium', 'delete_rows'), 'deny', /require admin/],
    ['deny rule does not match admin', call('admin', 'delete_rows'), 'allow', /default policy/],
    ['require_approval', call('admin', 'deploy_prod'), 'require_approval', /requires human approval/],
    ['allow rule', call('low', 'read_data'), 'allow', /Reads are fine/],
    ['default allow', call('low', 'list_things'), 'allow', /default policy/],
    ['selector applies to labelled agent', call('medium', 'export_csv'), 'deny', /no-export/],
    ['selector skips other agents', call('low', 'export_csv'), 'allow', /default policy/],
    ['Disabled policy is ignored', call('low', 'anything'), 'allow', /default policy/],
  ] as const)('%s', (_name, req, decision, reason) => {
    const d = snap.evaluate(req);
    expect(d.decision).toBe(decision);
    expect(d.allowed).toBe(decision === 'allow');
    expect(d.require_approval).toBe(decision === 'require_approval');
    expect(d.reason).toMatch(reason);
    expect(d.revision).toBe(snap.revision);
  });

  it.each([
    ['frozen', 'read_data', 'suspended'],
    ['restricted', 'read_secrets', 'deniedTools'],
    ['restricted', 'send_email', 'allowedTools'],
  ])('an agent-level check (%s, %s → %s) reports no priority: it comes before every policy', (agentId, target, rule) => {
    const d = snap.evaluate(call(agentId, target));
    expect(d.matched).toEqual([{ policy: `agent:${agentId}`, rule, action: 'deny', enforcement: 'Enforce', message: d.reason }]);
    expect(d.matched[0]).not.toHaveProperty('priority');
  });

  it.each([
    [' delete_rows', 'tool_call', 'The target " delete_rows" has whitespace at its start or end'],
    ['delete_rows\t', 'tool_call', 'The target "delete_rows\\t" has whitespace at its start or end'],
    ['\u200bdelete_rows', 'tool_call', 'The target "\u200bdelete_rows" has the invisible or control character U+200B'],
    ['\ufeffread_data', 'tool_call', 'The target "\ufeffread_data" has whitespace at its start or end'],
    ['read\u0000_data', 'tool_call', 'The target "read\\u0000_data" has the invisible or control character U+0000'],
    ['read_\u202edata', 'tool_call', 'The target "read_\u202edata" has the invisible or control character U+202E'],
    ['read_data', 'tool_call ', 'The action type "tool_call " has whitespace at its start or end'],
    // Default-ignorable, though neither control nor format: a combining grapheme joiner, a variation selector.
    ['delete_rows\u034f', 'tool_call', 'The target "delete_rows\u034f" has the invisible or control character U+034F'],
    ['delete\ufe0f_rows', 'tool_call', 'The target "delete\ufe0f_rows" has the invisible or control character U+FE0F'],
  ])('a target or action type a client could strip to another name (%j, %j) is denied, before any rule', (target, actionType, reason) => {
    // read_data is allowed to everyone, and admin may delete: stripped, both would be allowed.
    const req = { ...call('admin', target), actionType };
    const d = snap.evaluate(req);
    expect(d.decision).toBe('deny');
    expect(d.reason).toBe(`${reason}; a client or tool that strips it would run another name than the one judged, so the call is denied`);
    expect(d.matched).toEqual([{ policy: 'agent:admin', rule: 'unclearName', action: 'deny', enforcement: 'Enforce', message: d.reason }]);
    expect(snap.possibleDecisions(req)).toEqual(new Set(['deny']));
  });

  it.each([
    ['ｄｅｌｅｔｅ_rows', 'delete_rows'],
    ['delete＿rows', 'delete_rows'],
    ['ⅾelete_rows', 'delete_rows'],
    ['ᵈelete_rows', 'delete_rows'],
  ])('a target that reads as a denied name in Unicode compatibility form (%j reads as %j) is judged both ways: the stricter, the deny, stands', (target, normal) => {
    // no-deletes denies delete_* below admin trust; nothing denies the names as written.
    const d = snap.evaluate(call('low', target));
    expect(d).toMatchObject({ decision: 'deny', reason: 'Delete operations require admin trust level' });
    expect(d.warnings).toContain(`The target was judged as it reads in Unicode's compatibility form (NFKC), ${JSON.stringify(normal)}, as a client or tool that normalizes it would run it: that reading is the stricter`);
    expect(snap.possibleDecisions(call('low', target))).toContain('deny');
    // As written or read, admin may delete: allowed.
    expect(snap.evaluate(call('admin', target)).decision).toBe('allow');
  });

  it('names that differ from their compatibility form are not denied for it: a decomposed accent, a superscript, fullwidth punctuation', () => {
    for (const target of ['read_re\u0301sume\u0301.pdf', 'read_m²', 'read_報告（第3四半期）']) {
      const d = snap.evaluate(call('low', target));
      expect(d, target).toMatchObject({ decision: 'allow', reason: 'Reads are fine' });
      expect(d.warnings, target).not.toContainEqual(expect.stringMatching(/NFKC/));
    }
  });

  it('a target holding half of a surrogate pair is denied, before any rule', () => {
    const d = snap.evaluate(call('admin', 'read_notes\ud800'));
    expect(d).toMatchObject({ decision: 'deny', reason: 'The target "read_notes\\ud800" holds half of a surrogate pair, which is not a character (strict JSON readers refuse it); the call is denied' });
    expect(snap.evaluate(call('admin', 'read_notes_😀')).matched[0]?.rule).not.toBe('unclearName');
  });

  it('denies exactly the names with whitespace at an end, a control or format character, or half a surrogate pair (its ASCII shortcut included)', () => {
    const strip = /^\s|\s$|[\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
    const reference = { test: (name: string) => strip.test(name) || /\p{Cs}/u.test(name) };
    const unit = fc.oneof(fc.constantFrom(' ', '\t', '\u00a0', '\u200b', '\ufeff', '\u007f', '\u0085', '\u034f', '\u3164', 'a', '_', '~', 'ｄ', 'ﬁ', '\u0301'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
    fc.assert(
      fc.property(fc.string({ unit, minLength: 1, maxLength: 8 }), (target) => {
        const d = snap.evaluate(call('admin', target));
        expect(d.matched[0]?.rule === 'unclearName', JSON.stringify(target)).toBe(reference.test(target));
      }),
      { numRuns: 3000 },
    );
  });

  it('names with spaces inside, or letters of any script, are judged as written', () => {
    expect(snap.evaluate(call('admin', 'read data')).decision).toBe('allow');
    expect(snap.evaluate(call('low', 'read_données')).decision).toBe('allow');
  });

  it('reports the agent as resolved', () => {
    expect(snap.evaluate(call('nobody', 'x')).agent).toEqual({ id: 'nobody', trust_level: 'low', registered: false });
    expect(snap.evaluate(call('nobody', 'x')).warnings[0]).toMatch(/not registered/);
    expect(snap.evaluate(call('admin', 'x')).agent).toEqual({ id: 'admin', trust_level: 'admin', registered: true });
  });

  it('unknownAgentTrust and defaultDecision are options', () => {
    const strict = snapshot({ unknownAgentTrust: 'admin', defaultDecision: 'deny' });
    expect(strict.evaluate(call('nobody', 'delete_rows')).decision).toBe('deny'); // default deny, no allow rule
    expect(strict.evaluate(call('nobody', 'delete_rows')).reason).toMatch(/default decision is deny/);
    expect(strict.evaluate(call('nobody', 'read_x')).decision).toBe('allow');
  });

  it('a deny wins over a higher-priority allow, and matched explains both', () => {
    const allowAll = guardPolicy({ name: 'allow-all' }, { priority: 1000, rules: [{ match: { tools: ['*'] }, action: 'allow' }] });
    const d = snapshot({}, agents, [allowAll, destructive]).evaluate(call('low', 'delete_x'));
    expect(d.decision).toBe('deny');
    expect(d.matched.map((m) => m.policy)).toEqual(['allow-all', 'destructive']);
    expect(d.reason).toBe('Delete operations require admin trust level');
  });

  it('among several denies the highest priority gives the reason', () => {
    const low = guardPolicy({ name: 'a-low' }, { priority: 1, rules: [{ match: { tools: ['delete_*'] }, action: 'deny', message: 'low' }] });
    const high = guardPolicy({ name: 'z-high' }, { priority: 9, rules: [{ match: { tools: ['delete_*'] }, action: 'deny', message: 'high' }] });
    expect(snapshot({}, agents, [low, high]).evaluate(call('low', 'delete_x')).reason).toBe('high');
  });
});

describe('automatic suspension and the resume annotation', () => {
  const since = '2026-11-30T10:00:00.000Z';
  const suspendedWith = (resume: string | undefined) => ({
    ...guardAgent({ name: 'bot', ...(resume ? { annotations: { 'policyguard.dev/resume': resume } } : {}) }, { trustLevel: 'high' }),
    status: { suspension: { since, reason: 'critical incident inc_000000000001: exfil', incidentId: 'inc_000000000001' } },
  });
  const decide = (resume: string | undefined, now: string) =>
    PolicySnapshot.compile({ agents: [suspendedWith(resume) as GuardAgent], policies: [reads] }, DEFAULT_ENGINE_OPTIONS, { now: Date.parse(now) }).evaluate(call('bot', 'read_x'));

  it.each([
    ['no annotation', undefined, '2026-11-30T11:00:00.000Z', 'deny'],
    ['a resume before the suspension', '2026-11-30T09:00:00.000Z', '2026-11-30T11:00:00.000Z', 'deny'],
    ['a resume after it, now past', '2026-11-30T10:30:00.000Z', '2026-11-30T11:00:00.000Z', 'allow'],
    // Written in advance by whoever may annotate the agent, it would void every later suspension.
    ['a resume after it but far ahead of the clock', '2099-01-01T00:00:00.000Z', '2026-11-30T11:00:00.000Z', 'deny'],
    ['a resume after it, ahead by more than the clock skew allowed', '2026-11-30T11:05:00.001Z', '2026-11-30T11:00:00.000Z', 'deny'],
    // A person's clock a little ahead of the server's (the stamp is their "now").
    ['a resume after it, a minute ahead of the clock', '2026-11-30T11:01:00.000Z', '2026-11-30T11:00:00.000Z', 'allow'],
    // Kept a few minutes ahead by a job before the incident: compiled when the suspension is written.
    ['a resume written before it, a few minutes ahead', '2026-11-30T10:04:29.000Z', '2026-11-30T10:00:00.000Z', 'deny'],
  ] as const)('%s: %s', (_what, resume, now, expected) => {
    expect(decide(resume, now).decision).toBe(expected);
  });

  it('says why a resume ahead of the clock ends nothing', () => {
    expect(decide('2099-01-01T00:00:00.000Z', '2026-11-30T11:00:00.000Z').reason).toMatch(
      /suspended since 2026-11-30T10:00:00\.000Z: critical incident inc_000000000001: exfil \(its policyguard\.dev\/resume 2099-01-01T00:00:00\.000Z is ahead of the server's clock, so it ends nothing: write the current time\)/,
    );
  });
});

describe('Audit vs Enforce', () => {
  const snap = snapshot();
  it('an Audit match is a finding, never the decision', () => {
    const d = snap.evaluate(call('low', 'send_email', { parameters: { to: 'Bob@External.com' } }));
    expect(d.decision).toBe('allow');
    expect(d.audit_findings).toEqual([expect.objectContaining({ policy: 'audit-email', rule: 'external-email', enforcement: 'Audit', action: 'deny' })]);
    expect(d.matched).toEqual([]);
    expect(d.warnings.join()).toMatch(/Audit-mode policy 'audit-email'/);
  });
  it('no finding when the Audit rule does not match', () => {
    expect(snap.evaluate(call('low', 'send_email', { parameters: { to: 'me@internal.com' } })).audit_findings).toEqual([]);
  });
  it('findings are reported even when an agent check decides', () => {
    const d = snap.evaluate(call('frozen', 'send_email', { parameters: { to: 'x@external.com' } }));
    expect(d.decision).toBe('deny');
    expect(d.audit_findings).toHaveLength(1);
  });
});

describe('argument operators', () => {
  const withArg = (operator: string, values: string[] | undefined, path = 'table') =>
    snapshot({}, agents, [
      guardPolicy({ name: 'p' }, { rules: [{ match: { arguments: [{ path, operator: operator as 'In', ...(values ? { values } : {}) }] }, action: 'deny' }] }),
    ]);
  it.each([
    ['Equals', ['users'], { table: 'users' }, true],
    ['Equals', ['users'], { table: 'orders' }, false],
    ['Equals', ['5'], { table: 5 }, true],
    ['NotEquals', ['users'], { table: 'orders' }, true],
    ['NotEquals', ['users'], {}, true],
    ['In', ['users', 'payments'], { table: 'payments' }, true],
    ['In', ['users'], { table: 'orders' }, false],
    ['NotIn', ['users'], { table: 'orders' }, true],
    ['NotIn', ['users'], { table: 'users' }, false],
    ['Glob', ['prod_*'], { table: 'PROD_users' }, true],
    ['Glob', ['prod_*'], { table: 'dev_users' }, false],
    ['Exists', undefined, { table: null }, true],
    ['Exists', undefined, {}, false],
    ['DoesNotExist', undefined, {}, true],
    ['GreaterThan', ['100'], { table: 101 }, true],
    ['GreaterThan', ['100'], { table: '100' }, false],
    ['GreaterThan', ['100'], { table: '101' }, true],
    ['GreaterThan', ['100'], { table: ' 101 ' }, true],
    ['GreaterThan', ['100'], { table: '1e3' }, true],
    ['GreaterThan', ['100'], {}, false],
    ['LessThan', ['2.5'], { table: '1' }, true],
    ['LessThan', ['2.5'], { table: 3 }, false],
  ] as const)('%s %j on %j → %s', (op, values, parameters, denies) => {
    const d = withArg(op, values as string[] | undefined).evaluate(call('low', 'x', { parameters }));
    expect(d.decision).toBe(denies ? 'deny' : 'allow');
  });
  it('follows dot paths through own properties only', () => {
    const snap = withArg('Equals', ['1'], 'options.limit');
    expect(snap.evaluate(call('low', 'x', { parameters: { options: { limit: 1 } } })).decision).toBe('deny');
    expect(snap.evaluate(call('low', 'x', { parameters: { options: { other: 1 } } })).decision).toBe('allow');
    const indexed = withArg('Equals', ['true'], 'options.1.force');
    expect(indexed.evaluate(call('low', 'x', { parameters: { options: [{}, { force: true }] } })).decision).toBe('deny');
    expect(indexed.evaluate(call('low', 'x', { parameters: { options: [{}] } })).decision).toBe('allow'); // absent
    const proto = withArg('Exists', undefined, 'constructor.name');
    expect(proto.evaluate(call('low', 'x', { parameters: {} })).decision).toBe('allow');
  });
});

/** How a near match's reason says it (src/engine/arguments.ts). */
const LOOSELY = 'as a tool may read it (ignoring case, Unicode form, control and invisible characters, spaces at the ends, what follows a NUL, or how a number is written) but not as written';

describe('conditions that cannot be evaluated (docs/decisions.md)', () => {
  const refunds = (action: 'deny' | 'require_approval' | 'allow', conditions: ArgumentCondition[], enforcement: 'Enforce' | 'Audit' = 'Enforce') =>
    snapshot({ defaultDecision: action === 'allow' ? 'deny' : 'allow' }, agents, [
      guardPolicy({ name: 'refunds' }, { enforcement, rules: [{ name: 'big-refunds', match: { tools: ['refund'], arguments: conditions }, action }] }),
    ]);
  const over500: ArgumentCondition[] = [{ path: 'amount', operator: 'GreaterThan', values: ['500'] }];
  const refund = (parameters: Record<string, unknown>) => call('admin', 'refund', { parameters });
  const applies = 'so this require_approval rule applies';

  it.each([
    [{ amount: 600 }, 'require_approval', undefined],
    [{ amount: '600' }, 'require_approval', undefined],
    [{ amount: 400 }, 'allow', undefined],
    [{ amount: '400' }, 'allow', undefined],
    [{}, 'allow', undefined], // absent is not indeterminate: GreaterThan is simply false
    [{ amount: '600 USD' }, 'require_approval', `parameters.amount is "600 USD", not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: '0x300' }, 'require_approval', `parameters.amount is "0x300", not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: '' }, 'require_approval', `parameters.amount is "", not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: true }, 'require_approval', `parameters.amount is true (a boolean), not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: null }, 'require_approval', `parameters.amount is null, not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: [] }, 'require_approval', `parameters.amount is an array of 0 items, not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: [700] }, 'require_approval', `parameters.amount is an array of 1 item, not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: {} }, 'require_approval', `parameters.amount is an object, not a number; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: '1e999' }, 'require_approval', `parameters.amount is "1e999", not a number; GreaterThan cannot be evaluated, ${applies}`],
    // 9007199254740993 as a double is 9007199254740992: not greater than a bound of that.
    [{ amount: '9007199254740993' }, 'require_approval', `parameters.amount is "9007199254740993", not a number a double holds exactly; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: '500.00000000000001' }, 'require_approval', `parameters.amount is "500.00000000000001", not a number a double holds exactly; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: ' +6e2 ' }, 'require_approval', undefined],
    [{ AMOUNT: 900 }, 'require_approval', `parameters has no key "amount" but has "AMOUNT", which a server that reads keys ignoring case takes as parameters.amount; GreaterThan cannot be evaluated, ${applies}`],
    // Go's encoding/json takes the last of the two: a refund of 900 judged as one of 1.
    [{ amount: 1, Amount: 900 }, 'require_approval', `parameters has both "amount" and "Amount", which a server that reads keys ignoring case may take either of as parameters.amount; GreaterThan cannot be evaluated, ${applies}`],
    [{ AMOUNT: 900, amount: 1 }, 'require_approval', `parameters has both "amount" and "AMOUNT", which a server that reads keys ignoring case may take either of as parameters.amount; GreaterThan cannot be evaluated, ${applies}`],
    [{ amount: 400, order: 'o-1' }, 'allow', undefined], // other keys beside it change nothing
  ])('GreaterThan 500 on %j → %s', (parameters, decision, warning) => {
    const d = refunds('require_approval', over500).evaluate(refund(parameters));
    expect(d.decision).toBe(decision);
    expect(d.warnings).toEqual(warning === undefined ? [] : [`policy 'refunds' rule 'big-refunds': ${warning}`]);
  });

  it.each(['9007199254740993', '0.12345678901234567'])('a GreaterThan bound a double cannot hold exactly (%s) is a load error, not a rule comparing with another number', (bound) => {
    const policy = guardPolicy({ name: 'big' }, { rules: [{ match: { tools: ['x'], arguments: [{ path: 'n', operator: 'GreaterThan', values: [bound] }] }, action: 'deny' }] });
    const result = compilePolicy(policy, DEFAULT_ENGINE_OPTIONS);
    expect(result).toMatchObject({ ok: false, problem: { reason: 'InvalidSpec', message: expect.stringContaining(`argument n GreaterThan "${bound}": a double cannot hold this number exactly`) } });
  });

  it.each([
    ['Equals', ['x'], { v: { a: 1 } }, 'parameters.v is an object, not a string, number, boolean or null; Equals cannot be evaluated'],
    ['NotEquals', ['x'], { v: ['x'] }, 'parameters.v is an array of 1 item, not a string, number, boolean or null; NotEquals cannot be evaluated'],
    ['In', ['x'], { v: {} }, 'parameters.v is an object, not a string, number, boolean or null; In cannot be evaluated'],
    ['NotIn', ['x'], { v: [] }, 'parameters.v is an array of 0 items, not a string, number, boolean or null; NotIn cannot be evaluated'],
    ['Glob', ['*'], { v: { a: 'x' } }, 'parameters.v is an object, not a string, number, boolean or null; Glob cannot be evaluated'],
    ['LessThan', ['5'], { v: 'five' }, 'parameters.v is "five", not a number; LessThan cannot be evaluated'],
    ['Exists', undefined, { v: 'yes' }, 'parameters.v is "yes", not an object, so parameters.v.force cannot be looked up; Exists cannot be evaluated'],
    ['DoesNotExist', undefined, { v: null }, 'parameters.v is null, not an object, so parameters.v.force cannot be looked up; DoesNotExist cannot be evaluated'],
    ['Equals', ['1'], { v: 3 }, 'parameters.v is 3 (a number), not an object, so parameters.v.force cannot be looked up; Equals cannot be evaluated'],
    ['NotIn', ['1'], { v: false }, 'parameters.v is false (a boolean), not an object, so parameters.v.force cannot be looked up; NotIn cannot be evaluated'],
    // A key a server reading keys ignoring case takes as `force`: read as absent, the deny would not apply.
    ['Equals', ['true'], { v: { FORCE: true } }, 'parameters.v has no key "force" but has "FORCE", which a server that reads keys ignoring case takes as parameters.v.force; Equals cannot be evaluated'],
    ['DoesNotExist', undefined, { v: { '\u0192orce': 1, \u212aey: 1, forc\u017f: 1, fORCE: 2 } }, 'parameters.v has no key "force" but has "fORCE", which a server that reads keys ignoring case takes as parameters.v.force; DoesNotExist cannot be evaluated'],
    ['Equals', ['true'], { v: { force: false, FORCE: true } }, 'parameters.v has both "force" and "FORCE", which a server that reads keys ignoring case may take either of as parameters.v.force; Equals cannot be evaluated'],
    ['NotEquals', ['x'], { V: 1, v: { force: 'x' } }, 'parameters has both "v" and "V", which a server that reads keys ignoring case may take either of as parameters.v; NotEquals cannot be evaluated'],
    // A list is looked into by index only: read as absent, `force` would make this deny not apply.
    ['Equals', ['true'], { v: [{ force: true }] }, 'parameters.v is an array of 1 item, not an object (a list is looked into by index, as in items.0.name), so parameters.v.force cannot be looked up; Equals cannot be evaluated'],
    ['DoesNotExist', undefined, { v: [] }, 'parameters.v is an array of 0 items, not an object (a list is looked into by index, as in items.0.name), so parameters.v.force cannot be looked up; DoesNotExist cannot be evaluated'],
    // A listed value as a tool may read it, but not as written: not a plain mismatch.
    ['In', ['users', 'payments'], { v: 'Users' }, `parameters.v is "Users", which is "users" ${LOOSELY}; In cannot be evaluated`],
    ['In', ['users'], { v: '\uff35SERS' }, `parameters.v is "\uff35SERS", which is "users" ${LOOSELY}; In cannot be evaluated`],
    ['Equals', ['users'], { v: 'us\u200bers ' }, `parameters.v is "us\u200bers ", which is "users" ${LOOSELY}; Equals cannot be evaluated`],
    ['Equals', ['true'], { v: 'True' }, `parameters.v is "True", which is "true" ${LOOSELY}; Equals cannot be evaluated`],
    ['NotIn', ['prod', 'production'], { v: 'PRODUCTION' }, `parameters.v is "PRODUCTION", which is "production" ${LOOSELY}; NotIn cannot be evaluated`],
    ['NotEquals', ['prod'], { v: ' prod' }, `parameters.v is " prod", which is "prod" ${LOOSELY}; NotEquals cannot be evaluated`],
    ['In', ['1000000'], { v: '1e6' }, `parameters.v is "1e6", which is "1000000" ${LOOSELY}; In cannot be evaluated`],
    ['Equals', ['500.00'], { v: 500 }, `parameters.v is 500 (a number), which is "500.00" ${LOOSELY}; Equals cannot be evaluated`],
    ['Glob', ['prod_*'], { v: ' prod_db' }, `parameters.v is " prod_db", which "prod_*" matches ${LOOSELY}; Glob cannot be evaluated`],
    ['NotIn', ['prod'], { v: 'prod\u0000' }, `parameters.v is "prod\\u0000", which is "prod" ${LOOSELY}; NotIn cannot be evaluated`],
    ['NotIn', ['prod'], { v: 'prod\u0000staging' }, `parameters.v is "prod\\u0000staging", which is "prod" ${LOOSELY}; NotIn cannot be evaluated`],
    ['In', ['users'], { v: 'users\u0000x' }, `parameters.v is "users\\u0000x", which is "users" ${LOOSELY}; In cannot be evaluated`],
    ['NotIn', ['prod'], { v: 'pro\nd' }, `parameters.v is "pro\\nd", which is "prod" ${LOOSELY}; NotIn cannot be evaluated`],
    ['Glob', ['*.sh'], { v: 'x.sh\u0000.txt' }, `parameters.v is "x.sh\\u0000.txt", which "*.sh" matches ${LOOSELY}; Glob cannot be evaluated`],
    // A path written with the `parameters.` the warnings print: read as absent, the deny would apply to no call.
    ['Equals', ['x'], { v: 'x' }, 'parameters.parameters.v is absent, but parameters.v is there: a path is written from inside the parameters (v, not parameters.v); Equals cannot be evaluated'],
  ] as const)('%s %j on %j is indeterminate: a deny applies, an allow does not', (operator, values, parameters, reason) => {
    const path = reason.includes('v.force') ? 'v.force' : reason.startsWith('parameters.parameters.') ? 'parameters.v' : 'v';
    const cond = { path, operator, ...(values ? { values: [...values] } : {}) } as ArgumentCondition;
    const deny = refunds('deny', [cond]).evaluate(refund(parameters));
    expect(deny.decision).toBe('deny');
    expect(deny.warnings).toEqual([`policy 'refunds' rule 'big-refunds': ${reason}, so this deny rule applies`]);
    // An allow rule on the same condition does not allow (the default here is deny).
    const allow = refunds('allow', [cond]).evaluate(refund(parameters));
    expect(allow.decision).toBe('deny');
    expect(allow.matched).toEqual([]);
    expect(allow.warnings).toEqual([`policy 'refunds' rule 'big-refunds': ${reason}, so this allow rule does not apply`]);
  });

  it('scalars still compare by their string form, null as "null"; on an absent path Equals and In are false', () => {
    const cond = (operator: 'Equals' | 'NotEquals' | 'NotIn' | 'In', v: string): ArgumentCondition[] => [{ path: 'v', operator, values: [v] }];
    expect(refunds('deny', cond('Equals', 'null')).evaluate(refund({ v: null })).decision).toBe('deny');
    expect(refunds('deny', cond('Equals', 'true')).evaluate(refund({ v: true })).decision).toBe('deny');
    for (const op of ['Equals', 'In'] as const) {
      const d = refunds('deny', cond(op, 'x')).evaluate(refund({}));
      expect([d.decision, d.warnings]).toEqual(['allow', []]);
    }
  });

  it.each(['NotEquals', 'NotIn'] as const)('%s on an absent path is indeterminate: the tool\'s default may be the listed value, so a deny applies and an allow does not', (op) => {
    const cond: ArgumentCondition[] = [{ path: 'env', operator: op, values: ['prod'] }];
    const reason = `parameters.env is absent, and the tool's default for it may be the listed value (a rule for calls without it says DoesNotExist); ${op} cannot be evaluated`;
    const deny = refunds('deny', cond).evaluate(refund({}));
    expect([deny.decision, deny.warnings]).toEqual(['deny', [`policy 'refunds' rule 'big-refunds': ${reason}, so this deny rule applies`]]);
    const allow = refunds('allow', cond).evaluate(refund({}));
    expect([allow.decision, allow.warnings]).toEqual(['deny', [`policy 'refunds' rule 'big-refunds': ${reason}, so this allow rule does not apply`]]);
    // null, "" or only spaces: not given, to many tools, so their default.
    for (const [env, shown] of [[null, 'null'], [false, 'false (a boolean)'], [0, '0 (a number)'], ['', '""'], ['  ', '"  "'], ['\u200b', '"\u200b"'], ['\n', '"\\n"'], ['\u0000staging', '"\\u0000staging"']] as const) {
      const blank = refunds('allow', cond).evaluate(refund({ env }));
      expect([blank.decision, blank.warnings]).toEqual(['deny', [`policy 'refunds' rule 'big-refunds': parameters.env is ${shown}, which a tool may take as not given, and its default may be the listed value; ${op} cannot be evaluated, so this allow rule does not apply`]]);
    }
    // Unless that is what is listed.
    const listedNull = refunds('allow', [{ path: 'env', operator: op, values: ['null'] }]).evaluate(refund({ env: null }));
    expect(listedNull.decision).toBe('deny');
    expect(listedNull.warnings).toEqual([]);
    // Where a boolean or a number is listed, false and 0 are values: `force NotEquals true` allows force: false.
    for (const [values, v] of [[['true'], false], [['-1'], 0]] as const) {
      const plain = refunds('allow', [{ path: 'env', operator: op, values: [...values] }]).evaluate(refund({ env: v }));
      expect([plain.decision, plain.warnings]).toEqual(['allow', []]);
    }
    // Present and not listed: a plain match, no warning.
    const staging = refunds('allow', cond).evaluate(refund({ env: 'staging' }));
    expect([staging.decision, staging.warnings]).toEqual(['allow', []]);
    // A rule for the absent case says so.
    const absent = refunds('allow', [{ path: 'env', operator: 'DoesNotExist' }]).evaluate(refund({}));
    expect([absent.decision, absent.warnings]).toEqual(['allow', []]);
  });

  it.each([
    ['In', ['users'], 'orders'],
    ['In', ['1000000'], '1000001'],
    ['Equals', ['users'], 'user'],
    ['Equals', ['prod'], 'pr od'],
    ['Glob', ['prod_*'], 'dev_prod_db'],
  ] as const)('%s %j on %j, not alike in any reading, is a plain mismatch: no warning', (operator, values, v) => {
    const d = refunds('deny', [{ path: 'v', operator, values: [...values] }]).evaluate(refund({ v }));
    expect([d.decision, d.warnings]).toEqual(['allow', []]);
  });

  it('a rule with a definitely false condition does not match, and says nothing', () => {
    const d = refunds('deny', [...over500, { path: 'currency', operator: 'Equals', values: ['EUR'] }]).evaluate(refund({ amount: '600 USD', currency: 'USD' }));
    expect([d.decision, d.warnings]).toEqual(['allow', []]);
  });

  it('names every condition that cannot be evaluated', () => {
    const d = refunds('deny', [...over500, { path: 'currency', operator: 'In', values: ['EUR'] }]).evaluate(refund({ amount: '600 USD', currency: ['EUR'] }));
    expect(d.decision).toBe('deny');
    expect(d.warnings).toHaveLength(2);
    expect(d.warnings[1]).toMatch(/parameters.currency is an array of 1 item, .* In cannot be evaluated, so this deny rule applies$/);
  });

  it('cuts long values in the warning', () => {
    const d = refunds('deny', over500).evaluate(refund({ amount: `${'9'.repeat(100)} USD` }));
    expect(d.warnings[0]).toContain(`parameters.amount is "${'9'.repeat(64)}"…, not a number`);
  });

  it('Audit-mode rules follow the same rule for their findings', () => {
    const d = refunds('require_approval', over500, 'Audit').evaluate(refund({ amount: '600 USD' }));
    expect(d.decision).toBe('allow');
    expect(d.audit_findings).toEqual([expect.objectContaining({ policy: 'refunds', rule: 'big-refunds', action: 'require_approval' })]);
    expect(d.warnings).toEqual([
      `policy 'refunds' rule 'big-refunds': parameters.amount is "600 USD", not a number; GreaterThan cannot be evaluated, so this require_approval rule (Audit mode) applies`,
      "Audit-mode policy 'refunds' rule 'big-refunds' would require approval",
    ]);
    const allow = refunds('allow', over500, 'Audit').evaluate(refund({ amount: '600 USD' }));
    expect(allow.audit_findings).toEqual([]);
    expect(allow.warnings).toEqual([expect.stringMatching(/so this allow rule \(Audit mode\) does not apply$/)]);
  });
});

describe('globs', () => {
  it('match case-insensitively in tools, actionTypes and agents', () => {
    const p = guardPolicy({ name: 'p' }, { rules: [{ match: { tools: ['Delete_*'], actionTypes: ['TOOL_*'], agents: ['LO?'] }, action: 'deny' }] });
    const snap = snapshot({}, agents, [p]);
    expect(snap.evaluate(call('low', 'DELETE_rows', { actionType: 'tool_call' })).decision).toBe('deny');
    expect(snap.evaluate(call('medium', 'delete_rows')).decision).toBe('allow');
  });
  it('exact names, prefix globs and suffix globs all reach the index', () => {
    const p = guardPolicy({ name: 'p' }, { rules: [{ match: { tools: ['exact_name', 'pre_*', '*_production', 'mid*dle'] }, action: 'deny' }] });
    const snap = snapshot({}, agents, [p]);
    for (const t of ['EXACT_NAME', 'pre_x', 'db_production', 'middle', 'mid-to-dle']) expect(snap.evaluate(call('low', t)).decision, t).toBe('deny');
    for (const t of ['exact_name_2', 'pr_x', 'production', 'middles']) expect(snap.evaluate(call('low', t)).decision, t).toBe('allow');
  });
  it('`*` crosses `/`: a deny on *prod* catches paths and URLs, deniedTools catch sub-paths', () => {
    const p = guardPolicy({ name: 'p' }, { rules: [{ match: { tools: ['*prod*'] }, action: 'deny' }] });
    const snap = snapshot({}, [guardAgent({ name: 'a' }, { deniedTools: ['delete_*'] })], [p]);
    for (const t of ['svc/prod-db', 'https://prod.example.com/x', 'PROD']) expect(snap.evaluate(call('a', t)).decision, t).toBe('deny');
    expect(snap.evaluate(call('a', 'svc/staging')).decision).toBe('allow');
    const d = snap.evaluate(call('a', 'delete_users/all'));
    expect(d.reason).toMatch(/explicitly denied .* \(deniedTools: delete_\*\)/);
  });
  it('the argument operator Glob has the same semantics', () => {
    const p = guardPolicy({ name: 'p' }, { rules: [{ match: { arguments: [{ path: 'url', operator: 'Glob', values: ['*prod*'] }] }, action: 'deny' }] });
    expect(snapshot({}, agents, [p]).evaluate(call('low', 'fetch', { parameters: { url: 'https://PROD.example.com/x' } })).decision).toBe('deny');
  });
  it.each([
    ['a{b,c}', /braces/],
    ['+(a|b)', /alternation is not supported/],
    ['!(x)', /negation/],
    ['!delete', /negation/],
    ['a[b', /unclosed "\["/],
    ['*a*a*a*a*a*a*a*a*a', /9 "\*"/],
  ])('rejects unsafe pattern %s with InvalidPattern naming it', (pattern, msg) => {
    const bad = guardPolicy({ name: 'bad' }, { rules: [{ match: { tools: [pattern] }, action: 'deny' }] });
    const snap = snapshot({}, agents, [bad]);
    expect(snap.problems).toEqual([expect.objectContaining({ kind: 'GuardPolicy', name: 'bad', reason: 'InvalidPattern' })]);
    expect(snap.problems[0]!.message).toContain(JSON.stringify(pattern));
    expect(snap.problems[0]!.message).toMatch(msg);
    expect(snap.counts.rules).toBe(0);
  });
});

describe('seed rules', () => {
  it.each([
    [{ condition: { tool_pattern: 'delete_*', trust_level_below: 'admin' }, action: 'deny' }, { tools: ['delete_*'], trustLevelBelow: 'admin' }],
    [{ condition: { tool_pattern: 'read_*', trust_level_at_least: 'low' }, action: 'allow' }, { tools: ['read_*'], trustLevelAtLeast: 'low' }],
    [{ condition: { tool_pattern: 'drop_*', trust_level_at_least: 'admin' }, action: 'deny' }, { tools: ['drop_*'], trustLevelBelow: 'admin' }],
    [{ condition: { action_type: 'data_write', trust_level_at_least: 'high' }, action: 'require_approval' }, { actionTypes: ['data_write'], trustLevelBelow: 'high' }],
    [{ condition: { tool_pattern: 'x_*' } }, { tools: ['x_*'] }],
  ])('%j translates to match %j', (seed, match) => {
    expect(fromSeedRule(SeedRuleSchema.parse(seed)).match).toEqual(match);
  });
  it('a missing action defaults to deny, as in the seed', () => {
    expect(fromSeedRule(SeedRuleSchema.parse({ condition: { tool_pattern: 'x' } })).action).toBe('deny');
  });
  it('a "requires at least admin" deny rule denies high and allows admin', () => {
    const rule = fromSeedRule(SeedRuleSchema.parse({ condition: { tool_pattern: 'drop_*', trust_level_at_least: 'admin' }, action: 'deny' }));
    const snap = snapshot({}, agents, [guardPolicy({ name: 'seed' }, { rules: [rule] })]);
    expect(snap.evaluate(call('restricted', 'drop_x')).decision).toBe('deny'); // restricted has allowedTools; deny wins anyway
    expect(snap.evaluate(call('medium', 'drop_x')).decision).toBe('deny');
    expect(snap.evaluate(call('admin', 'drop_x')).decision).toBe('allow');
  });
});

describe('compilation', () => {
  it('a duplicate agentId is a Conflict and the oldest object wins, whatever the order', () => {
    const older = guardAgent({ name: 'a', namespace: 'x', creationTimestamp: '2026-01-01T00:00:00Z' }, { agentId: 'bot', trustLevel: 'admin' });
    const newer = guardAgent({ name: 'b', namespace: 'y', creationTimestamp: '2026-02-01T00:00:00Z' }, { agentId: 'bot', trustLevel: 'low' });
    for (const list of [[older, newer], [newer, older]]) {
      const snap = snapshot({}, list, []);
      expect(snap.agent('bot')?.trust).toBe('admin');
      expect(snap.problems).toEqual([expect.objectContaining({ name: 'b', namespace: 'y', reason: 'Conflict' })]);
    }
  });
  it('duplicate rule names are an InvalidSpec problem', () => {
    const p = guardPolicy({ name: 'dup' }, { rules: [{ name: 'r', action: 'deny' }, { name: 'r', action: 'allow' }] });
    expect(snapshot({}, agents, [p]).problems).toEqual([expect.objectContaining({ reason: 'InvalidSpec', message: expect.stringMatching(/"r" is used twice/) })]);
  });
  it('keeps the last good version in force when a new one fails to compile', () => {
    const good = guardPolicy({ name: 'p', generation: 1 }, { rules: [{ match: { tools: ['delete_*'] }, action: 'deny' }] });
    const bad = guardPolicy({ name: 'p', generation: 2 }, { rules: [{ match: { tools: ['{a,b}'] }, action: 'allow' }] });
    const first = snapshot({}, agents, [good]);
    const second = PolicySnapshot.compile({ agents, policies: [bad] }, DEFAULT_ENGINE_OPTIONS, { previous: first });
    expect(second.evaluate(call('low', 'delete_x')).decision).toBe('deny');
    expect(second.problems[0]!.message).toMatch(/generation 1 stays in force/);
    // without a previous good version the policy set is incomplete: denied, saying why
    expect(snapshot({}, agents, [bad]).evaluate(call('low', 'delete_x'))).toMatchObject({ decision: 'deny', reason: expect.stringMatching(/^The policy set is incomplete/) });
  });
  it('the revision changes with the inputs and only with them', () => {
    expect(snapshot().revision).toBe(snapshot().revision);
    expect(snapshot({}, agents, [reads]).revision).not.toBe(snapshot().revision);
    expect(snapshot({}, [...agents].reverse(), [...policies].reverse()).revision).toBe(snapshot().revision);
  });
  it.each([
    // [agent, unknownAgentNamespace, decision on "x" (a team-a policy), on "y" (cluster-wide)]
    ['unknown', undefined, 'allow', 'deny'],
    ['unknown', 'team-a', 'deny', 'deny'],
    ['unknown', 'team-b', 'allow', 'deny'],
    ['b', 'team-a', 'allow', 'deny'], // a registered agent keeps its own namespace
    ['a', 'team-b', 'deny', 'deny'],
  ] as const)('agent %s with unknownAgentNamespace %s: x → %s, y → %s', (agentId, ns, onX, onY) => {
    const snap = snapshot({ clusterPolicyNamespace: 'policyguard' }, [guardAgent({ name: 'a', namespace: 'team-a' }), guardAgent({ name: 'b', namespace: 'team-b' })], [
      guardPolicy({ name: 'local', namespace: 'team-a' }, { rules: [{ match: { tools: ['x'] }, action: 'deny' }] }),
      guardPolicy({ name: 'global', namespace: 'policyguard' }, { rules: [{ match: { tools: ['y'] }, action: 'deny' }] }),
    ]);
    const extra = ns === undefined ? {} : { unknownAgentNamespace: ns };
    expect(snap.evaluate(call(agentId, 'x', extra)).decision).toBe(onX);
    expect(snap.evaluate(call(agentId, 'y', extra)).decision).toBe(onY);
  });
  it('scopes policies to their namespace unless they live in the cluster policy namespace', () => {
    const opts = { clusterPolicyNamespace: 'policyguard' };
    const a = [guardAgent({ name: 'a', namespace: 'team-a' }), guardAgent({ name: 'b', namespace: 'team-b' })];
    const local = guardPolicy({ name: 'local', namespace: 'team-a' }, { rules: [{ match: { tools: ['x'] }, action: 'deny' }] });
    const global = guardPolicy({ name: 'global', namespace: 'policyguard' }, { rules: [{ match: { tools: ['y'] }, action: 'deny' }] });
    const snap = snapshot(opts, a, [local, global]);
    expect(snap.evaluate(call('a', 'x')).decision).toBe('deny');
    expect(snap.evaluate(call('b', 'x')).decision).toBe('allow');
    expect(snap.evaluate(call('b', 'y')).decision).toBe('deny');
    expect(snap.evaluate(call('unknown', 'x')).decision).toBe('allow');
    expect(snap.evaluate(call('unknown', 'y')).decision).toBe('deny');
  });
});

describe('objects that cannot be loaded (docs/decisions.md)', () => {
  const broken = guardPolicy({ name: 'deny-drops' }, { rules: [{ match: { tools: ['drop_*'] }, action: 'deny' }, { match: { tools: ['truncate_{a,b}'] }, action: 'deny' }] });

  it('one policy set (standalone): a policy that fails to compile with no good version denies every decision, naming it', () => {
    const snap = snapshot({}, agents, [reads, broken]);
    const reason = 'The policy set is incomplete, so this call is denied until it is fixed: GuardPolicy deny-drops: InvalidPattern: pattern "truncate_{a,b}" uses braces, which are not supported; list each alternative as its own pattern';
    for (const req of [call('low', 'drop_table'), call('admin', 'read_x'), call('nobody', 'anything')]) {
      expect(snap.evaluate(req)).toMatchObject({ decision: 'deny', allowed: false, reason, matched: [{ policy: `agent:${req.agentId}`, rule: 'incompletePolicySet', action: 'deny' }] });
      expect(snap.possibleDecisions(req)).toEqual(new Set(['deny']));
    }
    expect(snap.missing()).toEqual([reason.slice(reason.indexOf('GuardPolicy'))]);
    // Fixed, decisions resume; the revision tells the two apart.
    const fixed = snapshot({}, agents, [reads]);
    expect(fixed.evaluate(call('admin', 'read_x')).decision).toBe('allow');
    expect(fixed.revision).not.toBe(snap.revision);
  });

  it('a store can name what it could not read; the quoted problem is its own, and the count of the others follows', () => {
    const missing = [{ problem: 'b.yaml:3: invalid YAML: x' }, { kind: 'GuardAgent' as const, agentId: 'etl', problem: 'a.yaml:1: GuardAgent etl: spec: Unrecognized key: "displayname"' }];
    const snap = PolicySnapshot.compile({ agents, policies: [reads], missing }, DEFAULT_ENGINE_OPTIONS, { describe: (p) => `policy.yaml:9: ${p.name}` });
    expect(snap.evaluate(call('admin', 'read_x')).reason).toBe('The policy set is incomplete, so this call is denied until it is fixed: a.yaml:1: GuardAgent etl: spec: Unrecognized key: "displayname" (and 1 more)');
    const compiled = PolicySnapshot.compile({ agents, policies: [broken] }, DEFAULT_ENGINE_OPTIONS, { describe: (p) => `policy.yaml:9: ${p.name}` });
    expect(compiled.missing()).toEqual(['policy.yaml:9: deny-drops']);
  });

  const scoped = { clusterPolicyNamespace: 'policyguard' };
  const teamAgents = [guardAgent({ name: 'a', namespace: 'team-a' }), guardAgent({ name: 'b', namespace: 'team-b' }, { deniedTools: ['x{y}'] })];
  const everyone = ['a', 'unknown@team-a', 'unknown@team-c', 'unknown', 'bot', 'bot@team-c', 'BOT', 'Bot@team-c'];
  it.each([
    // [what is missing, the agents (and unknown ids with their namespace) whose decisions it denies]
    ['a policy of team-a', { kind: 'GuardPolicy' as const, namespace: 'team-a' }, ['a', 'unknown@team-a']],
    ['a policy of the cluster policy namespace', { kind: 'GuardPolicy' as const, namespace: 'policyguard' }, everyone],
    // Its case twins too: with "bot" out of force, "BOT" would be judged by the rules written for bot.
    ['a GuardAgent claiming "bot"', { kind: 'GuardAgent' as const, namespace: 'team-a', agentId: 'bot' }, ['bot', 'bot@team-c', 'BOT', 'Bot@team-c']],
    ['a GuardAgent whose id cannot be read', { kind: 'GuardAgent' as const, namespace: 'team-a' }, everyone],
    ['a document whose kind cannot be read', {}, everyone],
  ])('kubernetes mode: %s denies the decisions it could change, and only those', (_what, m, held) => {
    // Agent b fails to compile (a brace in deniedTools): its own id is held too.
    const snap = PolicySnapshot.compile({ agents: teamAgents, policies: [], missing: [{ ...m, problem: 'the problem' }] }, { ...DEFAULT_ENGINE_OPTIONS, ...scoped });
    for (const who of ['b', ...everyone]) {
      const [agentId, ns] = who.split('@') as [string, string | undefined];
      const d = snap.evaluate(call(agentId, 'read_x', ns ? { unknownAgentNamespace: ns } : {}));
      const expected = who === 'b' ? /GuardAgent team-b\/b: InvalidPattern: pattern "x\{y\}"/ : held.includes(who) ? /: the problem$/ : undefined;
      if (expected) expect(d, who).toMatchObject({ decision: 'deny', reason: expect.stringMatching(expected) });
      else expect(d.decision, who).toBe('allow');
    }
  });

  // A broken GuardAgent claiming an id that a valid one holds: it holds the id's decisions only
  // when it would have won the id under the Conflict rule, had it been valid (a tenant must not
  // deny another namespace's agent by claiming its id with a broken object).
  const JAN = '2026-01-01T00:00:00Z';
  const FEB = '2026-02-01T00:00:00Z';
  const auto = { [LABEL_AUTO_REGISTERED]: 'true' };
  it.each([
    // [case, the valid claimants (id, creationTimestamp, auto-registered), the broken one's id, creationTimestamp, auto-registered, whether it holds its id]
    ['newer than the valid agent: it would lose', [['bot', JAN, false]], 'bot', FEB, false, false],
    ['older than the valid agent: it would win', [['bot', FEB, false]], 'bot', JAN, false, true],
    ['the only claimant', [['other', JAN, false]], 'bot', FEB, false, true],
    ['as old as the valid agent, its namespace/name first: it would win', [['bot', JAN, false]], 'bot', JAN, false, true],
    ['person-written, older than an auto-registered valid agent', [['bot', FEB, true]], 'bot', JAN, false, true],
    ['person-written, newer than an auto-registered valid agent: a person wins whatever the ages', [['bot', JAN, true]], 'bot', FEB, false, true],
    ['auto-registered, older than a person-written valid agent: it would lose whatever the ages', [['bot', FEB, false]], 'bot', JAN, true, false],
    ['auto-registered, an id differing only in case from a person-written one', [['bot', FEB, false]], 'Bot', JAN, true, false],
    ['person-written, newer, an id differing only in case: its own id would be in force beside the other', [['bot', JAN, false]], 'Bot', FEB, false, true],
    ['newer than a valid agent that itself lost the id to an older one', [['bot', JAN, false], ['bot', FEB, false]], 'bot', FEB, false, false],
  ] as const)('kubernetes mode: a broken GuardAgent %s (holds its id: %s)', (_case, valid, id, created, isAuto, holds) => {
    // The valid ones live in namespace "team-…", the broken one in "agents" (which sorts first).
    const claimants = valid.map(([vid, ts, a], i) => guardAgent({ name: `v${i}`, namespace: `team-${i}`, creationTimestamp: ts, labels: a ? auto : {} }, { agentId: vid }));
    const metadata = { name: 'squat', namespace: 'agents', creationTimestamp: created, labels: isAuto ? auto : {} };
    const ways = {
      // a schema failure: what the store hands in (src/store/kubernetes.ts)
      schema: { agents: claimants, missing: [{ kind: 'GuardAgent' as const, namespace: 'agents', agentId: id, metadata, problem: 'GuardAgent agents/squat: InvalidSpec: x' }] },
      // a compile failure, found by the snapshot itself
      compile: { agents: [...claimants, guardAgent(metadata, { agentId: id, deniedTools: ['send_{a,b}'] })], missing: [] },
    };
    for (const [way, input] of Object.entries(ways)) {
      const snap = PolicySnapshot.compile({ ...input, policies: [] }, { ...DEFAULT_ENGINE_OPTIONS, ...scoped });
      const d = snap.evaluate(call(id, 'read_x'));
      if (holds) expect(d, way).toMatchObject({ decision: 'deny', reason: expect.stringMatching(/^The policy set is incomplete, so this call is denied until it is fixed: GuardAgent agents\/squat: /) });
      else expect(d, way).toMatchObject({ decision: 'allow', agent: { registered: id === 'bot' } });
      expect(snap.missing().length, way).toBe(holds ? 1 : 0);
      if (way === 'compile') expect(snap.problems, way).toContainEqual(expect.objectContaining({ namespace: 'agents', name: 'squat', reason: 'InvalidPattern' }));
      // No hold on the other agents either way.
      if (id !== 'bot') expect(snap.evaluate(call('bot', 'read_x')).decision, way).toBe('allow');
    }
  });

  it('kubernetes mode: a broken GuardAgent that would win keeps its id from a younger claimant, which is Conflict and bound to nothing', () => {
    const decoy = guardAgent({ name: 'decoy', namespace: 'team-b', creationTimestamp: FEB }, { agentId: 'etl', identities: [{ user: 'token:squatter' }] });
    const broken = guardAgent({ name: 'etl', namespace: 'team-a', creationTimestamp: JAN }, { deniedTools: ['bad[z-a'], identities: [{ user: 'token:etl' }] });
    const snap = PolicySnapshot.compile({ agents: [broken, decoy], policies: [] }, { ...DEFAULT_ENGINE_OPTIONS, ...scoped });
    expect(snap.agent('etl')).toBeUndefined();
    expect(snap.problems).toContainEqual(expect.objectContaining({ namespace: 'team-b', name: 'decoy', reason: 'Conflict', message: 'agentId "etl" is already claimed by GuardAgent team-a/etl, which cannot be loaded: it holds the id until it is fixed' }));
    expect(snap.evaluate(call('etl', 'read_x'))).toMatchObject({ decision: 'deny', reason: expect.stringMatching(/^The policy set is incomplete/) });
    // Fixed, it is the agent again; the decoy stays Conflict.
    const fixed = PolicySnapshot.compile({ agents: [guardAgent(broken.metadata, { identities: [{ user: 'token:etl' }] }), decoy], policies: [] }, { ...DEFAULT_ENGINE_OPTIONS, ...scoped });
    expect(fixed.agent('etl')?.ref).toBe('team-a/etl');
  });

  it('a broken GuardAgent whose metadata the store could not read holds its id, as does one that would lose in standalone mode', () => {
    const valid = guardAgent({ name: 'bot', namespace: 'team', creationTimestamp: JAN });
    const unread = PolicySnapshot.compile({ agents: [valid], policies: [], missing: [{ kind: 'GuardAgent', namespace: 'agents', agentId: 'bot', problem: 'the problem' }] }, { ...DEFAULT_ENGINE_OPTIONS, ...scoped });
    expect(unread.evaluate(call('bot', 'read_x')).decision).toBe('deny');
    // One policy set for every agent: any missing object holds every decision (see the tests above).
    const loser = guardAgent({ name: 'squat', namespace: 'agents', creationTimestamp: FEB }, { agentId: 'bot', deniedTools: ['send_{a,b}'] });
    const standalone = PolicySnapshot.compile({ agents: [valid, loser], policies: [] }, DEFAULT_ENGINE_OPTIONS);
    expect(standalone.evaluate(call('bot', 'read_x')).decision).toBe('deny');
  });
});

describe('case folding (docs/decisions.md, Globs)', () => {
  it('a deny on a word ending in Σ covers the tool, whichever form of sigma either side uses', () => {
    const snap = snapshot({}, [...agents, guardAgent({ name: 'greek' }, { trustLevel: 'high', deniedTools: ['ΔΙΑΓΡΑΦΗ_*Σ'] })], [
      guardPolicy({ name: 'no-drops' }, { rules: [{ match: { tools: ['*_ΠΙΝΑΚΑΣ'] }, action: 'deny' }] }),
      guardPolicy({ name: 'mail' }, { rules: [{ match: { tools: ['send'], arguments: [{ path: 'to', operator: 'Glob', values: ['*ΕΞΩΤΕΡΙΚΟΣ'] }] }, action: 'deny' }] }),
    ]);
    for (const target of ['drop_ΠΙΝΑΚΑΣ', 'drop_πινακας', 'drop_πινακασ', 'DROP_ΠΙΝΑΚΑΣ']) expect(snap.evaluate(call('low', target)).decision, target).toBe('deny');
    expect(snap.evaluate(call('greek', 'ΔΙΑΓΡΑΦΗ_ΟΛΩΝ_ΤΩΝ_ΧΡΗΣΤΩΝ_ΑΠΟ_ΤΟ_ΣΥΣΤΗΜΑ_ΣΑΣ')).decision).toBe('deny');
    expect(snap.evaluate(call('low', 'send', { parameters: { to: 'ο ΕΞΩΤΕΡΙΚΟΣ' } })).decision).toBe('deny');
  });
});

describe('order independence', () => {
  it('ties between policies are broken by code unit order of their names, whatever the locale (Danish sorts "aa" after "z")', () => {
    // Evaluated in a process whose locale is Danish: localeCompare there puts b-deny first.
    const script = `
      import { guardPolicy } from './src/api/builders.ts';
      import { PolicySnapshot } from './src/engine/snapshot.ts';
      import { DEFAULT_ENGINE_OPTIONS } from './src/engine/types.ts';
      const deny = (name) => guardPolicy({ name }, { priority: 5, rules: [{ match: { tools: ['drop_*'] }, action: 'deny', message: 'from ' + name }] });
      const d = PolicySnapshot.compile({ agents: [], policies: [deny('b-deny'), deny('aa-deny')] }, DEFAULT_ENGINE_OPTIONS).evaluate({ agentId: 'x', actionType: 'tool_call', target: 'drop_x', parameters: {}, context: '' });
      console.log(JSON.stringify({ locale: Intl.DateTimeFormat().resolvedOptions().locale, reason: d.reason, matched: d.matched.map((m) => m.policy) }));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, LC_ALL: 'da_DK.UTF-8' }, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ locale: 'da-DK', reason: 'from aa-deny', matched: ['aa-deny', 'b-deny'] });
  });

  const requests = ['delete_rows', 'deploy_prod', 'read_data', 'send_email', 'export_csv', 'query_x', 'other'].flatMap((t) =>
    ['low', 'medium', 'admin', 'frozen', 'restricted', 'nobody'].map((a) => call(a, t, { parameters: { to: 'a@external.com' } })),
  );
  const many = [
    ...policies,
    guardPolicy({ name: 'm1' }, { priority: 100, rules: [{ match: { tools: ['*'] }, action: 'allow', message: 'm1' }, { match: { tools: ['de*'] }, action: 'require_approval', message: 'm1b' }] }),
    guardPolicy({ name: 'm2' }, { priority: 100, rules: [{ match: { tools: ['*'] }, action: 'allow', message: 'm2' }] }),
  ];
  const reference = snapshot({}, agents, many);
  const expected = requests.map((r) => reference.evaluate(r));

  it('shuffling policies, rules and agents never changes a decision', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(), { minLength: 40, maxLength: 40 }), (seeds) => {
        let i = 0;
        const shuffle = <T>(xs: T[]): T[] => {
          const out = [...xs];
          for (let k = out.length - 1; k > 0; k--) {
            const j = seeds[i++ % seeds.length]! % (k + 1);
            [out[k], out[j]] = [out[j]!, out[k]!];
          }
          return out;
        };
        // Shuffling the rules inside a policy renames the defaulted ones, so name them first.
        const shuffled = shuffle(many).map((p) =>
          guardPolicy(p.metadata, { ...p.spec, rules: shuffle(p.spec.rules.map((r, k) => ({ ...r, name: r.name ?? `rule-${k}` }))) }),
        );
        const snap = snapshot({}, shuffle(agents), shuffled);
        requests.forEach((r, k) => {
          const d = snap.evaluate(r);
          expect(d.decision).toBe(expected[k]!.decision);
          expect(d.reason).toBe(expected[k]!.reason);
        });
      }),
      { numRuns: 30 },
    );
  });
});

describe('rule index', () => {
  // Brute force: every rule of every policy, matched in full, no index, nothing remembered.
  function bruteForce(ps: GuardPolicy[], req: ActionRequest, options: EngineOptions = DEFAULT_ENGINE_OPTIONS, known: GuardAgent[] = agents): string[] {
    const agent = known.find((a) => (a.spec.agentId ?? a.metadata.name) === req.agentId);
    const namespace = agent ? agent.metadata.namespace : req.unknownAgentNamespace;
    const rank = trustRank(agent?.spec.trustLevel ?? options.unknownAgentTrust);
    const out: string[] = [];
    for (const p of ps) {
      const res = compilePolicy(p, options);
      if (!res.ok) continue;
      for (const r of res.value) {
        if (r.scope !== undefined && r.scope !== namespace) continue;
        if (r.selector && !r.selector(agent?.metadata.labels ?? {})) continue;
        if (r.trustBelow !== undefined && !(rank < r.trustBelow)) continue;
        if (r.trustAtLeast !== undefined && !(rank >= r.trustAtLeast)) continue;
        if (r.tools && !anyMatch(r.tools, foldCase(req.target))) continue;
        if (r.actionTypes && !anyMatch(r.actionTypes, foldCase(req.actionType))) continue;
        if (r.agents && !anyMatch(r.agents, foldCase(req.agentId))) continue;
        if (r.upstreams && (req.upstream === undefined || !anyMatch(r.upstreams, foldCase(req.upstream)))) continue;
        const results = r.args.map((t) => t(req.parameters));
        if (results.includes(false) || (r.action === 'allow' && results.some((x) => x !== true))) continue;
        out.push(`${r.namespace ? `${r.namespace}/` : ''}${r.policy}/${r.ruleName}`);
      }
    }
    return out.sort();
  }
  const foundIn = (d: Decision) => [...d.matched, ...d.audit_findings].map((m) => `${m.namespace ? `${m.namespace}/` : ''}${m.policy}/${m.rule}`).sort();

  it('finds exactly the rules a scan of every rule finds (exact, prefix, suffix, keyless globs; tools, actions, agents)', () => {
    const piece = fc.constantFrom('a', 'b', '_', 'x', '/', 'de');
    const glob = fc.tuple(fc.array(piece, { maxLength: 3 }), fc.constantFrom('', '*', '?', '**', '*x*', '[ab]', '[!x]', '*/*'), fc.array(piece, { maxLength: 3 })).map(([l, w, r]) => `${l.join('')}${w}${r.join('')}`).filter((g) => g.length > 0);
    const globs = fc.option(fc.array(glob, { minLength: 1, maxLength: 3 }), { nil: undefined });
    const rule = fc.record({ tools: globs, actionTypes: globs, agents: globs, action: fc.constantFrom('allow', 'deny', 'require_approval') });
    const value = fc.array(piece, { maxLength: 5 }).map((p) => p.join(''));
    // Values are often a pattern of the policy set with its wildcards filled in: likely matches.
    const req = fc.record({ target: value, actionType: value, pick: fc.nat(), fill: fc.constantFrom('', 'x', 'a/b', '_de'), agent: fc.constantFrom('low', 'medium', 'admin', 'nobody', 'LOW') });
    fc.assert(
      fc.property(fc.array(fc.array(rule, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 6 }), fc.array(req, { minLength: 1, maxLength: 10 }), (specs, reqs) => {
        const ps = specs.map((rules, i) =>
          guardPolicy({ name: `p${i}` }, {
            enforcement: i % 3 === 2 ? 'Audit' : 'Enforce',
            rules: rules.map((r, k) => ({ name: `r${k}`, action: r.action, match: { ...(r.tools && { tools: r.tools }), ...(r.actionTypes && { actionTypes: r.actionTypes }), ...(r.agents && { agents: r.agents }) } })),
          }),
        );
        const snap = snapshot({}, agents, ps);
        expect(snap.problems).toEqual([]);
        const tools = specs.flat().flatMap((r) => r.tools ?? []);
        const actions = specs.flat().flatMap((r) => r.actionTypes ?? []);
        const fill = (patterns: string[], pick: number, filler: string, fallback: string) =>
          pick % 3 === 0 || patterns.length === 0 ? fallback : patterns[pick % patterns.length]!.replace(/\*+/g, filler).replace(/\?|\[!?[a-z]+\]/g, 'a');
        for (const r of reqs) {
          const req = call(r.agent, fill(tools, r.pick, r.fill, r.target) || 'x', { actionType: fill(actions, r.pick >> 2, r.fill, r.actionType) || 'y' });
          const d = snap.evaluate(req);
          if (d.matched[0]?.policy.startsWith('agent:')) continue; // an agent check decided
          expect(foundIn(d)).toEqual(bruteForce(ps, req));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('answers the same whether the call shape was remembered or not (selectors, namespaces, trust, upstreams, arguments)', () => {
    const nsAgents = [
      ...agents,
      guardAgent({ name: 'ns-data', namespace: 'team-a', labels: { team: 'data' } }, { trustLevel: 'medium' }),
      guardAgent({ name: 'ns-web', namespace: 'team-b', labels: { team: 'web' } }, { trustLevel: 'high' }),
    ];
    const globs = (xs: string[]) => fc.option(fc.array(fc.constantFrom(...xs), { minLength: 1, maxLength: 2 }), { nil: undefined });
    const rule = fc.record({
      tools: globs(['read_*', 'delete_users', '*_prod', '*', '*e*', 'x*y']),
      actionTypes: globs(['tool_call', 'data_*', '*write']),
      agents: globs(['low', 'ns-*', 'anon-*', '*']),
      upstreams: globs(['team-a/github', '*/slack']),
      trust: fc.constantFrom(undefined, { trustLevelBelow: 'high' as const }, { trustLevelAtLeast: 'medium' as const }),
      argument: fc.constantFrom<ArgumentCondition | undefined>(undefined, { path: 'amount', operator: 'GreaterThan', values: ['100'] }, { path: 'table', operator: 'In', values: ['users'] }),
      action: fc.constantFrom('allow' as const, 'deny' as const, 'require_approval' as const),
    });
    const policy = fc.record({
      namespace: fc.constantFrom('policyguard', 'team-a', 'team-b'),
      enforcement: fc.constantFrom('Enforce' as const, 'Audit' as const),
      selector: fc.constantFrom(undefined, { matchLabels: { team: 'data' } }),
      rules: fc.array(rule, { minLength: 1, maxLength: 4 }),
    });
    const request = fc.record({
      agentId: fc.constantFrom('low', 'admin', 'ns-data', 'ns-web', 'anon-1', 'anon-2'),
      actionType: fc.constantFrom('tool_call', 'data_write', 'DATA_READ'),
      target: fc.constantFrom('read_x', 'delete_users', 'deploy_prod', 'xay', 'other'),
      amount: fc.constantFrom(5, 500, '600 USD'),
      table: fc.constantFrom('users', 'orders'),
      upstream: fc.constantFrom(undefined, 'team-a/github', 'TEAM-B/slack'),
      ns: fc.constantFrom(undefined, 'team-a', 'team-b'),
    });
    fc.assert(
      fc.property(fc.array(policy, { minLength: 1, maxLength: 5 }), fc.array(request, { minLength: 1, maxLength: 30 }), (specs, reqs) => {
        const ps = specs.map((p, i) =>
          guardPolicy({ name: `p${i}`, namespace: p.namespace }, {
            enforcement: p.enforcement,
            ...(p.selector && { agentSelector: p.selector }),
            rules: p.rules.map((r, k) => ({
              name: `r${k}`,
              action: r.action,
              match: {
                ...(r.tools && { tools: r.tools }),
                ...(r.actionTypes && { actionTypes: r.actionTypes }),
                ...(r.agents && { agents: r.agents }),
                ...(r.upstreams && { upstreams: r.upstreams }),
                ...r.trust,
                ...(r.argument && { arguments: [r.argument] }),
              },
            })),
          }),
        );
        const warm = snapshot({ clusterPolicyNamespace: 'policyguard' }, nsAgents, ps);
        const cold = snapshot({ clusterPolicyNamespace: 'policyguard' }, nsAgents, ps);
        expect(warm.problems).toEqual([]);
        for (const r of reqs) {
          const req = call(r.agentId, r.target, {
            actionType: r.actionType,
            parameters: { amount: r.amount, table: r.table },
            ...(r.upstream && { upstream: r.upstream }),
            ...(r.ns && { unknownAgentNamespace: r.ns }),
          });
          cold.forgetMemos();
          const d = warm.evaluate(req);
          expect(d).toEqual(cold.evaluate(req));
          if (d.matched[0]?.policy.startsWith('agent:')) continue; // an agent check decided
          expect(foundIn(d)).toEqual(bruteForce(ps, req, warm.options, nsAgents));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('remembers a call shape per namespace of an unknown agent and per upstream', () => {
    const snap = snapshot({ clusterPolicyNamespace: 'policyguard' }, agents, [
      guardPolicy({ name: 'local', namespace: 'team-a' }, { rules: [{ match: { actionTypes: ['tool_call'] }, action: 'deny' }] }),
      guardPolicy({ name: 'gateway', namespace: 'policyguard' }, { rules: [{ match: { upstreams: ['team-b/github'] }, action: 'deny' }] }),
    ]);
    const inNs = (ns: string, upstream?: string) => snap.evaluate(call('anon', 'x', { unknownAgentNamespace: ns, ...(upstream && { upstream }) })).decision;
    expect([inNs('team-a'), inNs('team-b'), inNs('team-a')]).toEqual(['deny', 'allow', 'deny']);
    expect([inNs('team-b', 'TEAM-B/github'), inNs('team-b'), inNs('team-b', 'team-b/github')]).toEqual(['deny', 'allow', 'deny']);
  });

  it('remembers a bounded number of call shapes, whatever agent ids and action types callers send', () => {
    const snap = snapshot({}, agents, [guardPolicy({ name: 'broad' }, { rules: [{ match: { actionTypes: ['tool_call'] }, action: 'deny' }] })]);
    for (let i = 0; i < 10_000; i++) {
      expect(snap.evaluate(call('low', 'read_x', { actionType: 'tool_call' })).decision).toBe('deny');
      expect(snap.evaluate(call('low', 'read_x', { actionType: `kind-${i}` })).decision).toBe('allow');
    }
    const registered = snap.memoSizes().callShapes;
    expect(registered).toBeGreaterThan(0);
    expect(registered).toBeLessThanOrEqual(4096);
    // Unknown ids (and upstreams) have their own budget: a flood of them leaves registered agents' shapes alone.
    for (let i = 0; i < 10_000; i++) expect(snap.evaluate(call(`anon-${i}`, 'read_x', { upstream: `ns/u${i % 3}` })).decision).toBe('deny');
    expect(snap.memoSizes().callShapes).toBeGreaterThan(registered);
    expect(snap.memoSizes().callShapes).toBeLessThanOrEqual(registered + 4096);
    // Long keys count against the bytes budget (12 MiB): 2,000 ids of 5,000 characters do not all stay.
    snap.forgetMemos();
    for (let i = 0; i < 2_000; i++) expect(snap.evaluate(call(`${'x'.repeat(4_995)}${i}`, 'read_x')).decision).toBe('deny');
    expect(snap.memoSizes().callShapes).toBeLessThan(1_100);
  });

  it('remembers a bounded number of tool names, whatever tools callers name', () => {
    const snap = snapshot({}, agents, [guardPolicy({ name: 'p' }, { rules: [{ match: { tools: ['drop_*'] }, action: 'deny' }, { match: { tools: ['*_x'] }, action: 'require_approval' }] })]);
    const decide = (tool: string) => snap.evaluate(call('low', tool)).decision;
    for (let i = 0; i < 10_000; i++) {
      expect(decide(`drop_${i}`)).toBe('deny');
      expect(decide(`t${i}_x`)).toBe('require_approval');
      expect(decide(`other_${i}`)).toBe('allow');
    }
    expect(snap.memoSizes().tools).toBeGreaterThan(0);
    expect(snap.memoSizes().tools).toBeLessThanOrEqual(4096);
    // Long names count against the bytes budget (4 MiB): 1,000 names of 5,000 characters do not all stay.
    snap.forgetMemos();
    for (let i = 0; i < 1_000; i++) expect(decide(`drop_${'x'.repeat(4_990)}${i}`)).toBe('deny');
    expect(snap.memoSizes().tools).toBeLessThan(500);
    // A name larger than the whole budget is decided but not kept, and does not make the memo forget the others.
    const held = snap.memoSizes().tools;
    expect(decide(`drop_${'x'.repeat(2 ** 21)}`)).toBe('deny');
    expect(snap.memoSizes().tools).toBe(held);
  });

  it('answers the same for a tool name remembered or not, with many candidates and rules found under two keys', () => {
    // 40 rules under one prefix key (more than the insertion sort takes), one rule filed under a
    // key that proves its glob and one that does not, and names looked up in turn, so each
    // reuses the scratch space the one before it sorted in.
    const many = Array.from({ length: 40 }, (_, i) => guardPolicy({ name: `p${String(i).padStart(2, '0')}` }, { priority: (i * 7) % 40, rules: [{ name: 'r', match: { tools: i % 3 ? ['ab*'] : ['*z'] }, action: i % 5 ? 'allow' : 'require_approval' }] }));
    const twoKeys = guardPolicy({ name: 'two-keys' }, { priority: 50, rules: [{ name: 'big', match: { tools: ['abc*', 'ab*z'], arguments: [{ path: 'amount', operator: 'GreaterThan', values: ['100'] }] }, action: 'deny' }] });
    const warm = snapshot({}, agents, [...many, twoKeys]);
    const cold = snapshot({}, agents, [...many, twoKeys]);
    for (let round = 0; round < 3; round++) {
      for (const tool of ['abcz', 'abz', 'abc', 'xz', 'ab', 'other']) {
        for (const amount of [5, 500]) {
          const req = call('low', tool, { parameters: { amount } });
          cold.forgetMemos();
          const d = warm.evaluate(req);
          expect(d).toEqual(cold.evaluate(req));
          if (tool === 'abcz' || tool === 'abc') expect(d.decision).toBe(amount > 100 ? 'deny' : 'require_approval');
        }
      }
    }
    expect(warm.memoSizes().tools).toBe(6);
  });

  it('finds a rule filed under two keys of one tool name once, by the key that proves its glob', () => {
    const res = compilePolicy(guardPolicy({ name: 'p' }, { rules: [{ name: 'r', match: { tools: ['abc*', 'ab*z'], arguments: [{ path: 'amount', operator: 'GreaterThan', values: ['100'] }] }, action: 'deny' }] }), DEFAULT_ENGINE_OPTIONS);
    if (!res.ok) throw new Error(res.problem.message);
    const index = new RuleIndex(res.value);
    const found = [...index.toolCandidates('abcz')];
    expect(found).toHaveLength(1);
    expect(encoded.check(found[0]!)).toBe(Check.Arguments);
    // Under the key that does not prove alone, it is matched in full.
    expect([...index.toolCandidates('abxz')].map(encoded.check)).toEqual([Check.All]);
  });

  it('learns per call shape whether the caller conditions of a rule found by its tool hold', () => {
    // 40 rules, each found by its own tool name and conditioned on trust, a label, an action type
    // or arguments: what a call shape learns of one (2 bits per rule, 15 rules to a word) must
    // neither leak to another shape nor to a neighbouring rule.
    const conditions = [{ trustLevelBelow: 'medium' as const }, { trustLevelAtLeast: 'admin' as const }, { actionTypes: ['data_*'] }, { arguments: [{ path: 'amount', operator: 'GreaterThan' as const, values: ['100'] }] }];
    const policies = Array.from({ length: 40 }, (_, i) =>
      guardPolicy({ name: `p${String(i).padStart(2, '0')}` }, {
        ...(i % 5 === 4 ? { agentSelector: { matchLabels: { team: 'data' } } } : {}),
        rules: [{ name: 'r', match: { tools: [`tool_${i}`], ...conditions[i % 4] }, action: 'deny' }],
      }),
    );
    const snap = snapshot({}, agents, policies);
    const expected = (agentId: string, i: number, actionType: string, amount: number): string => {
      const rank = { low: 1, medium: 2, admin: 4 }[agentId]!;
      const holds = [rank < 2, rank >= 4, actionType.startsWith('data_'), amount > 100][i % 4]! && (i % 5 !== 4 || agentId === 'medium');
      return holds ? 'deny' : 'allow';
    };
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 40; i++) {
        for (const agentId of ['low', 'medium', 'admin']) {
          for (const actionType of ['tool_call', 'data_write']) {
            const amount = (i + round) % 2 === 0 ? 500 : 5;
            const d = snap.evaluate(call(agentId, `TOOL_${i}`, { actionType, parameters: { amount } }));
            expect(`${agentId} ${actionType} tool_${i} ${amount}: ${d.decision}`).toBe(`${agentId} ${actionType} tool_${i} ${amount}: ${expected(agentId, i, actionType, amount)}`);
          }
        }
      }
    }
  });

  it('refuses more rules than a candidate can number, rather than misorder them', () => {
    const tooMany: CompiledRule[] = [];
    tooMany.length = 2 ** 26; // sparse: nothing is allocated per rule
    expect(() => new RuleIndex(tooMany)).toThrow(/cannot be ordered/);
  });

  it.each([20, 40])('orders %i candidates found under one key by significance', (n) => {
    const many = Array.from({ length: n }, (_, i) => guardPolicy({ name: `p${String(i).padStart(2, '0')}` }, { priority: (i * 7) % n, rules: [{ name: 'r', match: { tools: i % 2 ? ['de*'] : ['*_x'] }, action: 'allow' }] }));
    const d = snapshot({}, agents, many).evaluate(call('low', 'de_x'));
    const expected = many.map((p) => ({ name: p.metadata.name, priority: p.spec.priority ?? 0 })).sort((a, b) => b.priority - a.priority || a.name.localeCompare(b.name));
    expect(d.matched.map((m) => m.policy)).toEqual(expected.map((p) => p.name));
  });

  it('lists matches most significant first and shares no mutable state between decisions', () => {
    const p1 = guardPolicy({ name: 'b' }, { priority: 5, rules: [{ name: 'x', match: { tools: ['de*'] }, action: 'allow' }, { name: 'y', match: { tools: ['*_x'] }, action: 'allow' }] });
    const p2 = guardPolicy({ name: 'a' }, { priority: 5, rules: [{ name: 'z', match: { tools: ['de_x'] }, action: 'allow' }] });
    const p3 = guardPolicy({ name: 'c' }, { priority: 9, rules: [{ name: 'w', match: { actionTypes: ['tool_*'] }, action: 'allow' }] });
    const snap = snapshot({}, agents, [p1, p2, p3]);
    const d = snap.evaluate(call('low', 'de_x'));
    expect(d.matched.map((m) => `${m.policy}/${m.rule}`)).toEqual(['c/w', 'a/z', 'b/x', 'b/y']);
    expect(Object.isFrozen(d.matched[0])).toBe(true);
    d.matched.pop();
    expect(snap.evaluate(call('low', 'de_x')).matched).toHaveLength(4);
  });
});
