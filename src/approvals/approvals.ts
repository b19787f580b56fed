/**
 * Approvals owned by the guard (docs/decisions.md, "Approvals"): a require_approval decision
 * asks for a GuardApproval, a person decides it, and the same call is then allowed once.
 *
 * - {@link Approvals.settle} turns one require_approval decision into what the approvals say:
 *   use an Approved one (compare-and-set, so one approval allows one call across replicas),
 *   refuse on a Denied one, reuse a Pending one, or ask for a new one.
 * - {@link Approvals.wait} lets the gateway hold a call until a person decides.
 * - The Lease holder sweeps: marks approvals Expired, records decisions and expiries in the
 *   audit chain (with an Event in a cluster), and deletes final ones after the retention.
 */
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { formatZodError } from '../store/manifests.js';
import type { GuardApproval, GuardApprovalStatus } from '../api/schemas.js';
import type { AuditEntryInput } from '../audit/record.js';
import type { AuditSink } from '../audit/sink.js';
import type { Logger } from '../log.js';
import type { Counter, Metrics } from '../metrics.js';
import { approvalRef, argumentsDigest, askingRules, askMismatch, newApproval, phaseOf, rulesMismatch, type NewApproval } from './ask.js';
import type { ApprovalStore } from './store.js';

/** Reasons of the Events about approvals (a cluster only). */
export type ApprovalEventReason = 'ApprovalRequested' | 'ApprovalApproved' | 'ApprovalDenied' | 'ApprovalExpired';

export interface ApprovalOptions {
  /** Validity of an approval whose rules set no `approval.ttl` (--approval-ttl). */
  defaultTtlMs: number;
  /** Final approvals (Denied, Expired, Used) are deleted this long after they became final (--approval-retention). */
  retentionMs: number;
  /** How often the Lease holder sweeps (default 5 s). */
  sweepIntervalMs?: number;
  /**
   * Pending approvals one agent may have at once (--approval-pending-limit), and one caller
   * (`requestedBy`) across all the agent ids it uses; beyond either a new ask is not stored, so
   * neither an agent nor a caller that makes up agent ids can fill etcd or the disk with asks
   * nobody will read.
   */
  pendingLimit: number;
}

export interface ApprovalsDeps {
  store: ApprovalStore;
  /** What argument digests are keyed with ({@link digestKey}); undefined: plain sha256. */
  digestKey?: KeyObject | undefined;
  audit: AuditSink;
  metrics: Metrics;
  log: Logger;
  /** Only the Lease holder sweeps and records decisions (always true in standalone mode). */
  isLeader: () => boolean;
  /** An Event regarding the approval (kubernetes mode); absent in standalone mode. */
  event?: (approval: GuardApproval, reason: ApprovalEventReason, note: string) => void;
  options: ApprovalOptions;
  now?: () => Date;
}

/** What {@link Approvals.settle} needs besides the ask. */
export interface ApprovalRequest extends Omit<NewApproval, 'now' | 'digest'> {
  /** The approval the caller names (validate_action's approval_id); absent = look it up by the ask. */
  approvalId?: string;
  /** The decision that would use an Approved approval. */
  actionId: string;
  /**
   * Asked just before an Approved approval is used: why the call could not be made after all
   * (the gateway's checks of its `Mcp-Param-*` headers), or undefined. A reason refuses the call
   * and leaves the approval Approved, so a person does not have to approve the retry again.
   */
  readyToUse?: () => Promise<string | undefined>;
}

/**
 * - `used`: an Approved approval now allows this call (and no other).
 * - `pending`: a person has not decided yet (`created`: it was asked for by this call).
 * - `refused`: denied, expired, already used, not this call's, or not found; the call is denied.
 * - `unavailable`: no approval could be asked for (the store refused); the call stays unallowed.
 */
export type Settlement =
  | { outcome: 'used'; approval: GuardApproval }
  | { outcome: 'pending'; approval: GuardApproval; created: boolean }
  | { outcome: 'refused'; approval?: GuardApproval; reason: string }
  | { outcome: 'unavailable'; reason: string };

/** How a held call ended. */
export type HoldResult = 'Approved' | 'Denied' | 'Expired' | 'Deleted' | 'timeout';

/** Times a use may lose a compare-and-set race before the call is refused. */
const USE_ATTEMPTS = 3;

const FINAL_PHASES = new Set(['Denied', 'Expired', 'Used']);

/** The phase a lifecycle record names (a deletion names the phase the approval had). */
const LIFECYCLE_PHASE: Record<string, string | undefined> = { approved: 'Approved', denied: 'Denied', expired: 'Expired' };

