/**
 * What an approval covers, and where it stands: pure functions over GuardApproval objects
 * (docs/decisions.md, "Approvals"). An approval binds exactly one agent, action type, target,
 * upstream and arguments digest; its phase is read through {@link phaseOf}, which also applies
 * the expiry, so a missed sweep never lets an old approval through.
 */
import { createHmac, createSecretKey, hash, type KeyObject } from 'node:crypto';
import { API_VERSION, type ApprovalPhase, type GuardApproval, type GuardApprovalSpec, type GuardPolicy } from '../api/schemas.js';
import { canonicalJson, newId, redactedCanonicalJson } from '../audit/record.js';
import { parseDuration } from '../duration.js';
import { printable } from '../printable.js';
import { namespacedName, type MatchedRule } from '../engine/types.js';

/** One call an agent wants to make, as far as an approval is concerned (context is not part of it). */
export interface Ask {
  agentId: string;
  actionType: string;
  target: string;
  upstream?: string;
  parameters: Readonly<Record<string, unknown>>;
}

/** Longest argumentsPreview kept in a GuardApproval (the CRD's bound). */
export const PREVIEW_MAX = 4096;

/**
 * The key arguments digests are made with, derived from the audit key (the chart gives every
 * replica the same one, so any replica matches an approval another asked for); undefined
 * without one. A digest an approver can read must be keyed: the preview beside it shows every
 * argument but the redacted ones, so a plain hash would let anyone test guesses of those.
 *
 * @example const key = digestKey(await readAuditKeyFile(path));
 */
export function digestKey(auditKey: KeyObject | undefined): KeyObject | undefined {
  // A key of its own (HMAC as a KDF with a fixed label): a digest is never an audit MAC.
  return auditKey && createSecretKey(createHmac('sha256', auditKey).update('policyguard approval arguments v1').digest());
}

/**
 * A digest of the canonical JSON of the arguments (key order and whitespace do not matter, any
 * value that does changes it): `hmac-sha256:` + hex under `key`, or without a key `sha256:` +
 * hex, which anyone who reads the approval can test guesses of redacted values against
 * (docs/decisions.md, "Approvals").
 *
 * @example argumentsDigest({ table: 'users' }, key) === argumentsDigest(JSON.parse('{ "table" : "users" }'), key) // true
 */
export function argumentsDigest(parameters: Readonly<Record<string, unknown>>, key: KeyObject | undefined): string {
  const text = canonicalJson(parameters);
  return key ? `hmac-sha256:${createHmac('sha256', key).update(text).digest('hex')}` : `sha256:${hash('sha256', text, 'hex')}`;
}

/**
 * The arguments an approver reads: canonical JSON with secret-looking keys redacted, control
 * and invisible characters written as JSON escapes (`kubectl get -o yaml` shows the stored
 * text as it is: a right-to-left override must not reorder what a person reads, and the text
 * is still the same JSON), cut to {@link PREVIEW_MAX} characters with a note of how much was
 * left out.
 *
 * @example argumentsPreview({ table: 'users', password: 'x' }) // '{"password":"[REDACTED]","table":"users"}'
 */
export function argumentsPreview(parameters: Readonly<Record<string, unknown>>): string {
  const text = printable(redactedCanonicalJson(parameters));
  if (text.length <= PREVIEW_MAX) return text;
  const note = ` … (${text.length} characters in all; the digest covers every one)`;
  return text.slice(0, PREVIEW_MAX - note.length) + note;
}

/** Why `spec` does not cover `ask` (the first difference), or undefined when it does. */
export function askMismatch(spec: GuardApprovalSpec, ask: Ask, digest: string): string | undefined {
  if (spec.agentId !== ask.agentId) return `it is for agent '${spec.agentId}', not '${ask.agentId}'`;
  if (spec.actionType !== ask.actionType) return `it is for action_type '${spec.actionType}', not '${ask.actionType}'`;
  if (spec.target !== ask.target) return `it is for target '${spec.target}', not '${ask.target}'`;
  if ((spec.upstream ?? '') !== (ask.upstream ?? '')) return `it is for upstream '${spec.upstream ?? '(none)'}', not '${ask.upstream ?? '(none)'}'`;
  if (spec.argumentsDigest !== digest) return `its arguments differ (approved ${spec.argumentsDigest}, asked ${digest})`;
  return undefined;
}

