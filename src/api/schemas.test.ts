import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { PolicySnapshot } from '../engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from '../engine/types.js';
import { API_VERSION, GuardAgentSchema, GuardPolicySchema, GuardUpstreamSchema, RuleSchema, type GuardAgent, type GuardPolicy } from './schemas.js';
import { fromSeedRule, isSeedRule, SeedRuleSchema } from './seed.js';

const policy = (spec: unknown, metadata: unknown = { name: 'p' }) => GuardPolicySchema.safeParse({ apiVersion: API_VERSION, kind: 'GuardPolicy', metadata, spec });
const agent = (spec: unknown, metadata: unknown = { name: 'a' }) => GuardAgentSchema.safeParse({ apiVersion: API_VERSION, kind: 'GuardAgent', metadata, spec });

/** The issues of a failed parse as `path: message`. */
function issues(result: { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } }): string[] {
  expect(result.success).toBe(false);
  return result.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('spec schemas are strict: a typo is an error naming the key, never a dropped condition', () => {
  const rule = (r: Record<string, unknown>) => ({ rules: [{ action: 'allow', ...r }] });
  it.each([
    ['rule match', rule({ match: { params: [{ path: 'x', operator: 'Exists' }] } }), 'spec.rules.0.match: Unrecognized key: "params"'],
    ['rule match', rule({ match: { tool: ['read_*'] } }), 'spec.rules.0.match: Unrecognized key: "tool"'],
    ['rule', rule({ tools: ['read_*'] }), 'spec.rules.0: Unrecognized key: "tools"'],
    ['rule', rule({ mesage: 'hi' }), 'spec.rules.0: Unrecognized key: "mesage"'],
    ['argument condition', rule({ match: { arguments: [{ path: 'x', operator: 'In', value: ['a'] }] } }), 'spec.rules.0.match.arguments.0: Unrecognized key: "value"'],
    ['policy spec', { rules: [{ action: 'deny' }], enforcment: 'Audit' }, 'spec: Unrecognized key: "enforcment"'],
    ['label selector', { rules: [{ action: 'deny' }], agentSelector: { matchLabel: { team: 'x' } } }, 'spec.agentSelector: Unrecognized key: "matchLabel"'],
    ['selector expression', { rules: [{ action: 'deny' }], agentSelector: { matchExpressions: [{ key: 'team', operator: 'In', value: ['x'] }] } }, 'spec.agentSelector.matchExpressions.0: Unrecognized key: "value"'],
  ])('GuardPolicy: %s', (_where, spec, message) => {
    expect(issues(policy(spec))).toContain(message);
  });

  it.each([
    [{ trustLevelBelow: 'low' }, 'spec.rules.0.match: trustLevelBelow: low matches no agent (low is the lowest trust level); for low-trust agents write trustLevelBelow: medium'],
    [{ trustLevelBelow: 'medium', trustLevelAtLeast: 'high' }, 'spec.rules.0.match: trustLevelBelow must be above trustLevelAtLeast, or no agent can match'],
  ])('GuardPolicy: a trust range no agent is in (%j) is an error, not a rule that never applies', (match, message) => {
    expect(issues(policy(rule({ match })))).toContain(message);
    expect(policy(rule({ match: { trustLevelBelow: 'medium' } })).success).toBe(true);
  });

  it.each([
    ['agent spec', { allowedTool: ['read_*'] }, 'spec: Unrecognized key: "allowedTool"'],
    ['identity', { identities: [{ user: 'token:x', group: 'y' }] }, 'spec.identities.0: Unrecognized key: "group"'],
    ['service account', { identities: [{ serviceAccount: { namespace: 'n', name: 'x', uid: '1' } }] }, 'spec.identities.0.serviceAccount: Unrecognized key: "uid"'],
    ['rateLimit', { rateLimit: { requests: 5, per: '1m', burst: 10 } }, 'spec.rateLimit: Unrecognized key: "burst"'],
  ])('GuardAgent: %s', (_where, spec, message) => {
    expect(issues(agent(spec))).toContain(message);
  });

  const upstream = (spec: Record<string, unknown>) => GuardUpstreamSchema.safeParse({ apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name: 'u' }, spec });
  const URL_REFUSED = 'spec.url: url must be http:// or https://, a host name or [IPv6 address], an optional port, then printable ASCII (percent-encode anything else); no user:password@ (send credentials as headers)';
  it.each([
    ['a URL with a password', { url: 'http://bot:hunter2@github-mcp:8080/mcp' }, URL_REFUSED],
    ['a URL with a user', { url: 'https://bot@github-mcp/mcp' }, URL_REFUSED],
    ['another scheme', { url: 'file:///etc/passwd' }, URL_REFUSED],
    ['a backslash in the host (new URL() ends the host there: this goes to evil.example)', { url: 'http://evil.example\\.good.example/mcp' }, URL_REFUSED],
    ['a percent-escape in the host (decoded: evil.example)', { url: 'http://%65vil.example/mcp' }, URL_REFUSED],
    ['a host with characters no host has', { url: 'http://a<b|c/mcp' }, URL_REFUSED],
    ['an unclosed IPv6 address', { url: 'http://[::1:8080/mcp' }, URL_REFUSED],
    ['a port past 65535', { url: 'http://github-mcp:65536/mcp' }, URL_REFUSED],
    ['a port of six digits', { url: 'http://github-mcp:123456/mcp' }, URL_REFUSED],
    ['a namespace that is none', { url: 'http://x/mcp', allowedNamespaces: ['Team_B'] }, 'spec.allowedNamespaces.0: must be a namespace name, or * for every namespace'],
  ])('GuardUpstream: %s', (_where, spec, message) => {
    expect(issues(upstream(spec))).toContain(message);
  });

  // Every character JavaScript's \s matches, the C0 controls, DEL and a few beyond ASCII: in the host and in the path.
  const unprintable = [...Array.from({ length: 0x10000 }, (_, c) => String.fromCharCode(c)).filter((ch) => /\s/.test(ch)), '\0', '\x1b', '\x7f', '\x85', 'é', '\u200b', '😀'];
  it.each(unprintable.map((ch) => [JSON.stringify(ch), ch]))('GuardUpstream: a URL with %s in its host or path is refused', (_name, ch) => {
    expect(issues(upstream({ url: `http://git${ch}hub-mcp:8080/mcp` }))).toEqual([URL_REFUSED]);
    expect(issues(upstream({ url: `http://github-mcp:8080/m${ch}cp` }))).toEqual([URL_REFUSED]);
  });

  it.each(['http://github-mcp.tools:8080/mcp', 'https://[::1]:8443/mcp?x=a@b&y=%20#frag', "http://h/!$&'()*+,;=:~_-.%7E", 'http://10.0.0.7', 'http://[fe80::1%25eth0]:80/', 'http://my_svc.ns.svc.cluster.local./mcp', 'http://h:0/', 'http://h:65535/', 'http://h:59999/', 'http://h:64999/', 'http://h:65499/', 'http://h:65529/'])('GuardUpstream: %s is a URL', (url) => {
    expect(upstream({ url }).success).toBe(true);
  });

  it('GuardUpstream: an @ after the host is part of the path; allowedNamespaces defaults to none', () => {
    const parsed = upstream({ url: 'http://github-mcp:8080/mcp/@me?x=a@b' });
    expect(parsed.success).toBe(true);
    expect(parsed.data!.spec.allowedNamespaces).toEqual([]);
  });

  const EMPTY = 'an empty list matches no call, so the rule would never apply; list at least one value, or remove the condition';
  it.each([
    ['tools', { tools: [] }, `spec.rules.0.match.tools: ${EMPTY}`],
    ['actionTypes', { actionTypes: [] }, `spec.rules.0.match.actionTypes: ${EMPTY}`],
    ['agents', { agents: [] }, `spec.rules.0.match.agents: ${EMPTY}`],
    ['upstreams', { upstreams: [] }, `spec.rules.0.match.upstreams: ${EMPTY}`],
    ['arguments', { arguments: [] }, `spec.rules.0.match.arguments: ${EMPTY}`],
  ])('an empty %s list in a match is refused: a deny with it would deny nothing', (_field, match, message) => {
    expect(issues(policy({ rules: [{ action: 'deny', match }] }))).toEqual([message]);
  });

  it.each([
    ['In', []],
    ['NotIn', []],
    ['Exists', ['x']],
  ])('a selector expression %s with values %j is refused, as Kubernetes refuses it', (operator, values) => {
    expect(issues(policy({ rules: [{ action: 'deny' }], agentSelector: { matchExpressions: [{ key: 'team', operator, values }] } }))).toEqual([
      'spec.agentSelector.matchExpressions.0: values must be non-empty for In and NotIn and empty for Exists and DoesNotExist',
    ]);
  });

  it('metadata stays open to what the API server adds', () => {
    const parsed = policy({ rules: [{ action: 'deny' }] }, { name: 'p', managedFields: [{ manager: 'kubectl' }], finalizers: ['x'] });
    expect(parsed.success).toBe(true);
    expect(parsed.data!.metadata).toMatchObject({ managedFields: [{ manager: 'kubectl' }], finalizers: ['x'] });
  });
});

