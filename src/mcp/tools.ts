/**
 * The six tools' behaviour, independent of the MCP transport. Each handler takes parsed
 * arguments and the caller's context and returns a {@link ToolOutcome}; ./server.ts turns it
 * into an MCP result. The same handlers serve both modes: only the store behind them differs.
 */
import { MAX_JSON_DEPTH, nestedDeeperThan, refusedJson, tooDeepText } from '../json-limits.js';
import { z } from 'zod';
import { agentNamed, guardAgent, guardPolicy, objectNameFor } from '../api/builders.js';
import { SYSTEM_AGENT_ID } from '../audit/audit-incidents.js';
import { isSeedRule, fromSeedRule, SeedRuleSchema } from '../api/seed.js';
import { LABEL_AUTO_REGISTERED, RuleSchema, TRUST_LEVELS, trustRank, TrustLevelSchema, type GuardAgent, type GuardPolicy, type Rule } from '../api/schemas.js';
import { ANONYMOUS, type Principal } from '../auth/authenticate.js';
import { ConcurrencyLimit } from '../auth/rate-limit.js';
import { DURATION_HINT, parseDuration } from '../duration.js';
import type { AuditEntryInput, AuditEvaluation } from '../audit/record.js';
import { agentInScope, aggregateDecisions, complianceLevel, complianceMetrics } from '../audit/compliance.js';
import type { IncidentLog } from '../audit/incident-file.js';
import { AuditRecordTamperedError, type AuditScope, type AuditSink } from '../audit/sink.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { namespacedName } from '../engine/types.js';
import { DecisionPipeline, type PipelineDeps } from '../decide/pipeline.js';
import { caseTwins } from '../decide/identity.js';
import { formatZodError } from '../store/manifests.js';
import { StoreChangedError, StoreConflictError } from '../store/store.js';
import {
  INCIDENT_TYPES,
  SEVERITIES,
  type CreatePolicyArgs,
  type CreatePolicyResult,
  type GetAuditLogArgs,
  type GetAuditLogResult,
  type GetComplianceStatusArgs,
  type GetComplianceStatusResult,
  type RegisterAgentArgs,
  type RegisterAgentResult,
  type ReportIncidentArgs,
  type ReportIncidentResult,
  type ValidateActionArgs,
  type ValidateActionResult,
} from './schemas.js';

/**
 * A tool's answer. `ok: false` is a clear, specific failure: `value`, when present, is the
 * seed-shaped failure object (e.g. `{success: false, message}`), otherwise `error` is the text.
 */
export type ToolOutcome<T> = { ok: true; value: T } | { ok: false; error: string; value?: T };

export interface CallContext {
  /** The authenticated caller ("anonymous" under `--auth none`). */
  principal: Principal;
}

/** What the tools need: the pipeline's dependencies (validate_action is the pipeline). */
export type ToolDeps = PipelineDeps;

/** What an audit read sees ({@link Tools.readAudit}): the caller's scope (undefined: everything) and where to read. */
export interface AuditRead {
  scope: AuditScope | undefined;
  snapshot: PolicySnapshot;
  audit: AuditSink;
  incidents: IncidentLog;
}

/** The most evidence kept with one incident (JSON bytes): incidents are read whole by compliance queries. */
const EVIDENCE_MAX_BYTES = 16_384;

const fail = <T>(error: string, value?: T): ToolOutcome<T> => (value === undefined ? { ok: false, error } : { ok: false, error, value });

/** Decode a parameter the seed passed as a JSON string; real JSON values pass through. */
function decodeJson<T>(raw: unknown, field: string, schema: z.ZodType<T>, fallback: T): { ok: true; value: T } | { ok: false; error: string } {
  if (raw === undefined || raw === '') return { ok: true, value: fallback };
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch (err) {
      return { ok: false, error: `${field} is not valid JSON: ${(err as Error).message}` };
    }
    // JSON inside a string gets the limits the request body got at the edge (src/json-limits.ts).
    const refused = refusedJson(raw);
    if (refused !== undefined) return { ok: false, error: `${field}: ${refused}` };
    if (nestedDeeperThan(value, MAX_JSON_DEPTH)) return { ok: false, error: `${field}: ${tooDeepText()}` };
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: `${field}: ${formatZodError(parsed.error)}` };
}

