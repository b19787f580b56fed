/**
 * Policy reports per GuardAgent (Lease holder only), for the tools policy users already run
 * (Policy Reporter, `kubectl get reports` / `kubectl get polr`): an `openreports.io/v1alpha1`
 * Report and/or a `wgpolicyk8s.io/v1alpha2` PolicyReport in the agent's namespace, scoped to
 * the GuardAgent and owned by it (ownerReference, so the garbage collector deletes it with the
 * agent). It summarises the agent's decisions in a sliding window: one result per matched rule
 * and outcome (pass: allow rule; fail: enforced deny; warn: approval needed or Audit-mode
 * finding), with its count, last time and last target as properties.
 *
 * Counting is src/audit/compliance.ts, the code behind get_compliance_status. The window is kept
 * as per-bucket aggregates ({@link SlidingWindow}), so a pass reads only the records written
 * since the last one. Writes are coalesced: every `--reports-interval` each report that differs
 * from what this replica last wrote is applied once (server-side apply), whatever the number of
 * decisions in between.
 */
import { createHash } from 'node:crypto';
import { ApisApi, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { API_VERSION } from '../api/schemas.js';
import {
  foldDecisions, mergeAggregate, newAggregate, MAX_RULES_PER_AGENT, type AgentTally, type AggregateOptions, type ComplianceAggregate, type RuleTally,
} from '../audit/compliance.js';
import type { AuditSink } from '../audit/sink.js';
import type { CompiledAgent } from '../engine/compile.js';
import { describeKubeError, serverSideApply, statusOf } from '../kube/client.js';
import type { Logger } from '../log.js';
import { FIELD_MANAGER } from '../store/kubernetes.js';
import type { PolicyStore } from '../store/store.js';

/** The report APIs PolicyGuard writes. */
export const REPORT_APIS = {
  openreports: { group: 'openreports.io', version: 'v1alpha1', plural: 'reports', kind: 'Report' },
  wgpolicyk8s: { group: 'wgpolicyk8s.io', version: 'v1alpha2', plural: 'policyreports', kind: 'PolicyReport' },
} as const;
export type ReportApi = keyof typeof REPORT_APIS;

/** `--reports`, except `off` (then there is no writer). */
export type ReportsMode = ReportApi | 'both' | 'auto';

/** What each report's `source` says. */
export const REPORT_SOURCE = 'policyguard';
const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'policyguard' };

/**
 * Records are counted for good only once they are this old: until then a pass counts them anew.
 * Another replica's records reach a shared audit log up to its flush interval (1 s for the
 * ConfigMap ring) after their timestamp, or later while its writes fail; a record that arrives
 * later than this is missed by the reports (never by get_compliance_status, which scans).
 */
export const SETTLE_MS = 60_000;
/** The window is kept in this many buckets (plus the one being filled). */
export const WINDOW_BUCKETS = 24;
/** Report writes in flight at once. */
const WORKERS = 4;

/**
 * The aggregate of the decisions in a sliding window, kept as one aggregate per time bucket.
 * Each {@link advance} reads only the records since the previous one (from `settle` ms before
 * it, see {@link SETTLE_MS}), adds the settled ones to their buckets for good, and counts the
 * newest ones into a tail that is thrown away after the pass. The window is rounded out to
 * whole buckets: it covers between `windowMs` and `windowMs + bucketMs` of decisions.
 */
export class SlidingWindow {
  private readonly buckets = new Map<number, ComplianceAggregate>();
  /** Records before this (epoch ms) are in `buckets`; undefined before the first pass. */
  private settledUntil: number | undefined;

  /**
   * @example
   * const window = new SlidingWindow(audit, { windowMs: 86_400_000, bucketMs: 3_600_000, settleMs: 60_000, aggregate: { rules: true } });
   * const agg = await window.advance(Date.now());
   */
  constructor(
    private readonly audit: Pick<AuditSink, 'scan'>,
    private readonly opts: { windowMs: number; bucketMs: number; settleMs: number; aggregate: AggregateOptions },
  ) {}

  /** The aggregate of the window ending at `now`. */
  async advance(now: number): Promise<ComplianceAggregate> {
    const { windowMs, bucketMs, aggregate } = this.opts;
    const windowStart = now - windowMs;
    const settleBefore = now - Math.min(this.opts.settleMs, windowMs);
    const from = this.settledUntil ?? Math.floor(windowStart / bucketMs) * bucketMs;
    const tail = newAggregate(aggregate);
    await foldDecisions(this.audit, { since: new Date(from) }, (record) => {
      const time = Date.parse(record.timestamp);
      if (time >= settleBefore) return tail;
      const start = Math.floor(time / bucketMs) * bucketMs;
      let bucket = this.buckets.get(start);
      if (!bucket) this.buckets.set(start, (bucket = newAggregate(aggregate)));
      return bucket;
    });
    // A clock that went back must not count settled records twice.
    this.settledUntil = Math.max(from, settleBefore);
    for (const start of this.buckets.keys()) if (start + bucketMs <= windowStart) this.buckets.delete(start);
    const window = newAggregate(aggregate);
    for (const bucket of this.buckets.values()) mergeAggregate(window, bucket);
    mergeAggregate(window, tail);
    return window;
  }