export class Approvals {
  private readonly now: () => Date;
  /**
   * Asks being created: key → the settlement every identical ask meanwhile shares, and whose
   * allowances (agent, caller) it already counts against.
   */
  private readonly inFlight = new Map<string, { settlement: Promise<Settlement>; agent: string; caller: string }>();
  /** Last phase seen per approval, to record each person's decision once (Lease holder). */
  private readonly seen = new Map<string, string>();
  /**
   * Lifecycle records the audit log refused while it was unavailable, oldest first: retried
   * before the next one and at every sweep, so a decision made while the log was down is still
   * recorded once it is back (at most {@link UNRECORDED_MAX}).
   */
  private readonly unrecorded: AuditEntryInput[] = [];
  private readonly events: Counter;
  private readonly unsubscribe: () => void;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(private readonly deps: ApprovalsDeps) {
    this.now = deps.now ?? (() => new Date());
    this.events = deps.metrics.counter('policyguard_approvals_total', 'Approval lifecycle events: requested, used, approved, denied, expired, deleted, limited (not requested: too many pending for the agent or the caller).');
    deps.metrics.gauge('policyguard_approvals_pending', 'GuardApprovals waiting for a person.', () => this.deps.store.list().filter((a) => phaseOf(a, this.now()) === 'Pending').length);
    for (const a of deps.store.list()) this.seen.set(approvalRef(a), a.status?.phase ?? 'Pending');
    this.unsubscribe = deps.store.onChange((ref, approval) => (approval ? this.observe(approval) : this.seen.delete(ref)));
  }

  /** Start sweeping (expiry, retention) on an interval. */
  start(): void {
    const every = this.deps.options.sweepIntervalMs ?? 5000;
    this.sweepTimer = setInterval(() => void this.sweep(), every);
    this.sweepTimer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    const refused = this.recordUnrecorded();
    for (const entry of this.unrecorded) this.deps.log.error('an approval lifecycle step was never recorded in the audit log', { approval: entry.approval?.ref, event: entry.action.type, reason: refused });
    this.unsubscribe();
    await this.sweeping;
  }

  /** The validity of a new approval for these matches: the rules' `approval.ttl`, else the default. */
  get defaultTtlMs(): number {
    return this.deps.options.defaultTtlMs;
  }

  /**
   * What the approvals say about one require_approval decision. Never throws: a store that
   * fails makes the call refused or unallowed, never allowed.
   *
   * @example const s = await approvals.settle({ ask, namespace: 'team-a', actionId, matched, message, revision, requestedBy, requesters: [], ttlMs });
   */
  async settle(req: ApprovalRequest): Promise<Settlement> {
    const digest = argumentsDigest(req.ask.parameters, this.deps.digestKey);
    let ready = req.readyToUse === undefined;
    for (let attempt = 0; attempt < USE_ATTEMPTS; attempt++) {
      const now = this.now();
      let approval: GuardApproval;
      if (req.approvalId !== undefined) {
        const named = this.named(req, digest);
        if ('outcome' in named) return named;
        approval = named.approval;
      } else {
        const found = this.forAsk(req, digest, now);
        if (!found) return this.request(req, digest, now);
        approval = found;
      }
      switch (phaseOf(approval, now)) {
        case 'Approved': {
          if (!ready) {
            const unready = await req.readyToUse!();
            if (unready !== undefined) return { outcome: 'refused', approval, reason: `${unready}; approval ${approval.metadata.name} is not used, and allows the call once it can be made` };
            // That may have taken the upstream's timeout: look again, now (it may have expired,
            // been used or deleted), without counting it as a lost race.
            ready = true;
            attempt--;
            continue;
          }
          const used = await this.use(approval, req.actionId, now);
          if (used === true) return { outcome: 'used', approval };
          if (used !== false) return { outcome: 'refused', approval, reason: used };
          continue; // another decision used or changed it first: look again
        }
        case 'Pending':
          return { outcome: 'pending', approval, created: false };
        case 'Denied':
          return { outcome: 'refused', approval, reason: deniedText(approval) };
        case 'Expired':
          return { outcome: 'refused', approval, reason: `approval ${approval.metadata.name} expired at ${approval.spec.expiresAt}; call again without approval_id to ask anew` };
        case 'Used':
          return {
            outcome: 'refused',
            approval,
            reason: `approval ${approval.metadata.name} was already used (by ${approval.status?.actionId ?? 'an earlier call'}); an approval allows one call: call again without approval_id to ask anew`,
          };
      }
    }
    return { outcome: 'refused', reason: `the approval for this call changed ${USE_ATTEMPTS} times while it was being used; try again` };
  }

