/**
 * A generated, reproducible policy set of a given size and a stream of requests against it.
 *
 * The mix is what a real installation looks like: most rules name tools exactly or by a
 * service prefix (`crm3_delete_*`), some by suffix (`*_drop_table`), some add argument
 * conditions; a few broad ones (`*_production`, every `data_write`, every `etl-*` agent) grow
 * with the square root of the rule count; several agents at every
 * trust level (some restricted, one suspended), label selectors, Audit and Disabled policies.
 * Requests hit exact names, prefixes, suffixes and unknown tools, from known and unknown agents.
 */
import type { GuardAgent, GuardPolicy, Rule, TrustLevel } from '../../src/api/schemas.js';
import { guardAgent, guardPolicy } from '../../src/api/builders.js';
import type { ActionRequest } from '../../src/engine/types.js';

/** mulberry32: small, fast, good enough for workload generation. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SERVICES = ['crm', 'billing', 'warehouse', 'mail', 'k8s', 'github', 'slack', 's3', 'jira', 'hr', 'payments', 'search'];
const VERBS = ['get', 'list', 'read', 'query', 'create', 'update', 'delete', 'drop', 'export', 'send', 'deploy', 'truncate'];
const OBJECTS = [
  'customer', 'invoice', 'table', 'report', 'email', 'user', 'secret', 'pod', 'repo', 'issue', 'file', 'bucket',
  'order', 'refund', 'ticket', 'payroll', 'contract', 'index', 'message', 'channel', 'deployment', 'cluster',
  'backup', 'record', 'schema', 'view', 'job', 'queue', 'topic', 'key',
];
const ENVS = ['production', 'staging', 'dev'];
const TEAMS = ['data', 'support', 'platform', 'web', 'ml'];
const TRUST: TrustLevel[] = ['low', 'medium', 'high', 'admin'];
const TABLES = ['users', 'payments', 'orders', 'events', 'logs'];
const EMAILS = ['team@example.com', 'reports@example.com', 'someone@external.com', 'ceo@partner.org'];

export interface Workload {
  rules: number;
  agents: GuardAgent[];
  policies: GuardPolicy[];
  requests: ActionRequest[];
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

/** Services scale with the rule count so a large installation has many distinct tools. */
function serviceNames(rules: number): string[] {
  const count = Math.max(SERVICES.length, Math.round(rules / 25));
  return Array.from({ length: count }, (_, i) => `${SERVICES[i % SERVICES.length]}${Math.floor(i / SERVICES.length) || ''}`);
}

/**
 * `ruleCount` rules in policies of up to 10 rules, 40 agents (plus 10% unknown callers), and
 * `requestCount` requests.
 */