  /** Forget everything (leadership lost): the next pass reads the whole window again. */
  reset(): void {
    this.buckets.clear();
    this.settledUntil = undefined;
  }
}

/** The report's name for a GuardAgent: `policyguard-<name>`, shortened with a hash when too long. */
export function reportName(agentName: string): string {
  const name = `policyguard-${agentName}`;
  if (name.length <= 253) return name;
  const hash = createHash('sha256').update(agentName).digest('hex').slice(0, 8);
  return `${name.slice(0, 243).replace(/[^a-z0-9]+$/, '')}-${hash}`;
}

const RESULT_ORDER = { fail: 0, warn: 1, pass: 2 } as const;

function resultOf(t: RuleTally): Record<string, unknown> {
  const verdict = t.result === 'pass' ? 'allowed' : t.enforcement === 'Audit' ? 'reported (Audit mode)' : t.action === 'deny' ? 'denied' : 'approval needed';
  return {
    source: REPORT_SOURCE,
    policy: t.namespace ? `${t.namespace}/${t.policy}` : t.policy,
    rule: t.rule,
    result: t.result,
    message: t.message ?? `${t.count} decision(s) ${verdict} by this rule`,
    timestamp: { seconds: Math.floor(t.lastTime / 1000), nanos: (t.lastTime % 1000) * 1_000_000 },
    properties: {
      count: String(t.count),
      lastTime: new Date(t.lastTime).toISOString(),
      lastTarget: t.lastTarget,
      action: t.action,
      enforcement: t.enforcement,
    },
  };
}

/** What a report says beyond its results (annotations). */
export interface ReportContext {
  windowMs: number;
  /** Whose decisions the audit log holds, e.g. "all replicas (ConfigMap audit sink)". */
  coverage: string;
}

/**
 * The report of `agent` in `api`'s shape, from its tally in the window (undefined: no decisions).
 * Deterministic: the same tally gives the same object, so an unchanged report is not rewritten.
 *
 * @example reportFor('openreports', agent, window.agents.get(agent.id), { windowMs: 86_400_000, coverage: 'all replicas' })
 */
export function reportFor(api: ReportApi, agent: Pick<CompiledAgent, 'name' | 'namespace' | 'source'>, tally: AgentTally | undefined, ctx: ReportContext): Record<string, unknown> {
  const { group, version, kind } = REPORT_APIS[api];
  const ref = { apiVersion: API_VERSION, kind: 'GuardAgent', name: agent.name, uid: agent.source.metadata.uid! };
  const rules = [...(tally?.rules.values() ?? [])].sort(
    (a, b) => RESULT_ORDER[a.result] - RESULT_ORDER[b.result] || b.count - a.count || a.policy.localeCompare(b.policy) || a.rule.localeCompare(b.rule),
  );
  const summary = { pass: 0, fail: 0, warn: 0, error: 0, skip: 0 };
  for (const t of rules) summary[t.result]++;
  return {
    apiVersion: `${group}/${version}`,
    kind,
    metadata: {
      name: reportName(agent.name),
      namespace: agent.namespace,
      labels: MANAGED_BY,
      annotations: {
        'policyguard.dev/window-seconds': String(Math.round(ctx.windowMs / 1000)),
        'policyguard.dev/decisions': String(tally?.decisions ?? 0),
        'policyguard.dev/decisions-denied': String(tally?.denied ?? 0),
        'policyguard.dev/audit-coverage': ctx.coverage,
        ...(tally?.rulesDropped ? { 'policyguard.dev/results-dropped': String(tally.rulesDropped) } : {}),
      },
      ownerReferences: [{ ...ref, controller: true }],
    },
    // Only openreports.io has a report-level source and configuration; wgpolicyk8s.io's schema would refuse them.
    ...(api === 'openreports' ? { source: REPORT_SOURCE, configuration: { limits: { maxResults: MAX_RULES_PER_AGENT } } } : {}),
    scope: { ...ref, namespace: agent.namespace },
    summary,
    results: rules.map(resultOf),
  };
}

export interface ReportWriterOptions {
  kubeConfig: KubeConfig;
  store: Pick<PolicyStore, 'snapshot'>;
  audit: Pick<AuditSink, 'scan'>;
  log: Logger;
  isLeader: () => boolean;
  mode: ReportsMode;
  windowMs: number;
  /** The coalescing interval: at most one write per report per interval. */
  intervalMs: number;
  /** Whose decisions the audit log holds (said in each report). */
  coverage: string;
  now?: () => number;
}

/**
 * Keeps the reports (leader only). Level-triggered: each pass computes every agent's report
 * and applies those that differ from what this replica last wrote; a new leader rewrites each
 * once (a no-op for the API server when nothing changed).
 */