  /** The approval validate_action names, if it covers this call. */
  private named(req: ApprovalRequest, digest: string): { approval: GuardApproval } | Settlement {
    const id = req.approvalId!;
    const approval = this.deps.store.get(req.namespace, id);
    if (!approval) return { outcome: 'refused', reason: `approval ${id} does not exist${req.namespace ? ` in namespace ${req.namespace}` : ''} (deleted after its retention, or never asked for)` };
    const mismatch = askMismatch(approval.spec, req.ask, digest) ?? rulesMismatch(approval.spec, askingRules(req.matched));
    if (mismatch) return { outcome: 'refused', approval, reason: `approval ${id} does not cover this call: ${mismatch}` };
    return { approval };
  }

  /**
   * The approval that settles this ask: an Approved one first, then a Denied one (no means no
   * until it expires), then a Pending one; undefined when a new one must be asked for.
   */
  private forAsk(req: ApprovalRequest, digest: string, now: Date): GuardApproval | undefined {
    const asking = askingRules(req.matched);
    const mine = this.deps.store
      .list()
      .filter((a) => a.metadata.namespace === req.namespace && askMismatch(a.spec, req.ask, digest) === undefined && rulesMismatch(a.spec, asking) === undefined);
    // A denial holds until the approval's expiry; after that the call may be asked again.
    const live = (a: GuardApproval) => phaseOf(a, now) !== 'Denied' || Date.parse(a.spec.expiresAt) > now.getTime();
    const newest = (phase: string) =>
      mine.filter((a) => phaseOf(a, now) === phase && live(a)).sort((a, b) => b.spec.requestedAt.localeCompare(a.spec.requestedAt))[0];
    return newest('Approved') ?? newest('Denied') ?? newest('Pending');
  }

  /** Ask for a new approval; identical asks meanwhile share it. */
  private request(req: ApprovalRequest, digest: string, now: Date): Promise<Settlement> {
    const rules = askingRules(req.matched).map((r) => `${r.policy}/${r.rule}`).join(',');
    const agent = `${req.namespace ?? ''}\u0000${req.ask.agentId}`;
    const key = `${agent}\u0000${req.ask.actionType}\u0000${req.ask.target}\u0000${req.ask.upstream ?? ''}\u0000${digest}\u0000${rules}`;
    const pending = this.inFlight.get(key);
    if (pending) return pending.settlement.then((s) => (s.outcome === 'pending' ? { ...s, created: false } : s));
    // An approval shows its target to whoever lists approvals (and, in a cluster, in an Event),
    // and is matched by it exactly: a target carrying a secret would be shown as it is.
    if (CREDENTIAL_IN_TARGET.test(req.ask.target)) {
      return Promise.resolve({ outcome: 'unavailable', reason: 'no approval was requested: the target holds what looks like a password or token (a URL with user:password@, or name=value), which approvers would be shown; call the tool by its name and pass the secret in the arguments, whose secret-looking values are hidden' });
    }
    const over = this.overPendingLimit(req, agent, now);
    if (over) {
      this.events.inc({ event: 'limited' });
      return Promise.resolve({ outcome: 'unavailable', reason: `no approval was requested: ${over}; decide or deny them, or wait until they expire` });
    }
    const created = (async (): Promise<Settlement> => {
      try {
        const approval = await this.deps.store.create(newApproval({ ...req, digest, now }));
        this.events.inc({ event: 'requested' });
        this.seen.set(approvalRef(approval), 'Pending');
        this.deps.event?.(approval, 'ApprovalRequested', `Agent '${req.ask.agentId}' asks to call '${req.ask.target}': ${approval.spec.message}`);
        return { outcome: 'pending', approval, created: true };
      } catch (err) {
        this.deps.log.warn('approval not requested', { agent: req.ask.agentId, target: req.ask.target, error: String(err) });
        const why = err instanceof z.ZodError ? `the call does not fit a GuardApproval (${formatZodError(err)})` : err instanceof Error ? err.message : String(err);
        return { outcome: 'unavailable', reason: `no approval could be requested: ${why}` };
      }
    })().finally(() => this.inFlight.delete(key));
    // Counted at once, before the store answers: concurrent asks cannot all slip under a limit.
    this.inFlight.set(key, { settlement: created, agent, caller: req.requestedBy });
    return created;
  }