describe('seed rules', () => {
  it('an unknown key inside condition is an error naming it (a typo must not widen an allow rule)', () => {
    expect(issues(SeedRuleSchema.safeParse({ condition: { tool_pattern: 'read_*', trust_level_at_lest: 'high' }, action: 'allow' }))).toEqual([
      'condition: Unrecognized key: "trust_level_at_lest"',
    ]);
  });

  it('labels old clients send at the top level are accepted and change nothing', () => {
    const parsed = SeedRuleSchema.parse({ id: 'r1', name: 'reads', description: 'd', enabled: true, condition: { tool_pattern: 'read_*' }, action: 'allow' });
    expect(fromSeedRule(parsed)).toEqual({ action: 'allow', match: { tools: ['read_*'] } });
  });

  it('any other top-level key is an error naming it: a restriction in the wrong place must not be dropped', () => {
    // Ignored, this would allow launch_* to every agent.
    expect(issues(SeedRuleSchema.safeParse({ condition: { tool_pattern: 'launch_*' }, action: 'allow', agent_pattern: 'platform-admin' }))).toEqual([': Unrecognized key: "agent_pattern"']);
    expect(issues(SeedRuleSchema.safeParse({ condition: { action_type: 'x' }, tool_pattern: 'launch_*', action: 'allow' }))).toEqual([': Unrecognized key: "tool_pattern"']);
    // A misspelt action is no longer read as the default deny: it is named.
    expect(issues(SeedRuleSchema.safeParse({ condition: { tool_pattern: 'read_*' }, acton: 'allow' }))).toEqual([': Unrecognized key: "acton"']);
  });

  it('a disabled rule is refused, not silently enabled', () => {
    expect(issues(SeedRuleSchema.safeParse({ condition: { tool_pattern: 'read_*' }, action: 'allow', enabled: false }))).toEqual([
      'enabled: a rule cannot be disabled here (enabled: false); leave the rule out instead',
    ]);
  });

  it.each([
    ['drop_.*', '".*"'],
    ['^delete_*', '"^"'],
    ['delete_records?', '"?"'],
    ['drop_table$', '"$"'],
    ['purge_.+', '".+"'],
  ])('a tool_pattern written as the earlier project\'s regular expression (%s) is refused, not read as a glob that matches nothing meant', (pattern, token) => {
    expect(issues(SeedRuleSchema.safeParse({ condition: { tool_pattern: pattern }, action: 'deny' }))).toEqual([
      `condition.tool_pattern: tool_pattern ${JSON.stringify(pattern)} has ${token}, which the earlier project's regular expressions read otherwise than PolicyGuard's globs (* any run of characters, [abc] one of them, everything else literal); write it as a glob, e.g. "delete_*", and a dot you mean as [.] ("fs[.]*")`,
    ]);
  });

  it('glob-only tool_patterns are accepted as they are: a dot that is a literal dot, sets, stars', () => {
    for (const pattern of ['delete_*', 'fs.read_*', 'drop_[a-z]*', '*']) expect(fromSeedRule(SeedRuleSchema.parse({ condition: { tool_pattern: pattern }, action: 'deny' }))).toEqual({ action: 'deny', match: { tools: [pattern] } });
  });

  it.each([
    [{ trust_level_below: 'medium', trust_level_at_least: 'admin' }, 'admin'],
    [{ trust_level_below: 'medium', trust_level_at_least: 'high' }, 'high'],
    [{ trust_level_below: 'admin', trust_level_at_least: 'medium' }, 'admin'],
    [{ trust_level_at_least: 'high' }, 'high'],
  ] as const)('a deny rule with trust conditions %j fires for agents below the higher: %s', (condition, below) => {
    for (const action of ['deny', 'require_approval'] as const) {
      expect(fromSeedRule(SeedRuleSchema.parse({ condition: { tool_pattern: 'purge_*', ...condition }, action }))).toEqual({ action, match: { tools: ['purge_*'], trustLevelBelow: below } });
    }
  });

  it('a misspelt condition is read as a GuardPolicy rule, which refuses it (it used to be an allow-everything rule)', () => {
    const raw = { conditon: { tool_pattern: 'read_*' }, action: 'allow' };
    expect(isSeedRule(raw)).toBe(false);
    expect(issues(RuleSchema.safeParse(raw))).toEqual([': Unrecognized key: "conditon"']);
  });
});