export class ReportWriter {
  private readonly api: CustomObjectsApi;
  private readonly apis: ApisApi;
  private readonly window: SlidingWindow;
  /** `api/namespace/name` → digest of the report last applied. */
  private readonly written = new Map<string, string>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** What the last pass wrote to (logged when it changes). */
  private target: string | undefined;
  /** Reports applied (only the leader applies any). */
  writes = 0;
  /** Report writes that failed. */
  failures = 0;

  /**
   * @example
   * const reports = new ReportWriter({ kubeConfig, store, audit, log, isLeader, mode: 'auto', windowMs: 86_400_000, intervalMs: 30_000, coverage: 'all replicas' });
   * reports.start();
   */
  constructor(private readonly opts: ReportWriterOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.apis = opts.kubeConfig.makeApiClient(ApisApi);
    this.now = opts.now ?? Date.now;
    const bucketMs = Math.max(opts.intervalMs, Math.ceil(opts.windowMs / WINDOW_BUCKETS));
    this.window = new SlidingWindow(opts.audit, { windowMs: opts.windowMs, bucketMs, settleMs: SETTLE_MS, aggregate: { rules: true } });
  }

  start(): void {
    this.timer = setInterval(() => void this.sync(), this.opts.intervalMs);
    this.timer.unref();
    void this.sync();
  }

  /** One pass now; a call during a pass waits for that pass. Never rejects. */
  sync(): Promise<void> {
    this.running ??= this.pass()
      .catch((err: unknown) => this.opts.log.warn('policy reports: pass failed; retrying next interval', { error: describeKubeError(err) }))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    if (this.stopped) return;
    if (!this.opts.isLeader()) {
      this.window.reset();
      this.written.clear();
      return;
    }
    const apis = await this.installedApis();
    if (apis.length === 0) return;
    const window = await this.window.advance(this.now());
    const ctx = { windowMs: this.opts.windowMs, coverage: this.opts.coverage };
    const due: Array<{ key: string; digest: string; api: ReportApi; body: Record<string, unknown> }> = [];
    const current = new Set<string>();
    for (const agent of this.opts.store.snapshot().agents()) {
      // Objects from the API server always have both; without them there is nothing to own the report.
      if (!agent.namespace || !agent.source.metadata.uid) continue;
      for (const api of apis) {
        const body = reportFor(api, agent, window.agents.get(agent.id), ctx);
        const key = `${api}/${agent.namespace}/${reportName(agent.name)}`;
        const digest = createHash('sha256').update(JSON.stringify(body)).digest('hex');
        current.add(key);
        if (this.written.get(key) !== digest) due.push({ key, digest, api, body });
      }
    }
    // Reports of agents that are gone go with them (ownerReference); forget them here.
    for (const key of this.written.keys()) if (!current.has(key)) this.written.delete(key);

    const failed: string[] = [];
    const work = async () => {
      for (let next = due.shift(); next; next = due.shift()) {
        if (this.stopped || !this.opts.isLeader()) return;
        const { group, version, plural } = REPORT_APIS[next.api];
        const metadata = next.body.metadata as { name: string; namespace: string };
        try {
          await this.api.patchNamespacedCustomObject(
            { group, version, plural, namespace: metadata.namespace, name: metadata.name, body: next.body, fieldManager: FIELD_MANAGER, force: true },
            serverSideApply,
          );
          this.written.set(next.key, next.digest);
          this.writes++;
        } catch (err) {
          this.failures++;
          failed.push(`${next.key}: ${statusOf(err) === 404 ? `${group}/${version} ${plural} not served (CRD not installed?) or namespace gone` : describeKubeError(err)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, work));
    // One line per pass, however many reports failed: a missing CRD or RBAC rule fails them all.
    if (failed.length > 0) this.opts.log.warn('policy reports: writes failed; retrying next interval', { failed: failed.length, first: failed[0] });
  }

  /** The APIs to write now: the configured ones, or under `auto` those the API server serves. */
  private async installedApis(): Promise<ReportApi[]> {
    const { mode } = this.opts;
    let apis: ReportApi[];
    if (mode === 'auto') {
      const groups = (await this.apis.getAPIVersions()).groups;
      const served = (api: ReportApi) => groups.some((g) => g.name === REPORT_APIS[api].group && g.versions.some((v) => v.version === REPORT_APIS[api].version));
      apis = (['openreports', 'wgpolicyk8s'] as const).filter(served);
    } else apis = mode === 'both' ? ['openreports', 'wgpolicyk8s'] : [mode];
    const target = apis.map((a) => `${REPORT_APIS[a].group}/${REPORT_APIS[a].version} ${REPORT_APIS[a].kind}`).join(', ');
    if (target !== this.target) {
      this.target = target;
      if (target) this.opts.log.info('policy reports: writing one per GuardAgent', { apis: target, mode });
      else this.opts.log.info('policy reports: neither openreports.io/v1alpha1 nor wgpolicyk8s.io/v1alpha2 is served; none are written until one is installed', { mode });
    }
    return apis;
  }

  /** Stop the timer; a pass in flight finishes its current write. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }
}