  /**
   * Why a new ask may not be stored, or undefined: the agent (`agent`: namespace and id), or
   * the caller across every agent id it uses, already has `--approval-pending-limit` approvals
   * waiting, counting the asks being created. A caller may use any number of agent ids (under
   * `--unknown-agents evaluate`, or `--auth none`), so the agent's limit alone bounds nothing.
   */
  private overPendingLimit(req: ApprovalRequest, agent: string, now: Date): string | undefined {
    const limit = this.deps.options.pendingLimit;
    const waiting = this.deps.store.list().filter((a) => phaseOf(a, now) === 'Pending');
    const asking = [...this.inFlight.values()];
    const forAgent =
      waiting.filter((a) => a.spec.agentId === req.ask.agentId && a.metadata.namespace === req.namespace).length + asking.filter((f) => f.agent === agent).length;
    if (forAgent >= limit) return `agent '${req.ask.agentId}' already has ${forAgent} approvals waiting for a person (--approval-pending-limit ${limit})`;
    const forCaller = waiting.filter((a) => a.spec.requestedBy === req.requestedBy).length + asking.filter((f) => f.caller === req.requestedBy).length;
    if (forCaller >= limit) return `caller '${req.requestedBy}' already has ${forCaller} approvals waiting for a person, for any agent (--approval-pending-limit ${limit}, per agent and per caller)`;
    return undefined;
  }

  /** Mark an Approved approval Used by `actionId`: true, false (lost a race: look again) or why it failed. */
  private async use(approval: GuardApproval, actionId: string, now: Date): Promise<boolean | string> {
    const status: GuardApprovalStatus = { ...approval.status, phase: 'Used', usedAt: now.toISOString(), actionId };
    try {
      const ok = await this.deps.store.updateStatus(approval, status);
      if (ok) this.events.inc({ event: 'used' });
      return ok;
    } catch (err) {
      return `approval ${approval.metadata.name} could not be marked used (${err instanceof Error ? err.message : String(err)}), so it allows nothing yet; try again`;
    }
  }

  /**
   * Wait until `approval` leaves Pending (a person decided, it expired, it was deleted) or
   * `holdMs` passes. Resolves on the store's change notification, not by polling.
   *
   * @example if ((await approvals.wait(approval, 20_000)) === 'Approved') forward();
   */
  wait(approval: GuardApproval, holdMs: number, signal?: AbortSignal): Promise<HoldResult> {
    const { namespace, name } = approval.metadata;
    const ref = approvalRef(approval);
    return new Promise<HoldResult>((resolve) => {
      let done = false;
      const finish = (result: HoldResult) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(expiry);
        unsubscribe();
        signal?.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const check = () => {
        const current = this.deps.store.get(namespace, name);
        if (!current) return finish('Deleted');
        const phase = phaseOf(current, this.now());
        if (phase !== 'Pending') finish(phase === 'Used' ? 'Approved' : phase);
      };
      const onAbort = () => finish('timeout');
      const unsubscribe = this.deps.store.onChange((changed) => changed === ref && check());
      const timer = setTimeout(() => finish('timeout'), holdMs);
      // The expiry needs no store change to take effect.
      const expiry = setTimeout(check, Math.max(0, Date.parse(approval.spec.expiresAt) - this.now().getTime() + 1));
      signal?.addEventListener('abort', onAbort);
      check();
    });
  }

  /**
   * One sweep (the Lease holder only): approvals past their expiry are marked Expired, and
   * final ones past the retention are deleted, each with an audit record.
   */
  sweep(): Promise<void> {
    if (!this.deps.isLeader() || this.sweeping) return this.sweeping ?? Promise.resolve();
    this.sweeping = this.sweepOnce()
      .catch((err: unknown) => this.deps.log.warn('approval sweep failed', { error: String(err) }))
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    this.recordUnrecorded();
    const now = this.now();
    for (const approval of this.deps.store.list()) {
      const stored = approval.status?.phase ?? 'Pending';
      if (phaseOf(approval, now) === 'Expired' && stored !== 'Expired') {
        if (await this.deps.store.updateStatus(approval, { ...approval.status, phase: 'Expired' })) {
          this.lifecycle(approval, 'expired', `approval ${approvalRef(approval)} expired at ${approval.spec.expiresAt}${stored === 'Approved' ? ' unused' : ' undecided'}`);
          this.deps.event?.(approval, 'ApprovalExpired', `Expired ${stored === 'Approved' ? 'unused' : 'undecided'} at ${approval.spec.expiresAt}`);
        }
      } else if (FINAL_PHASES.has(stored) && finalAt(approval) + this.deps.options.retentionMs <= now.getTime()) {
        await this.deps.store.delete(approval);
        this.lifecycle(approval, 'deleted', `approval ${approvalRef(approval)} (${stored}) deleted after the retention period`);
      }
    }
  }