// Built once: constructing a zod schema costs ~14 µs, more than a whole decision.
const JsonObject = z.record(z.string(), z.unknown());
const StringList = z.array(z.string());
const AnyList = z.array(z.unknown());

/** "24h" → the cutoff date; undefined when malformed (src/duration.ts). */
export function parseTimeRange(range: string, now: Date): Date | undefined {
  const ms = parseDuration(range);
  return ms === undefined ? undefined : new Date(Math.max(0, now.getTime() - ms));
}

/** The id create_policy and get_compliance_status know a policy by: the one it was created with, else its name. */
const policyIdOf = (p: GuardPolicy): string => p.metadata.annotations?.['policyguard.dev/policy-id'] ?? p.metadata.name;

/** Audit reads answered at once, and queued behind them; more are refused (retry later). */
const READS_RUNNING = 2;
const READS_WAITING = 16;
/** Audit reads one caller may have running or waiting: one caller cannot fill the queue everyone waits in. */
const READS_PER_CALLER = 2;
/**
 * Most bytes of entries one get_audit_log answer holds (the first entry always: one record is
 * at most 4 MiB). Up to 1,000 entries of ~1 MB arguments each ran the server out of memory.
 */
const AUDIT_ANSWER_MAX_BYTES = 8 * 1024 * 1024;

/** How a scoped read describes its scope in `filters_applied`. */
const scopeFilter = (scope: AuditScope) => `scope=own agents (${[...scope.agentIds].join(', ') || 'none'}) and own calls`;

const TIME_RANGE_ERROR = (r: string) => `time_range ${JSON.stringify(r)} is not understood; ${DURATION_HINT}`;

const adminEvaluation = (reason: string): AuditEvaluation => ({
  allowed: true,
  decision: 'allow',
  require_approval: false,
  reason,
  matched: [],
  audit_findings: [],
});

export class Tools {
  /** The decision pipeline validate_action calls (and, through serve.ts, every other adapter). */
  readonly pipeline: DecisionPipeline;
  private readonly reads = new ConcurrencyLimit(READS_RUNNING, READS_WAITING);
  /** Audit reads running or waiting, by caller (READS_PER_CALLER). */
  private readonly readsByCaller = new Map<string, number>();
  private readonly now: () => Date;

  constructor(private readonly deps: ToolDeps) {
    this.now = deps.now ?? (() => new Date());
    this.pipeline = new DecisionPipeline(deps);
  }

  /** Why an administrative change must not be made now: the audit log could not record it (closed mode). */
  private auditUnavailable(): string | undefined {
    const why = this.deps.audit.available();
    return why === undefined ? undefined : `audit log unavailable: ${why}; nothing was changed`;
  }

  /** Audit a change that was made. Checked with {@link auditUnavailable} first; a refusal in between is logged loudly. */
  private auditAdmin(type: string, target: string, parameters: Record<string, unknown>, reason: string, ctx: CallContext): void {
    const entry: AuditEntryInput = {
      action_id: null,
      agent_id: SYSTEM_AGENT_ID,
      caller: ctx.principal.subject,
      action: { type, target, parameters, context: '' },
      evaluation: adminEvaluation(reason),
      revision: this.deps.store.snapshot().revision,
    };
    const appended = this.deps.audit.append(entry);
    if (!appended.ok) this.deps.log.error('an administrative change was made but its audit record was refused', { type, target, caller: ctx.principal.subject, reason: appended.reason });
  }

  /** A write to the store, with a conflict over fields another manager owns as a tool error (docs/decisions.md). */
  private async applyOrConflict<T>(write: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
    try {
      return { ok: true, value: await write() };
    } catch (err) {
      if (err instanceof StoreConflictError || err instanceof StoreChangedError) return { ok: false, error: err.message };
      throw err;
    }
  }

  // ---- validate_action ------------------------------------------------------------------------

  async validateAction(args: ValidateActionArgs, ctx: CallContext): Promise<ToolOutcome<ValidateActionResult>> {
    if (!args.target) return fail('target is required');
    if (!args.action_type) return fail('action_type is required');
    const params = decodeJson(args.parameters, 'parameters', JsonObject, {});
    if (!params.ok) return fail(params.error);
    const out = await this.pipeline.decide({
      principal: ctx.principal,
      agentId: args.agent_id || undefined,
      actionType: args.action_type,
      target: args.target,
      parameters: params.value,
      context: args.context ?? '',
      ...(args.approval_id ? { approvalId: args.approval_id } : {}),
    });
    return out.ok ? { ok: true, value: out.decision } : fail(out.error);
  }