/** The rules an approval for these matches names: the Enforce require_approval ones that matched (at most 16, the CRD's bound). */
export function askingRules(matched: readonly MatchedRule[]): { policy: string; rule: string }[] {
  return matched
    .filter((m) => m.action === 'require_approval' && m.enforcement === 'Enforce')
    .slice(0, 16)
    .map((m) => ({ policy: m.namespace ? `${m.namespace}/${m.policy}` : m.policy, rule: m.rule }));
}

/**
 * Why an approval given for `spec.rules` does not cover a call that `asking` rules ask a person
 * about (one that was not asked when it was given, e.g. a stricter rule added since), or
 * undefined when it does. A rule that no longer asks takes nothing away.
 */
export function rulesMismatch(spec: GuardApprovalSpec, asking: readonly { policy: string; rule: string }[]): string | undefined {
  const given = new Set(spec.rules.map((r) => `${r.policy}\u0000${r.rule}`));
  const extra = asking.find((r) => !given.has(`${r.policy}\u0000${r.rule}`));
  if (!extra) return undefined;
  return `policy '${extra.policy}' rule '${extra.rule}' asks for approval too, and it was given for ${spec.rules.map((r) => `'${r.policy}' rule '${r.rule}'`).join(', ')} only`;
}

/**
 * The phase in force at `now`: an absent phase is Pending, and a Pending or Approved approval
 * past `spec.expiresAt` is Expired whether or not the sweep has written that yet.
 *
 * @example phaseOf(approval, new Date()) // 'Approved'
 */
export function phaseOf(approval: GuardApproval, now: Date): ApprovalPhase {
  const phase = approval.status?.phase ?? 'Pending';
  if ((phase === 'Pending' || phase === 'Approved') && !(Date.parse(approval.spec.expiresAt) > now.getTime())) return 'Expired';
  return phase;
}

/** `namespace/name`, or the name alone in standalone mode. */
export function approvalRef(approval: Pick<GuardApproval, 'metadata'>): string {
  return namespacedName(approval.metadata);
}

/**
 * How long the approval asked for by `matched` stays valid: the shortest `approval.ttl` of the
 * Enforce require_approval rules that matched, else `defaultMs`.
 */
export function approvalTtlMs(policies: readonly GuardPolicy[], matched: readonly MatchedRule[], defaultMs: number): number {
  let ttl: number | undefined;
  for (const m of matched) {
    if (m.action !== 'require_approval' || m.enforcement !== 'Enforce') continue;
    const policy = policies.find((p) => p.metadata.name === m.policy && p.metadata.namespace === m.namespace);
    const rule = policy?.spec.rules.find((r, i) => (r.name ?? `rule-${i}`) === m.rule);
    const ms = rule?.approval?.ttl !== undefined ? parseDuration(rule.approval.ttl) : undefined;
    if (ms !== undefined) ttl = Math.min(ttl ?? ms, ms);
  }
  return ttl ?? defaultMs;
}

export interface NewApproval {
  ask: Ask;
  /** {@link argumentsDigest} of `ask.parameters`. */
  digest: string;
  /** Where it lives: the agent's namespace (undefined in standalone mode). */
  namespace: string | undefined;
  matched: readonly MatchedRule[];
  message: string;
  revision: string;
  requestedBy: string;
  requesters: readonly string[];
  now: Date;
  ttlMs: number;
}

/**
 * A new Pending GuardApproval for `input.ask`, named `apr-` + 12 random hex.
 *
 * @example newApproval({ ask, namespace: 'team-a', matched, message: 'needs a DBA', revision: 'r1', requestedBy: 'system:serviceaccount:team-a:etl', requesters: [], now: new Date(), ttlMs: 3_600_000 })
 */
export function newApproval(input: NewApproval): GuardApproval {
  const { ask } = input;
  const rules = askingRules(input.matched);
  return {
    apiVersion: API_VERSION,
    kind: 'GuardApproval',
    metadata: { name: newId('apr-'), ...(input.namespace ? { namespace: input.namespace } : {}) },
    spec: {
      agentId: ask.agentId,
      actionType: ask.actionType,
      target: ask.target,
      ...(ask.upstream !== undefined ? { upstream: ask.upstream } : {}),
      argumentsDigest: input.digest,
      argumentsPreview: argumentsPreview(ask.parameters),
      rules,
      message: input.message.slice(0, 1024),
      revision: input.revision,
      requestedAt: input.now.toISOString(),
      expiresAt: new Date(input.now.getTime() + input.ttlMs).toISOString(),
      requestedBy: input.requestedBy,
      requesters: [...new Set([input.requestedBy, ...input.requesters])].slice(0, 32),
    },
    status: { phase: 'Pending' },
  };
}
