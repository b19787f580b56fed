/**
 * Build GuardAgent / GuardPolicy objects with defaults applied (parsed through the schemas, so
 * what comes out is exactly what the API server or the standalone store would hold).
 */
import { createHash } from 'node:crypto';
import {
  API_VERSION,
  GuardAgentSchema,
  GuardPolicySchema,
  type GuardAgent,
  type GuardPolicy,
  type ObjectMeta,
} from './schemas.js';
import type { z } from 'zod';
import type { PolicySnapshot } from '../engine/snapshot.js';

type MetaInput = Pick<ObjectMeta, 'name'> & Partial<Omit<ObjectMeta, 'name'>>;

/** @example guardAgent({ name: 'etl' }, { trustLevel: 'medium' }) */
export function guardAgent(metadata: MetaInput, spec: z.input<typeof GuardAgentSchema>['spec'] = {}): GuardAgent {
  return GuardAgentSchema.parse({ apiVersion: API_VERSION, kind: 'GuardAgent', metadata, spec });
}

/** @example guardPolicy({ name: 'no-deletes' }, { rules: [{ action: 'deny', match: { tools: ['delete_*'] } }] }) */
export function guardPolicy(metadata: MetaInput, spec: z.input<typeof GuardPolicySchema>['spec']): GuardPolicy {
  return GuardPolicySchema.parse({ apiVersion: API_VERSION, kind: 'GuardPolicy', metadata, spec });
}

/**
 * A valid metadata.name for a free-form id (agent_id, policy_id): lowercased, other characters
 * turned into '-', and a short hash appended whenever that changed the id. Distinct ids can
 * still meet on one name (an id may be another's name, and 6 hex characters can be matched):
 * writers check {@link agentNamed} before creating.
 *
 * @example objectNameFor('ETL_Agent') // 'etl-agent-5c1f0a'
 */
export function objectNameFor(id: string): string {
  const cleaned = id
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
    .slice(0, 200);
  if (cleaned === id && cleaned.length > 0) return id;
  const hash = createHash('sha256').update(id).digest('hex').slice(0, 6);
  return cleaned.length > 0 ? `${cleaned}-${hash}` : `id-${hash}`;
}

/**
 * The id of the agent whose GuardAgent object is `namespace/name` in `snapshot`, if any: a new
 * agent written under that name would replace it.
 *
 * @example agentNamed(snapshot, undefined, 'ops-bot-3bf713') // 'Ops_Bot'
 */
export function agentNamed(snapshot: PolicySnapshot, namespace: string | undefined, name: string): string | undefined {
  for (const a of snapshot.agents()) if (a.name === name && (a.namespace ?? '') === (namespace ?? '')) return a.id;
  return undefined;
}