  /**
   * A person's decision, seen through the store: the Lease holder records the change from
   * Pending it sees (every replica tracks phases, so a new leader knows what was seen). An
   * approval first seen already decided (a restart's initial list) is not recorded again; the
   * decision that uses or is refused by it names who decided.
   */
  private observe(approval: GuardApproval): void {
    const ref = approvalRef(approval);
    const phase = approval.status?.phase ?? 'Pending';
    const before = this.seen.get(ref);
    this.seen.set(ref, phase);
    if (!this.deps.isLeader() || before !== 'Pending' || (phase !== 'Approved' && phase !== 'Denied')) return;
    const by = approval.status?.decidedBy ?? 'someone';
    const why = approval.status?.reason ? `: ${approval.status.reason}` : '';
    this.lifecycle(approval, phase === 'Approved' ? 'approved' : 'denied', `approval ${ref} ${phase.toLowerCase()} by ${by}${why}`);
    this.deps.event?.(approval, phase === 'Approved' ? 'ApprovalApproved' : 'ApprovalDenied', `${phase} by ${by}${why}`);
  }

  /** An audit record of a lifecycle step (no action_id: the decisions have their own records). */
  private lifecycle(approval: GuardApproval, event: 'approved' | 'denied' | 'expired' | 'deleted', reason: string): void {
    this.events.inc({ event });
    const { spec, status } = approval;
    const entry: AuditEntryInput = {
      action_id: null,
      agent_id: spec.agentId,
      caller: event === 'approved' || event === 'denied' ? (status?.decidedBy ?? null) : null,
      action: {
        type: `approval_${event}`,
        target: spec.target,
        parameters: { actionType: spec.actionType, argumentsDigest: spec.argumentsDigest, requestedAt: spec.requestedAt, expiresAt: spec.expiresAt, ...status },
        context: '',
        ...(spec.upstream !== undefined ? { upstream: spec.upstream } : {}),
      },
      evaluation: { allowed: event === 'approved', decision: event === 'approved' ? 'allow' : 'deny', require_approval: false, reason, matched: [], audit_findings: [] },
      revision: spec.revision,
      approval: { ref: approvalRef(approval), phase: LIFECYCLE_PHASE[event] ?? status?.phase ?? 'Pending', ...(status?.decidedBy ? { decided_by: status.decidedBy } : {}) },
    };
    this.unrecorded.push(entry);
    if (this.unrecorded.length > UNRECORDED_MAX) {
      const lost = this.unrecorded.shift()!;
      this.deps.log.error('an approval lifecycle step was dropped: the audit log has refused it and too many others', { approval: lost.approval?.ref, event: lost.action.type });
    }
    const refused = this.recordUnrecorded();
    if (refused) this.deps.log.error('an approval lifecycle step is not yet recorded in the audit log; it is retried at the next sweep', { approval: approvalRef(approval), event, reason: refused });
  }

  /** Append the lifecycle records the audit log has not taken yet, oldest first; why it stopped, if it did. */
  private recordUnrecorded(): string | undefined {
    while (this.unrecorded.length > 0) {
      const appended = this.deps.audit.append(this.unrecorded[0]!);
      if (!appended.ok) return appended.reason;
      this.unrecorded.shift();
    }
    return undefined;
  }
}

/**
 * A credential in a target an approver would be shown: a URL's password (`postgres://app:pw@db`)
 * or a parameter named as one (`?token=…`, `api_key=…`). Narrower than the audit log's
 * redaction, which also hides `?keyword=` and `?author=`: here a false match means no approval
 * can ever be asked for the call.
 */
const CREDENTIAL_IN_TARGET = /:\/\/[^/?#@\s]*:[^/?#@\s]*@|(?:^|[?&;\s])(?:pass(?:word|wd)?|pwd|token|access_token|refresh_token|secret|client_secret|api[_-]?key|access[_-]?key)=/i;

/** Lifecycle records held for an audit log that refuses them; beyond it the oldest is dropped, logged. */
const UNRECORDED_MAX = 1000;

/** When an approval became final (for the retention). */
function finalAt(approval: GuardApproval): number {
  const s = approval.status;
  const t = s?.usedAt ?? (s?.phase === 'Denied' ? s.decidedAt : undefined) ?? approval.spec.expiresAt;
  return Date.parse(t);
}

function deniedText(approval: GuardApproval): string {
  const { status, metadata, spec } = approval;
  return `approval ${metadata.name} was denied by ${status?.decidedBy ?? 'someone'}${status?.reason ? `: ${status.reason}` : ''} (the same call is refused until ${spec.expiresAt})`;
}
