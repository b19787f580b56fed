/**
 * What the MCP gateway asks of the engine: rules that match on the upstream a call goes
 * through, and the decisions a tool could get whatever its arguments (its tools/list).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { guardAgent, guardPolicy } from '../api/builders.js';
import type { GuardPolicy } from '../api/schemas.js';
import { compilePolicy } from './compile.js';
import { PolicySnapshot } from './snapshot.js';
import { DEFAULT_ENGINE_OPTIONS, type DecisionKind, type EngineOptions } from './types.js';

const agents = [
  guardAgent({ name: 'bot' }, { trustLevel: 'medium', deniedTools: ['rm_*'] }),
  guardAgent({ name: 'picky' }, { allowedTools: ['read_*'] }),
  guardAgent({ name: 'frozen' }, { suspended: true }),
];
const policies: GuardPolicy[] = [
  guardPolicy({ name: 'github' }, { rules: [{ name: 'no-push', match: { tools: ['push_*'], upstreams: ['tools/github'] }, action: 'deny', message: 'no pushes to GitHub' }] }),
  guardPolicy({ name: 'refunds' }, { rules: [{ name: 'big', match: { tools: ['refund'], arguments: [{ path: 'amount', operator: 'GreaterThan', values: ['500'] }] }, action: 'require_approval' }] }),
  guardPolicy({ name: 'deploys' }, { rules: [{ name: 'always', match: { tools: ['deploy'] }, action: 'require_approval' }] }),
  guardPolicy({ name: 'tables' }, { rules: [{ name: 'users', match: { tools: ['drop_table'], arguments: [{ path: 'table', operator: 'In', values: ['users'] }] }, action: 'deny' }] }),
  guardPolicy({ name: 'audit' }, { enforcement: 'Audit', rules: [{ match: { tools: ['audited'] }, action: 'deny' }] }),
  guardPolicy({ name: 'reads' }, { rules: [{ match: { tools: ['read_*'] }, action: 'allow' }] }),
];
const snapshot = (opts: Partial<EngineOptions> = {}) => PolicySnapshot.compile({ agents, policies }, { ...DEFAULT_ENGINE_OPTIONS, ...opts });

describe('the upstreams condition', () => {
  const decide = (upstream: string | undefined, target = 'push_branch') =>
    snapshot().evaluate({ agentId: 'bot', actionType: 'tool_call', target, parameters: {}, ...(upstream ? { upstream } : {}) }).decision;
  it('matches the upstream a call goes through, case-insensitively', () => {
    expect(decide('tools/github')).toBe('deny');
    expect(decide('Tools/GitHub')).toBe('deny');
  });
  it('does not match another upstream, nor a call through none (validate_action)', () => {
    expect(decide('tools/gitlab')).toBe('allow');
    expect(decide(undefined)).toBe('allow');
  });
  it.each(['github', 'github?', 'git[h]ub', 'default/', '/github', '*/', '/*', 'default//github', 'tools/git/hub', '?github', 'a[!/]b', 'default/git[/-/]hub'])('a pattern no namespace/name can match (%s) is refused at load (InvalidPattern)', (pattern) => {
    const policy = guardPolicy({ name: 'gh' }, { rules: [{ match: { tools: ['push_*'], upstreams: [pattern] }, action: 'deny' }] });
    expect(compilePolicy(policy, DEFAULT_ENGINE_OPTIONS)).toMatchObject({
      ok: false,
      problem: { reason: 'InvalidPattern', message: `pattern ${JSON.stringify(pattern)} in upstreams matches no namespace/name, which is what upstreams are matched as (one "/" between two non-empty parts); write e.g. "default/github", or "*/github" for any namespace` },
    });
  });
  it.each(['*/github', 'tools/github', '*github', 'tools/git?ub', '*', 'tools?github', 'tools[/]github', 'a[!x]b', 'a[.-0]b', 'default/*', '*/*'])('a pattern some namespace/name can match (%s) loads', (pattern) => {
    const policy = guardPolicy({ name: 'gh' }, { rules: [{ match: { tools: ['push_*'], upstreams: [pattern] }, action: 'deny' }] });
    expect(compilePolicy(policy, DEFAULT_ENGINE_OPTIONS).ok).toBe(true);
  });
});

describe('possible decisions whatever the arguments (the gateway’s tools/list)', () => {
  const possible = (target: string, agentId = 'bot', opts: Partial<EngineOptions> = {}, upstream = 'tools/github') =>
    [...snapshot(opts).possibleDecisions({ agentId, actionType: 'tool_call', target, upstream })].sort();

  it.each<[string, string, DecisionKind[]]>([
    ['a deny without argument conditions', 'push_main', ['deny']],
    ['the agent’s deniedTools', 'rm_rf', ['deny']],
    ['a deny that depends on the arguments', 'drop_table', ['allow', 'deny']],
    ['an approval that depends on the arguments', 'refund', ['allow', 'require_approval']],
    ['an approval whatever the arguments', 'deploy', ['require_approval']],
    ['no rule: the default', 'anything', ['allow']],
    ['an Audit-mode rule changes nothing', 'audited', ['allow']],
  ])('%s', (_what, target, expected) => {
    expect(possible(target)).toEqual(expected);
  });
  it('a suspended agent and an allow-list deny for certain', () => {
    expect(possible('read_x', 'frozen')).toEqual(['deny']);
    expect(possible('write_x', 'picky')).toEqual(['deny']);
    expect(possible('read_x', 'picky')).toEqual(['allow']);
  });
  it('with default deny, only tools some rule allows can be allowed', () => {
    expect(possible('anything', 'bot', { defaultDecision: 'deny' })).toEqual(['deny']);
    expect(possible('read_x', 'bot', { defaultDecision: 'deny' })).toEqual(['allow']);
    expect(possible('refund', 'bot', { defaultDecision: 'deny' })).toEqual(['deny', 'require_approval']);
  });

  it('every decision a call actually gets is among the possible ones', () => {
    const targets = ['push_main', 'rm_rf', 'drop_table', 'refund', 'deploy', 'read_x', 'anything', 'audited'];
    const params = fc.record({ amount: fc.oneof(fc.integer(), fc.string(), fc.constant(undefined)), table: fc.oneof(fc.constantFrom('users', 'orders'), fc.constant(undefined)) });
    fc.assert(
      fc.property(fc.constantFrom(...targets), fc.constantFrom('bot', 'picky', 'frozen', 'stranger'), fc.constantFrom<'allow' | 'deny'>('allow', 'deny'), params, (target, agentId, defaultDecision, parameters) => {
        const snap = snapshot({ defaultDecision });
        const req = { agentId, actionType: 'tool_call', target, upstream: 'tools/github' };
        const got = snap.evaluate({ ...req, parameters: JSON.parse(JSON.stringify(parameters)) as Record<string, unknown> }).decision;
        expect(snap.possibleDecisions(req).has(got), `${agentId} ${target} ${JSON.stringify(parameters)} → ${got}`).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
