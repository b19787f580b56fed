/**
 * Who a caller acts as (docs/decisions.md, "Identity"). Pure: reads a snapshot and the
 * authorizer's bindings, decides, and says why.
 */
import { createHash } from 'node:crypto';
import { LABEL_AUTO_REGISTERED, type GuardAgent, type TrustLevel } from '../api/schemas.js';
import { guardAgent, objectNameFor } from '../api/builders.js';
import { SYSTEM_AGENT_ID } from '../audit/audit-incidents.js';
import type { Principal } from '../auth/authenticate.js';
import type { Authorizer } from '../auth/authorize.js';
import type { IncidentRecord } from '../audit/incident-file.js';
import type { CompiledAgent } from '../engine/compile.js';
import { foldCase } from '../engine/glob.js';
import type { PolicySnapshot } from '../engine/snapshot.js';

/** What an agent id no GuardAgent claims gets: a deny, or an evaluation as an unregistered agent. */
export type UnknownAgents = 'deny' | 'evaluate';

/** An incident a decision raises, about `agentId`. */
export interface IncidentSpec {
  type: IncidentRecord['type'];
  severity: IncidentRecord['severity'];
  agentId: string;
  evidence: Record<string, unknown>;
}

/** An identity refusal: the decision is a deny by this agent-level rule, with this incident. */
export interface Refusal {
  rule: 'identities' | 'unknownAgents';
  reason: string;
  incident: IncidentSpec;
}

/**
 * The agent to evaluate (with the namespace an unregistered one is evaluated in), a refusal
 * (still evaluated, then denied), or a request error.
 */
export type Identity = { ok: true; agentId: string; unknownAgentNamespace?: string } | { ok: false; agentId: string; refusal: Refusal } | { ok: false; error: string };

/**
 * Where objects written for `principal` go, and the namespace its unregistered agents are
 * judged in: a ServiceAccount's own namespace, else the store's (undefined in standalone mode).
 */
export function namespaceFor(principal: Principal, writeNamespace: string | undefined): string | undefined {
  return writeNamespace === undefined ? undefined : (principal.serviceAccount?.namespace ?? writeNamespace);
}

/** The `spec.identities` entry that names this caller. */
export function identityOf(p: Principal): NonNullable<GuardAgent['spec']['identities']>[number] {
  return p.serviceAccount ? { serviceAccount: p.serviceAccount } : { user: p.subject };
}

/**
 * The object name of an auto-registered agent: {@link objectNameFor}, with its short hash
 * appended even when the id is already a valid name. A caller chooses the id, so the object
 * must not carry a name a person would give the agent: a GuardAgent written later under that
 * name would edit (kubectl apply) or be overridden by (the standalone data dir) the caller's
 * object instead of winning over it (docs/decisions.md, "Identity").
 *
 * @example autoRegisteredName('deploy-bot') // 'deploy-bot-' + 6 hex characters
 */
export function autoRegisteredName(agentId: string): string {
  const name = objectNameFor(agentId);
  return name === agentId ? `${name}-${createHash('sha256').update(agentId).digest('hex').slice(0, 6)}` : name;
}

/** A minimal auto-registered GuardAgent for an unknown id, or undefined when the id cannot be one. */
export function autoRegisteredAgent(agentId: string, namespace: string | undefined, trustLevel: TrustLevel, identities: GuardAgent['spec']['identities']): GuardAgent | undefined {
  try {
    return guardAgent(
      { name: autoRegisteredName(agentId), ...(namespace ? { namespace } : {}), labels: { [LABEL_AUTO_REGISTERED]: 'true' } },
      { agentId, displayName: `Auto-registered: ${agentId}`.slice(0, 253), trustLevel, ...(identities ? { identities } : {}) },
    );
  } catch {
    return undefined;
  }
}

/** Agents in force by their id under the engine's case folding, built once per (immutable) snapshot. */
const byFoldedId = new WeakMap<PolicySnapshot, Map<string, CompiledAgent[]>>();

/**
 * The registered agents whose id equals `agentId` under the engine's case folding
 * (`foldCase`, as `agents:` globs compare) without being identical to it. An `agents:` rule
 * written for one of them matches such an id too, so it is refused rather than evaluated,
 * auto-registered or registered (docs/decisions.md, "Identity").
 *
 * @example caseTwins(snapshot, 'PLATFORM-ADMIN').map((a) => a.id) // ['platform-admin']
 */
export function caseTwins(snapshot: PolicySnapshot, agentId: string): CompiledAgent[] {
  let index = byFoldedId.get(snapshot);
  if (!index) {
    index = new Map();
    for (const a of snapshot.agents()) {
      const key = foldCase(a.id);
      const list = index.get(key);
      if (list) list.push(a);
      else index.set(key, [a]);
    }
    byFoldedId.set(snapshot, index);
  }
  return (index.get(foldCase(agentId)) ?? []).filter((a) => a.id !== agentId);
}