export function generateWorkload(ruleCount: number, requestCount = 4096, seed = 7): Workload {
  const r = rng(seed + ruleCount);
  const services = serviceNames(ruleCount);
  const tool = () => `${pick(r, services)}_${pick(r, VERBS)}_${pick(r, OBJECTS)}`;

  const agents: GuardAgent[] = [];
  for (let i = 0; i < 40; i++) {
    const restricted = i % 10 === 3;
    agents.push(
      guardAgent(
        { name: `agent-${i}`, labels: { team: TEAMS[i % TEAMS.length]! } },
        {
          agentId: i % 4 === 0 ? `etl-${i}` : `agent-${i}`,
          trustLevel: TRUST[i % TRUST.length]!,
          suspended: i === 17,
          ...(restricted ? { allowedTools: [`${pick(r, services)}_*`, '*_read_*', 'query_*'] } : {}),
          ...(i % 5 === 1 ? { deniedTools: [`*_drop_*`, `${pick(r, services)}_delete_*`] } : {}),
        },
      ),
    );
  }

  const exactTools: string[] = [];
  // Broad rules (every production tool, every data_write, every etl-* agent) are few: their
  // number grows with the square root of the rule count, not with it.
  const broad = Math.min(0.01, 0.5 / Math.sqrt(ruleCount));
  const ruleFor = (index: number): Rule => {
    const kind = r();
    const action = r() < 0.4 ? 'deny' : r() < 0.33 ? 'require_approval' : 'allow';
    const match: Rule['match'] = {};
    if (kind < broad) {
      match.tools = [`*_${pick(r, ENVS)}`];
    } else if (kind < 2 * broad) {
      match.actionTypes = ['data_write'];
    } else if (kind < 3 * broad) {
      match.agents = ['etl-*'];
    } else if (kind < 0.4) {
      const names = Array.from({ length: 1 + Math.floor(r() * 3) }, tool);
      exactTools.push(...names);
      match.tools = names;
    } else if (kind < 0.7) {
      match.tools = r() < 0.7 ? [`${pick(r, services)}_${pick(r, VERBS)}_*`] : [`${pick(r, services)}_*`];
    } else if (kind < 0.85) {
      match.tools = [`*_${pick(r, VERBS)}_${pick(r, OBJECTS)}`];
    } else {
      match.tools = r() < 0.5 ? [tool()] : [`${pick(r, services)}_${pick(r, VERBS)}_*`];
      const which = r();
      match.arguments = [
        which < 0.33
          ? { path: 'amount', operator: 'GreaterThan', values: [String(100 * (1 + Math.floor(r() * 10)))] }
          : which < 0.66
            ? { path: 'table', operator: 'In', values: [pick(r, TABLES), pick(r, TABLES)] }
            : { path: 'to', operator: 'Glob', values: ['*@external.com', '*@partner.*'] },
      ];
    }
    if (action === 'deny' && r() < 0.5) match.trustLevelBelow = pick(r, ['medium', 'high', 'admin'] as const);
    if (action === 'allow' && r() < 0.2) match.trustLevelAtLeast = pick(r, ['low', 'medium'] as const);
    return { name: `r${index}`, match, action, ...(r() < 0.7 ? { message: `rule ${index}: ${action} by policy` } : {}) };
  };

  const policies: GuardPolicy[] = [];
  for (let p = 0, made = 0; made < ruleCount; p++) {
    const n = Math.min(10, ruleCount - made);
    const rules = Array.from({ length: n }, (_, i) => ruleFor(made + i));
    made += n;
    const e = r();
    policies.push(
      guardPolicy(
        { name: `policy-${p}` },
        {
          enforcement: e < 0.05 ? 'Audit' : e < 0.07 ? 'Disabled' : 'Enforce',
          priority: Math.floor(r() * 1000),
          ...(r() < 0.2 ? { agentSelector: { matchLabels: { team: pick(r, TEAMS) } } } : {}),
          rules,
        },
      ),
    );
  }

  const requests: ActionRequest[] = [];
  for (let i = 0; i < requestCount; i++) {
    const t = r();
    const target =
      t < 0.45 ? tool() : t < 0.6 ? pick(r, exactTools.length ? exactTools : [tool()]) : t < 0.8 ? `legacy_${pick(r, VERBS)}_${pick(r, OBJECTS)}` : t < 0.85 ? `deploy_${pick(r, ENVS)}` : `tool_${Math.floor(r() * 1e6)}`;
    const agent = r() < 0.9 ? pick(r, agents) : undefined;
    requests.push({
      agentId: agent ? (agent.spec.agentId ?? agent.metadata.name) : `anon-${Math.floor(r() * 100)}`,
      actionType: r() < 0.8 ? 'tool_call' : pick(r, ['data_read', 'data_write']),
      target: r() < 0.1 ? target.toUpperCase() : target,
      parameters: { amount: Math.floor(r() * 2000), table: pick(r, TABLES), to: pick(r, EMAILS), options: { env: pick(r, ENVS) } },
    });
  }
  return { rules: ruleCount, agents, policies, requests };
}