describe('starter manifests and fixtures', () => {
  const dirs = ['config-samples', 'tests/fixtures'];
  const repo = new URL('../../', import.meta.url);

  async function yamlFiles(dir: string): Promise<string[]> {
    const entries = await readdir(new URL(dir, repo), { recursive: true });
    return entries.filter((f) => /\.ya?ml$/.test(f)).map((f) => `${dir}/${f}`);
  }

  it('still parse with the strict schemas and compile without problems', async () => {
    const agents: GuardAgent[] = [];
    const policies: GuardPolicy[] = [];
    for (const file of (await Promise.all(dirs.map(yamlFiles))).flat()) {
      for (const doc of parseAllDocuments(await readFile(new URL(file, repo), 'utf8'))) {
        const value = doc.toJS() as { apiVersion?: string; kind?: string } | null;
        if (value?.apiVersion !== API_VERSION) continue;
        const schema = { GuardAgent: GuardAgentSchema, GuardPolicy: GuardPolicySchema, GuardUpstream: GuardUpstreamSchema }[value.kind as string];
        expect(schema, `${file}: kind ${value.kind}`).toBeDefined();
        const parsed = schema!.safeParse(value);
        expect(parsed.success ? [] : parsed.error.issues, file).toEqual([]);
        if (parsed.data?.kind === 'GuardAgent') agents.push(parsed.data);
        else if (parsed.data?.kind === 'GuardPolicy') policies.push(parsed.data);
      }
    }
    expect(policies.length).toBeGreaterThan(0);
    const snap = PolicySnapshot.compile({ agents, policies }, { ...DEFAULT_ENGINE_OPTIONS, clusterPolicyNamespace: 'policyguard' });
    // One agent id may be claimed in two files (a Conflict); nothing else may be wrong.
    expect(snap.problems.filter((p) => p.reason !== 'Conflict')).toEqual([]);
  });
});