/** A refused identity: the rule that refused it, why, and the incident to record. */
function refusal(agentId: string, rule: Refusal['rule'], reason: string, incident: IncidentSpec): Identity {
  return { ok: false, agentId, refusal: { rule, reason, incident } };
}

/**
 * Which agent `principal` acts as. A registered agent must list the caller in
 * `spec.identities` (anyone under `--auth none`). A caller bound to agents may act only as
 * them, and may omit `agentId` when it is bound to exactly one. An id that differs only in case
 * from a registered agent's is refused (see {@link caseTwins}). An id no GuardAgent claims is
 * refused under `--unknown-agents deny`; under `evaluate` it is judged as an unregistered agent
 * in the caller's namespace.
 *
 * @example resolveIdentity({ authorizer, snapshot, principal, agentId: 'etl', unknownAgents: 'deny', writeNamespace: 'team-a' })
 */
export function resolveIdentity(input: {
  authorizer: Authorizer;
  snapshot: PolicySnapshot;
  principal: Principal;
  agentId: string | undefined;
  unknownAgents: UnknownAgents;
  writeNamespace: string | undefined;
}): Identity {
  const { authorizer, snapshot, principal, agentId } = input;
  const subject = principal.subject;
  const bound = authorizer.boundAgents(principal, snapshot);
  if (!agentId) {
    if (bound.length === 1) return { ok: true, agentId: bound[0]!.id };
    if (!authorizer.enforcing) return { ok: false, error: 'agent_id is required' };
    return { ok: false, error: `agent_id is required: caller '${subject}' is bound to ${bound.length} agents${bound.length > 1 ? ` (${bound.map((a) => a.id).join(', ')})` : ''}` };
  }
  const agent = snapshot.agent(agentId);
  const boundIds = bound.map((a) => a.id);
  if (agent) {
    if (authorizer.mayActAs(principal, agent)) return { ok: true, agentId };
    // The incident concerns the agent the caller really is, when it is one: not the one it claimed.
    return refusal(agentId, 'identities', `Caller '${subject}' is not bound to agent '${agentId}' (identity mismatch)`, {
      type: 'identity_mismatch',
      severity: 'high',
      agentId: boundIds[0] ?? agentId,
      evidence: { caller: subject, claimed_agent: agentId, bound_agents: boundIds },
    });
  }
  const twins = caseTwins(snapshot, agentId);
  if (twins.length > 0) {
    // Refused as a claim of that agent would be; the incident concerns the caller's own agent
    // (else the id it sent), not the agent it resembles.
    const named = twins.map((a) => `'${a.id}'`).join(', ');
    const own = twins.find((a) => authorizer.mayActAs(principal, a));
    const why = own ? `send its exact id '${own.id}'` : `caller '${subject}' is not bound to ${twins.length > 1 ? 'them' : 'it'} (identity mismatch)`;
    return refusal(agentId, 'identities', `Agent '${agentId}' is not registered and differs only in case from registered agent${twins.length > 1 ? 's' : ''} ${named}; ${why}`, {
      type: 'identity_mismatch',
      severity: 'high',
      agentId: boundIds[0] ?? agentId,
      evidence: { caller: subject, claimed_agent: agentId, registered_agents: twins.map((a) => a.id), bound_agents: boundIds },
    });
  }
  if (foldCase(agentId) === foldCase(SYSTEM_AGENT_ID)) {
    const which = agentId === SYSTEM_AGENT_ID ? `'${SYSTEM_AGENT_ID}' is` : `'${agentId}' differs only in case from '${SYSTEM_AGENT_ID}',`;
    return refusal(agentId, 'identities', `${which} PolicyGuard's own id (its administrative audit records); no caller acts as it`, {
      type: 'identity_mismatch',
      severity: 'high',
      agentId: boundIds[0] ?? agentId,
      evidence: { caller: subject, claimed_agent: agentId, bound_agents: boundIds },
    });
  }
  if (bound.length > 0) {
    // The incident concerns the agent the caller really is: that is where its Event goes.
    return refusal(agentId, 'identities',
      `Caller '${subject}' is bound to ${boundIds.map((id) => `'${id}'`).join(', ')} and may act only as ${bound.length > 1 ? 'them' : 'it'}; '${agentId}' is not registered (identity mismatch)`,
      { type: 'identity_mismatch', severity: 'high', agentId: boundIds[0]!, evidence: { caller: subject, claimed_agent: agentId, bound_agents: boundIds } },
    );
  }
  if (input.unknownAgents === 'deny') {
    return refusal(agentId, 'unknownAgents',
      `Agent '${agentId}' is not registered and caller '${subject}' is bound to no GuardAgent; unregistered agents are denied (--unknown-agents deny)`,
      { type: 'unauthorized_access', severity: 'medium', agentId, evidence: { caller: subject, claimed_agent: agentId } },
    );
  }
  const namespace = namespaceFor(principal, input.writeNamespace);
  return { ok: true, agentId, ...(namespace ? { unknownAgentNamespace: namespace } : {}) };
}