  // ---- register_agent -------------------------------------------------------------------------

  async registerAgent(args: RegisterAgentArgs, ctx: CallContext): Promise<ToolOutcome<RegisterAgentResult>> {
    const answer = (success: boolean, message: string, warnings: string[] = []): RegisterAgentResult => ({
      success,
      agent_id: args.agent_id,
      message,
      warnings,
    });
    const trust = TrustLevelSchema.safeParse(args.trust_level ?? 'medium');
    if (!trust.success) {
      const msg = `Invalid trust level '${args.trust_level}'. Must be one of: ${TRUST_LEVELS.join(', ')}`;
      return fail(msg, answer(false, msg));
    }
    const allowed = decodeJson(args.allowed_tools, 'allowed_tools', StringList, []);
    const denied = decodeJson(args.denied_tools, 'denied_tools', StringList, []);
    const meta = decodeJson(args.metadata, 'metadata', JsonObject, {});
    if (!allowed.ok) return fail(allowed.error, answer(false, `Invalid input: ${allowed.error}`));
    if (!denied.ok) return fail(denied.error, answer(false, `Invalid input: ${denied.error}`));
    if (!meta.ok) return fail(meta.error, answer(false, `Invalid input: ${meta.error}`));

    const snapshot = this.deps.store.snapshot();
    const existingAgent = snapshot.agent(args.agent_id);
    const existing = existingAgent?.source;
    const namespace = existing?.metadata.namespace ?? this.pipeline.namespaceFor(ctx.principal);
    if (!existing) {
      // `agents:` globs match ids ignoring case: a new id that differs only in case from a
      // registered one would get that agent's rules (docs/decisions.md, "Identity").
      const twins = caseTwins(snapshot, args.agent_id);
      if (twins.length > 0) {
        const msg = `agent id '${args.agent_id}' differs only in case from registered agent ${twins.map((a) => `'${a.id}'`).join(', ')}, and agents: rules match both alike; use that id, or another`;
        return fail(msg, answer(false, msg));
      }
      const owner = agentNamed(snapshot, namespace, objectNameFor(args.agent_id));
      if (owner) {
        const msg = `agent id '${args.agent_id}' would be stored as GuardAgent ${namespace ? `${namespace}/` : ''}${objectNameFor(args.agent_id)}, which holds agent '${owner}'; choose another id`;
        return fail(msg, answer(false, msg));
      }
    }
    // An object that exists but is not in force (it fails to compile) is updated too.
    const updating = existing !== undefined || this.deps.store.holds('GuardAgent', namespace, objectNameFor(args.agent_id));
    const allowedToWrite = await this.deps.authorizer.admin(ctx.principal, snapshot, { verb: updating ? 'patch' : 'create', resource: 'guardagents', namespace });
    if (!allowedToWrite.ok) return fail(allowedToWrite.reason, answer(false, allowedToWrite.reason));
    // Granting high or admin (creating it, or raising an agent to it) is an escalation of its
    // own, as the chart's admission policy enforces for kubectl (docs/decisions.md, "Identity").
    if (!existing || trustRank(trust.data) > trustRank(existing.spec.trustLevel)) {
      const grant = await this.deps.authorizer.mayGrant(ctx.principal, snapshot, trust.data, namespace);
      if (!grant.ok) return fail(grant.reason, answer(false, grant.reason));
    }
    // An agent bound to someone else, or one held but not in force (whom it is bound to is not
    // known), is changed only by its own identities or by someone RBAC allows to patch it where
    // it is; asked of RBAC only then, as a caller with admin trust was never asked.
    const rbacMayPatch = async (namespaces: Array<string | undefined>) => {
      for (const ns of new Set(namespaces)) if (!(await this.deps.authorizer.rbacAllows(ctx.principal, { verb: 'patch', resource: 'guardagents', namespace: ns }))) return false;
      return true;
    };
    if (
      this.deps.authorizer.enforcing &&
      existingAgent &&
      (existing?.spec.identities ?? []).length > 0 &&
      !this.deps.authorizer.mayActAs(ctx.principal, existingAgent) &&
      allowedToWrite.via !== 'rbac' && // asked for patch where it is: updating
      !(await rbacMayPatch([namespace]))
    ) {
      const msg = `agent '${args.agent_id}' is bound to other identities; only they, or someone RBAC allows to edit it, may change it`;
      return fail(msg, answer(false, msg));
    }
    // Only under auth (a scan of every GuardAgent held), and only for an id no agent in force claims.
    const heldIn = !this.deps.authorizer.enforcing || existingAgent ? [] : [...this.deps.store.agentHolders(args.agent_id), ...(updating ? [namespace] : [])];
    if (heldIn.length > 0 && !(await rbacMayPatch(heldIn))) {
      const msg = `agent '${args.agent_id}' is stored as a GuardAgent that is not in force (it fails to load), so whom it is bound to is not known; fix it where it was written (in a cluster, someone RBAC allows to patch guardagents may also change it here)`;
      return fail(msg, answer(false, msg));
    }
    // What this call sets (the seed's register_agent defines trust and tool lists every time;
    // description and metadata only when given). In a cluster only these fields are applied.
    const changes: Partial<GuardAgent['spec']> = {
      agentId: args.agent_id,
      displayName: args.name,
      ...(args.description !== undefined ? { description: args.description } : {}),
      trustLevel: trust.data,
      allowedTools: allowed.value,
      deniedTools: denied.value,
      ...(args.metadata !== undefined || !existing ? { attributes: Object.fromEntries(Object.entries(meta.value).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])) } : {}),
    };
    let agent: GuardAgent;
    try {
      agent = guardAgent(existing?.metadata ?? { name: objectNameFor(args.agent_id), ...(namespace ? { namespace } : {}) }, { ...existing?.spec, ...changes });
    } catch (err) {
      const msg = `Invalid agent: ${err instanceof z.ZodError ? formatZodError(err) : String(err)}`;
      return fail(msg, answer(false, msg));
    }
    // Remove the auto-registration label: a human has now described this agent.
    if (agent.metadata.labels?.[LABEL_AUTO_REGISTERED]) {
      const { [LABEL_AUTO_REGISTERED]: _dropped, ...labels } = agent.metadata.labels;
      agent = { ...agent, metadata: { ...agent.metadata, labels } };
    }
    const compiled = PolicySnapshot.compile({ agents: [agent], policies: [] }, snapshot.options);
    if (compiled.problems.length > 0) {
      const msg = `Invalid agent: ${compiled.problems[0]!.message}`;
      return fail(msg, answer(false, msg));
    }

    const unavailable = this.auditUnavailable();
    if (unavailable) return fail(unavailable, answer(false, unavailable));
    const applied = await this.applyOrConflict(() => this.deps.store.applyAgent(agent, updating ? 'update' : 'create', Object.keys(changes) as (keyof GuardAgent['spec'])[]));
    if (!applied.ok) return fail(applied.error, answer(false, applied.error));
    this.auditAdmin('agent_registration', args.agent_id, { trust_level: trust.data, is_update: updating }, 'Agent registration completed', ctx);

    const warnings: string[] = [];
    if (trust.data === 'admin') warnings.push('Agent registered with ADMIN trust level - has full access');
    if (allowed.value.length === 0 && denied.value.length === 0) warnings.push('No tool restrictions defined - agent can use any tool per policies');
    return {
      ok: true,
      value: answer(true, `Agent '${args.name}' (${args.agent_id}) ${updating ? 'updated' : 'registered'} successfully with trust level '${trust.data}'`, warnings),
    };
  }

  // ---- create_policy --------------------------------------------------------------------------

  async createPolicy(args: CreatePolicyArgs, ctx: CallContext): Promise<ToolOutcome<CreatePolicyResult>> {
    const answer = (success: boolean, message: string): CreatePolicyResult => ({ success, policy_id: args.policy_id, message });
    const invalid = (msg: string) => fail(msg, answer(false, msg));

    const raw = decodeJson(args.rules, 'rules', AnyList, []);
    if (!raw.ok) return invalid(`Invalid rules JSON: ${raw.error}`);
    if (raw.value.length === 0) return invalid('Invalid policy rules: Policy must have at least one rule');
    const rules: Rule[] = [];
    for (const [i, r] of raw.value.entries()) {
      const parsed = isSeedRule(r) ? SeedRuleSchema.safeParse(r) : RuleSchema.safeParse(r);
      if (!parsed.success) return invalid(`Invalid policy rules: Rule ${i}: ${formatZodError(parsed.error)}`);
      rules.push('condition' in parsed.data ? fromSeedRule(parsed.data) : parsed.data);
    }

    const snapshot = this.deps.store.snapshot();
    // With one policy set for every agent (standalone mode) an id names one policy whatever its
    // namespace, so an existing one is updated where it is: written with its namespace and name,
    // the new version replaces it (a data-dir copy overrides a config-dir one, with a WARN). In
    // a cluster a policy's namespace is its scope: the id is looked up there by its object name,
    // and a server-side apply keeps what other managers set.
    const holders = snapshot.options.clusterPolicyNamespace === null ? snapshot.policies().filter((p) => policyIdOf(p) === args.policy_id) : [];
    if (holders.length > 1) return invalid(`policy id '${args.policy_id}' names ${holders.length} policies in force (${holders.map((p) => `GuardPolicy ${namespacedName(p.metadata)}`).join(', ')}); keep it on one of them, or use another id`);
    const existing = holders[0];
    const namespace = existing ? existing.metadata.namespace : this.pipeline.namespaceFor(ctx.principal);
    // Distinct ids can meet on one object name (an id may be another's name): writing there
    // would replace that policy and its id (src/api/builders.ts, objectNameFor).
    const named = existing ? undefined : snapshot.policies().find((p) => p.metadata.name === objectNameFor(args.policy_id) && (p.metadata.namespace ?? '') === (namespace ?? ''));
    if (named && policyIdOf(named) !== args.policy_id) {
      return invalid(`policy id '${args.policy_id}' would be stored as GuardPolicy ${namespacedName(named.metadata)}, which holds policy '${policyIdOf(named)}'; use that id to change it, or choose another`);
    }
    // Rewriting a policy that exists (in force or not) takes permission to change it: `create`
    // alone must not let a caller replace another's deny rules.
    const updating = existing !== undefined || this.deps.store.holds('GuardPolicy', namespace, objectNameFor(args.policy_id));
    const allowedToWrite = await this.deps.authorizer.admin(ctx.principal, snapshot, { verb: updating ? 'patch' : 'create', resource: 'guardpolicies', namespace });
    if (!allowedToWrite.ok) return invalid(allowedToWrite.reason);
    const annotations = { ...existing?.metadata.annotations, 'policyguard.dev/display-name': args.name, 'policyguard.dev/policy-id': args.policy_id };
    let policy;
    try {
      policy = guardPolicy(
        existing ? { ...existing.metadata, annotations } : { name: objectNameFor(args.policy_id), ...(namespace ? { namespace } : {}), annotations },
        {
          // What this call does not set (agentSelector, a description) stays as it was.
          ...existing?.spec,
          ...(args.description ? { description: args.description } : {}),
          // Enabled means not Disabled, as get_compliance_status reports it: an Audit policy stays a dry run.
          enforcement: args.enabled === false ? 'Disabled' : existing?.spec.enforcement === 'Audit' ? 'Audit' : 'Enforce',
          priority: args.priority ?? existing?.spec.priority ?? 100,
          rules,
        },
      );
    } catch (err) {
      return invalid(`Invalid policy: ${err instanceof z.ZodError ? formatZodError(err) : String(err)}`);
    }
    // Compile before writing (a Disabled policy compiles no rules, so check it as Enforce), so
    // an unsafe glob is an error now, not a Ready=False later.
    const probe = { ...policy, spec: { ...policy.spec, enforcement: 'Enforce' as const } };
    const compiled = PolicySnapshot.compile({ agents: [], policies: [probe] }, snapshot.options);
    if (compiled.problems.length > 0) return invalid(`Invalid policy rules: ${compiled.problems[0]!.message}`);

    const unavailable = this.auditUnavailable();
    if (unavailable) return invalid(unavailable);
    const applied = await this.applyOrConflict(() => this.deps.store.applyPolicy(policy, updating ? 'update' : 'create'));
    if (!applied.ok) return invalid(applied.error);
    this.auditAdmin('policy_management', args.policy_id, { operation: updating ? 'update' : 'create', rules_count: rules.length, enabled: args.enabled !== false }, 'Policy management completed', ctx);
    return { ok: true, value: answer(true, `Policy '${args.name}' (${args.policy_id}) ${updating ? 'updated' : 'created'} successfully with ${rules.length} rules`) };
  }

  // ---- get_audit_log --------------------------------------------------------------------------

  /**
   * Whose records `ctx` may read (docs/decisions.md, "Identity"): undefined = everyone's (an
   * admin-trust caller, RBAC `get auditlogs`, or `--auth none`); otherwise its own agents' and
   * the records it caused itself.
   */
  private async readScope(ctx: CallContext, snapshot: PolicySnapshot): Promise<AuditScope | undefined> {
    const { authorizer } = this.deps;
    if (await authorizer.mayReadAll(ctx.principal, snapshot)) return undefined;
    return { agentIds: new Set(authorizer.boundAgents(ctx.principal, snapshot).map((a) => a.id)), caller: ctx.principal.subject };
  }

  /** Runs an audit read of `caller` under the read limits (docs/decisions.md, "Cheap denial of service"). */
  private async boundedRead<T>(caller: string, read: () => Promise<ToolOutcome<T>>): Promise<ToolOutcome<T>> {
    const mine = this.readsByCaller.get(caller) ?? 0;
    // Under --auth none every caller is "anonymous": one share for all would leave the dashboard and one agent refusing each other.
    if (caller !== ANONYMOUS.subject && mine >= READS_PER_CALLER) return fail(`caller '${caller}' has ${mine} audit queries running or waiting already; retry once they are answered`);
    this.readsByCaller.set(caller, mine + 1);
    try {
      // A record changed on disk refuses the read, naming it (docs/decisions.md, "The audit log").
      const refusingTampered = () => read().catch((err: unknown) => (err instanceof AuditRecordTamperedError ? fail<T>(err.message) : Promise.reject(err)));
      const done = await this.reads.run(refusingTampered);
      return done?.value ?? fail(`the server is answering ${READS_RUNNING + READS_WAITING} audit queries already; retry in a few seconds`);
    } finally {
      const left = (this.readsByCaller.get(caller) ?? 1) - 1;
      if (left > 0) this.readsByCaller.set(caller, left);
      else this.readsByCaller.delete(caller);
    }
  }

  /**
   * Runs `read` as `ctx` may read the audit log: in its read scope (docs/decisions.md,
   * "Identity") and under the read limit ("Cheap denial of service"). get_compliance_status and
   * the dashboard (src/ui) read this way.
   *
   * @example
   * await tools.readAudit(ctx, async ({ scope, audit }) => ({ ok: true, value: await aggregateDecisions(audit, { scope }) }));
   */
  async readAudit<T>(ctx: CallContext, read: (r: AuditRead) => Promise<ToolOutcome<T>>): Promise<ToolOutcome<T>> {
    const snapshot = this.deps.store.snapshot();
    const scope = await this.readScope(ctx, snapshot);
    return this.boundedRead(ctx.principal.subject, () => read({ scope, snapshot, audit: this.deps.audit, incidents: this.deps.incidents }));
  }

  async getAuditLog(args: GetAuditLogArgs, ctx: CallContext): Promise<ToolOutcome<GetAuditLogResult>> {
    const range = args.time_range || '24h';
    const since = parseTimeRange(range, this.now());
    if (!since) return fail(TIME_RANGE_ERROR(range));
    const status = args.status || undefined;
    if (status !== undefined && status !== 'allowed' && status !== 'denied') {
      return fail(`status ${JSON.stringify(status)} is not understood; use "allowed", "denied" or leave it empty`);
    }
    const scope = await this.readScope(ctx, this.deps.store.snapshot());
    return this.boundedRead(ctx.principal.subject, async () => {
      const { entries, total, leftOut } = await this.deps.audit.query({
        since,
        // Incidents are read with get_compliance_status, as in standalone mode where they have a log of their own.
        kinds: ['decision', 'outcome', 'admin'],
        ...(args.agent_id ? { agentId: args.agent_id } : {}),
        ...(args.action_type ? { actionType: args.action_type } : {}),
        ...(status ? { status } : {}),
        ...(scope ? { scope } : {}),
        limit: args.limit ?? 100,
        maxBytes: AUDIT_ANSWER_MAX_BYTES,
      });
      const filters = [
        ...(args.agent_id ? [`agent_id=${args.agent_id}`] : []),
        ...(args.action_type ? [`action_type=${args.action_type}`] : []),
        ...(status ? [`status=${status}`] : []),
        ...(scope ? [scopeFilter(scope)] : []),
      ];
      return {
        ok: true,
        value: {
          entries: entries as unknown as Record<string, unknown>[],
          count: entries.length,
          total,
          time_range: range,
          filters_applied: filters.length > 0 ? filters : ['none'],
          ...(leftOut > 0
            ? { note: `${leftOut} more entries within the limit were left out: an answer holds at most ${AUDIT_ANSWER_MAX_BYTES / 1024 / 1024} MiB of entries; ask for fewer, a shorter time_range or narrower filters` }
            : {}),
        },
      };
    });
  }

  // ---- get_compliance_status ------------------------------------------------------------------

  async getComplianceStatus(args: GetComplianceStatusArgs, ctx: CallContext): Promise<ToolOutcome<GetComplianceStatusResult>> {
    const range = args.time_range || '24h';
    const now = this.now();
    const since = parseTimeRange(range, now);
    if (!since) return fail(TIME_RANGE_ERROR(range));
    return this.readAudit(ctx, async ({ scope, snapshot, audit, incidents }) => {
      // Streamed: counters only, whatever the time range (never the records themselves).
      const agg = await aggregateDecisions(audit, { since, ...(scope ? { scope } : {}) });
      const metrics = complianceMetrics(agg);
      const level = complianceLevel(metrics.denial_rate);
      const offender = metrics.top_offenders[0];

      const policies = snapshot.policies();
      const enabled = policies.filter((p) => p.spec.enforcement !== 'Disabled').length;
      const problems = this.deps.store.problems();
      const recommendations: string[] = [];
      if (offender) recommendations.push(`Review agent '${offender.agent_id}' - ${offender.violations} violations`);
      if (policies.length === 0) recommendations.push('No security policies defined - create policies using create_policy tool');
      else if (enabled === 0) recommendations.push('No policies are enabled - enable policies to enforce security');
      // Counted in problem lines: one object may have several, and the store does not say which object a line is about.
      if (problems.length === 1) recommendations.push('1 problem: a definition (policy, agent or upstream) is not fully in force — see policies.problems');
      else if (problems.length > 1) recommendations.push(`${problems.length} problems: definitions (policies, agents or upstreams) are not fully in force — see policies.problems`);

      const agents = [...snapshot.agents()].filter((a) => agentInScope(a.id, scope));
      const report: GetComplianceStatusResult = {
        status: level.status,
        status_message: level.message,
        time_range: range,
        generated_at: now.toISOString(),
        metrics: { ...metrics, ...(scope ? { scope: scopeFilter(scope) } : {}) },
        recommendations,
        agents: {
          total: agents.length,
          by_trust_level: Object.fromEntries([...TRUST_LEVELS].reverse().map((t) => [t, agents.filter((a) => a.trust === t).length])),
          suspended: agents.filter((a) => a.suspension !== undefined).length,
        },
      };
      if (args.include_incidents !== false) {
        const recent = (await incidents.list(since)).filter((i) => agentInScope(i.agent_id, scope));
        report.incidents = {
          total: recent.length,
          by_severity: Object.fromEntries([...SEVERITIES].reverse().map((sev) => [sev, recent.filter((i) => i.severity === sev).length])),
          recent: recent.slice(0, 10),
        };
      }
      if (args.include_policy_summary !== false) {
        report.policies = {
          total: policies.length,
          enabled,
          disabled: policies.length - enabled,
          list: policies.map((p) => ({
            id: policyIdOf(p),
            name: p.metadata.annotations?.['policyguard.dev/display-name'] ?? p.metadata.name,
            enabled: p.spec.enforcement !== 'Disabled',
            enforcement: p.spec.enforcement,
            rules_count: p.spec.rules.length,
          })),
          problems,
        };
      }
      return { ok: true, value: report };
    });
  }

  // ---- report_incident ------------------------------------------------------------------------

  async reportIncident(args: ReportIncidentArgs, ctx: CallContext): Promise<ToolOutcome<ReportIncidentResult>> {
    const severity = (SEVERITIES as readonly string[]).includes(args.severity) ? (args.severity as (typeof SEVERITIES)[number]) : undefined;
    if (!severity) return fail(`severity ${JSON.stringify(args.severity)} is not one of ${SEVERITIES.join(', ')}`);
    // The seed filed unknown types under "other"; keep that, and keep what was sent.
    const known = (INCIDENT_TYPES as readonly string[]).includes(args.incident_type);
    const type = known ? (args.incident_type as (typeof INCIDENT_TYPES)[number]) : 'other';
    let evidence: Record<string, unknown>;
    const decoded = decodeJson(args.evidence, 'evidence', JsonObject, {});
    if (decoded.ok) evidence = decoded.value;
    else evidence = { raw: args.evidence }; // the seed kept unparseable evidence as text
    const size = Buffer.byteLength(JSON.stringify(evidence));
    if (size > EVIDENCE_MAX_BYTES) return fail(`evidence is ${size} bytes of JSON; at most ${EVIDENCE_MAX_BYTES} are kept with an incident`);
    // Who filed it, for everyone who reads the incident (the agent it concerns included).
    evidence = { ...evidence, reported_by: ctx.principal.subject, ...(known ? {} : { reported_type: args.incident_type }) };
    // About another agent: as much an admin action as suspending it (a forged incident counts against its record).
    const snapshot = this.deps.store.snapshot();
    const target = args.agent_id ? snapshot.agent(args.agent_id) : undefined;
    const aboutSelf = target !== undefined && this.deps.authorizer.mayActAs(ctx.principal, target);
    // A caller that is no agent, where unknown agents are denied, decides nothing and reports
    // nothing of its own: else any token could fill the incident log and push out what matters.
    if (!args.agent_id && this.deps.authorizer.enforcing && this.deps.options.unknownAgents === 'deny' && this.deps.authorizer.boundAgents(ctx.principal, snapshot).length === 0) {
      return fail(`caller '${ctx.principal.subject}' is bound to no agent, and unknown agents are denied (--unknown-agents deny): it may report incidents about an agent only with permission to administer it`);
    }
    if (args.agent_id && this.deps.authorizer.enforcing && !aboutSelf) {
      const check = await this.deps.authorizer.admin(ctx.principal, snapshot, { verb: 'patch', resource: 'guardagents/status', namespace: target?.namespace });
      if (!check.ok) return fail(`caller '${ctx.principal.subject}' may report incidents about the agents it acts as, or about none; about agent '${args.agent_id}': ${check.reason}`);
    }
    const unavailable = this.auditUnavailable();
    if (unavailable) return fail(unavailable);

    const incident = await this.pipeline.recordIncident({
      type,
      severity,
      description: args.description,
      agent_id: args.agent_id || null,
      evidence,
      recommended_action: args.recommended_action ?? '',
    });
    let suspended = false;
    let notSuspended: string | undefined;
    if (severity === 'critical' && args.agent_id) {
      // An agent may always suspend itself; suspending another one is an admin action.
      const self = this.deps.authorizer.enforcing && aboutSelf;
      const check = self ? undefined : await this.deps.authorizer.admin(ctx.principal, snapshot, { verb: 'patch', resource: 'guardagents/status', namespace: target?.namespace });
      if (check && !check.ok) notSuspended = check.reason;
      else suspended = await this.deps.store.suspendAgent(args.agent_id, {
        since: incident.timestamp,
        // The incident's own description: redacted, as the suspension reason is shown in every later decision.
        reason: `critical incident ${incident.incident_id}: ${incident.description}`.slice(0, 1024),
        incidentId: incident.incident_id,
      });
    }
    this.auditAdmin('incident_report', incident.incident_id, { incident_type: type, severity, related_agent: args.agent_id ?? '', agent_suspended: suspended }, 'Incident logged for investigation', ctx);
    let message = `Incident '${incident.incident_id}' logged with severity '${severity}'`;
    if (suspended) message += ` - Agent '${args.agent_id}' has been automatically suspended`;
    if (notSuspended) message += ` - Agent '${args.agent_id}' was not suspended: ${notSuspended}`;
    return { ok: true, value: { incident_id: incident.incident_id, success: true, message, agent_suspended: suspended, severity, type } };
  }
}
