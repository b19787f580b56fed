/**
 * `events.k8s.io/v1` Events with series aggregation and bounded cardinality.
 *
 * - The first occurrence of an (object, reason, note) creates an Event; repeats within the
 *   series window only bump `series.count`, written at most once per flush interval.
 * - Notes carry caller input (the denied target), so an agent trying 10,000 distinct targets
 *   would make 10,000 Events in etcd. Per (object, reason) only the first
 *   `maxSeriesPerObject` distinct notes of a window get an Event of their own; later ones are
 *   folded into one aggregate Event per (object, reason) whose `series.count` says how many
 *   there were (as the legacy event correlator aggregates similar events). An Event's note is
 *   immutable in events.k8s.io/v1, so the count lives in the series, not in the note.
 * - Creations across all objects go through one token bucket (`eventsPerSecond`, burst
 *   `eventBurst`); an occurrence that finds it empty is folded the same way, and an aggregate
 *   that finds it empty is created by a later flush, with its count so far.
 *
 * So the Event objects per window stay bounded, whatever callers send: at most the bucket's
 * burst plus its rate times the window. Every occurrence is in the audit log anyway.
 */
import { EventsV1Api, V1MicroTime, type EventsV1Event, type KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { RateLimiter } from '../auth/rate-limit.js';
import type { IncidentRecord } from '../audit/incident-file.js';
import type { Logger } from '../log.js';
import { describeKubeError, mergePatch, statusOf } from '../kube/client.js';
import { printable } from '../printable.js';

export interface EventTarget {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid?: string;
}

export const EventReason = {
  PolicyViolation: 'PolicyViolation',
  IncidentReported: 'IncidentReported',
  AgentSuspended: 'AgentSuspended',
  IdentityMismatch: 'IdentityMismatch',
  ApprovalRequested: 'ApprovalRequested',
  ApprovalApproved: 'ApprovalApproved',
  ApprovalDenied: 'ApprovalDenied',
  ApprovalExpired: 'ApprovalExpired',
} as const;
export type EventReason = (typeof EventReason)[keyof typeof EventReason];

const INCIDENT_REASONS: Readonly<Record<string, EventReason>> = { policy_violation: EventReason.PolicyViolation, identity_mismatch: EventReason.IdentityMismatch };

/**
 * The reason and note of the Event an incident becomes. One a caller filed (`report_incident`,
 * whose evidence names `reported_by`) is `IncidentReported` and says who filed it, whatever
 * type it claims: an agent must not write an Event that reads as one of PolicyGuard's findings.
 *
 * @example incidentEvent({ type: 'identity_mismatch', severity: 'high', description: 'x', evidence: { reported_by: 'system:serviceaccount:a:b' } })
 *   // { reason: 'IncidentReported', note: 'high: reported by system:serviceaccount:a:b: x' }
 */
export function incidentEvent(i: Pick<IncidentRecord, 'type' | 'severity' | 'description' | 'evidence'>): { reason: EventReason; note: string } {
  const reportedBy = i.evidence['reported_by'];
  if (typeof reportedBy === 'string') return { reason: EventReason.IncidentReported, note: `${i.severity}: reported by ${reportedBy}: ${i.description}` };
  return { reason: INCIDENT_REASONS[i.type] ?? EventReason.IncidentReported, note: `${i.severity}: ${i.description}` };
}

/** Events of the expected flow are Normal; everything else is a Warning. */
const NORMAL_REASONS: ReadonlySet<EventReason> = new Set([EventReason.ApprovalRequested, EventReason.ApprovalApproved]);

export interface EventRecorderOptions {
  kubeConfig: KubeConfig;
  /** `reportingController`, e.g. policyguard.dev/controller. */
  controller: string;
  /** `reportingInstance`: this replica. */
  instance: string;
  log: Logger;
  /** Repeats within this window join the series (default 10 min). */
  seriesWindowMs?: number;
  /** How often pending series counts are written (default 1 s). */
  flushIntervalMs?: number;
  /** Remembered series at most (oldest forgotten first; default 10,000). */
  maxSeries?: number;
  /** Distinct notes per (object, reason) and series window that get an Event of their own (default 5). */
  maxSeriesPerObject?: number;
  /** Event creations per second, all objects together (default 10). */
  eventsPerSecond?: number;
  /** Event creations allowed at once before `eventsPerSecond` applies (default 50). */
  eventBurst?: number;
  /** Clock in epoch milliseconds (default `Date.now`). */
  now?: () => number;
}

interface Series {
  /** The Event as it is (or will be) created; `series` is added on creation when count > 1. */
  event: EventsV1Event & { metadata: { name: string; namespace: string } };
  count: number;
  written: number;
  firstSeen: number;
  lastSeen: number;
  /** pending: waits for a token from the bucket; failed: the next occurrence starts anew. */
  state: 'pending' | 'creating' | 'created' | 'failed';
  /** Creation in flight; increments wait for it. */
  creating: Promise<void> | undefined;
}

/** The series window of one (object, reason): how many distinct notes it has had, and its aggregate. */
interface Group {
  windowStart: number;
  distinct: number;
  aggregate: Series | undefined;
}

/**
 * Limits the API server's Event validation puts on these fields. It measures them with Go's
 * `len`, which counts bytes of UTF-8, though its message says "can have at most 1024
 * characters": a note of 1,000 emoji is 1,000 characters, 2,000 UTF-16 code units (what
 * `String.length` counts) and 4,000 bytes.
 */
const NOTE_MAX_BYTES = 1024;
const INSTANCE_MAX_BYTES = 128;
const ACTION_MAX_BYTES = 128;
/** Event names are DNS-1123 subdomains: at most 253 characters, all ASCII. */
const NAME_MAX = 253;
/** A cut note ends with this, so a reader knows there was more (the audit log has it whole). */
const CUT_MARKER = '…';

/**
 * `text` cut to at most `maxBytes` bytes of UTF-8, as the API server counts them: between two
 * code points, never inside a surrogate pair or a UTF-8 sequence, and ending with `marker`
 * when cut (the marker's bytes count too). Returned unchanged when it fits.
 *
 * @example
 *   truncateUtf8('😀😀😀', 9, '…'); // '😀…' (4 + 3 bytes; a second emoji would make 11)
 *   truncateUtf8('pod-a', 128); // 'pod-a'
 */
export function truncateUtf8(text: string, maxBytes: number, marker = ''): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const budget = maxBytes - Buffer.byteLength(marker);
  let bytes = 0;
  let end = 0;
  for (const codePoint of text) {
    // A lone surrogate is sent as U+FFFD, 3 bytes, which is what byteLength counts for it.
    bytes += Buffer.byteLength(codePoint);
    if (bytes > budget) break;
    end += codePoint.length;
  }
  return text.slice(0, end) + marker;
}

/**
 * A unique Event name for `objectName`: the object's name, cut to leave room for the random
 * suffix (a name cut after it would make two Events of one long-named object the same name),
 * and with no `.` or `-` left before the suffix's dot (not a DNS-1123 subdomain).
 */
function eventName(objectName: string): string {
  const suffix = `.${randomBytes(8).toString('hex')}`;
  return `${objectName.slice(0, NAME_MAX - suffix.length).replace(/[.-]+$/, '')}${suffix}`;
}

/** What the recorder did with occurrences it could not give an Event of their own. */
export interface EventRecorderStats {
  /** Occurrences counted in an aggregate Event (too many distinct notes, or the bucket was empty). */
  folded: number;
  /** Occurrences never written: forgotten (maxSeries) or pending at close. The audit log has them. */
  dropped: number;
}

export class EventRecorder {
  private readonly api: EventsV1Api;
  private readonly series = new Map<string, Series>();
  private readonly groups = new Map<string, Group>();
  private readonly creates: RateLimiter;
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly windowMs: number;
  private readonly maxSeries: number;
  private readonly perObject: number;
  private flushing: Promise<void> = Promise.resolve();
  readonly stats: EventRecorderStats = { folded: 0, dropped: 0 };

  /**
   * @example
   * const recorder = new EventRecorder({ kubeConfig, controller: 'policyguard.dev/controller', instance: 'pod-a', log });
   * recorder.record(target, EventReason.PolicyViolation, 'validate_action', "Tool 'drop_table' denied by no-drops");
   */
  constructor(private readonly opts: EventRecorderOptions) {
    this.api = opts.kubeConfig.makeApiClient(EventsV1Api);
    this.now = opts.now ?? Date.now;
    this.windowMs = opts.seriesWindowMs ?? 600_000;
    this.maxSeries = opts.maxSeries ?? 10_000;
    this.perObject = opts.maxSeriesPerObject ?? 5;
    const burst = opts.eventBurst ?? 50;
    this.creates = new RateLimiter(burst, (burst / (opts.eventsPerSecond ?? 10)) * 1000, 1);
    this.timer = setInterval(() => void this.flush(), opts.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  /** Record one occurrence. Never throws and never waits for the API server. */
  record(target: EventTarget, reason: EventReason, action: string, note: string): void {
    const now = this.now();
    const object = `${target.namespace}/${target.kind}/${target.name}/${target.uid ?? ''}/${reason}`;
    const key = `${object}/${note}`;
    const existing = this.live(this.series.get(key), now);
    if (existing) return this.repeat(existing, now);

    const group = this.groupOf(object, now);
    if (group.distinct < this.perObject && this.takeToken(now)) {
      group.distinct++;
      void this.create(this.remember(key, this.newSeries(target, reason, action, note, now)));
      return;
    }
    this.stats.folded++;
    const aggregate = this.live(group.aggregate, now);
    if (aggregate) return this.repeat(aggregate, now);
    const window = this.windowMs % 60_000 === 0 ? `${this.windowMs / 60_000}m` : `${Math.round(this.windowMs / 1000)}s`;
    const summary = `${reason} occurrences for ${target.kind} ${target.namespace}/${target.name} beyond its first ${this.perObject} distinct notes in ${window} (or beyond the Event rate limit), folded into this Event: series.count says how many; their notes are in the audit log`;
    group.aggregate = this.remember(`${object}\0aggregate`, this.newSeries(target, reason, action, summary, now));
    if (this.takeToken(now)) void this.create(group.aggregate); // else a later flush creates it
  }

  private live(s: Series | undefined, now: number): Series | undefined {
    return s && s.state !== 'failed' && now - s.firstSeen < this.windowMs ? s : undefined;
  }

  private repeat(s: Series, now: number): void {
    s.count++;
    s.lastSeen = now;
  }

  private takeToken(now: number): boolean {
    return this.creates.take('create', now).ok;
  }

  /** The (object, reason)'s current window, started anew when the last one is over. */
  private groupOf(object: string, now: number): Group {
    let group = this.groups.get(object);
    if (!group || now - group.windowStart >= this.windowMs) {
      this.groups.delete(object);
      if (this.groups.size >= this.maxSeries) this.groups.delete(this.groups.keys().next().value!);
      group = { windowStart: now, distinct: 0, aggregate: undefined };
      this.groups.set(object, group);
    }
    return group;
  }

  private newSeries(target: EventTarget, reason: EventReason, action: string, note: string, now: number): Series {
    return {
      event: {
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        metadata: { name: eventName(target.name), namespace: target.namespace },
        eventTime: new V1MicroTime(now),
        reportingController: this.opts.controller,
        reportingInstance: truncateUtf8(this.opts.instance, INSTANCE_MAX_BYTES),
        action: truncateUtf8(action, ACTION_MAX_BYTES),
        reason,
        // Escaped: kubectl prints notes as they are, and an agent's text must not drive the terminal.
        note: truncateUtf8(printable(note), NOTE_MAX_BYTES, CUT_MARKER),
        type: NORMAL_REASONS.has(reason) ? 'Normal' : 'Warning',
        regarding: { apiVersion: target.apiVersion, kind: target.kind, name: target.name, namespace: target.namespace, ...(target.uid ? { uid: target.uid } : {}) },
      },
      count: 1,
      written: 0,
      firstSeen: now,
      lastSeen: now,
      state: 'pending',
      creating: undefined,
    };
  }

  /** Keep `s` under `key`, most recent last; the oldest series is forgotten beyond maxSeries. */
  private remember(key: string, s: Series): Series {
    this.series.delete(key);
    if (this.series.size >= this.maxSeries) {
      const oldest = this.series.keys().next().value!;
      this.stats.dropped += this.unwritten(this.series.get(oldest)!);
      this.series.delete(oldest);
    }
    this.series.set(key, s);
    return s;
  }

  private unwritten(s: Series): number {
    return s.state === 'failed' ? 0 : s.count - s.written;
  }

  private create(s: Series): Promise<void> {
    s.state = 'creating';
    const count = s.count;
    const body: EventsV1Event = count > 1 ? { ...s.event, series: { count, lastObservedTime: new V1MicroTime(s.lastSeen) } } : s.event;
    s.creating = this.api.createNamespacedEvent({ namespace: s.event.metadata.namespace, body }).then(
      () => {
        s.state = 'created';
        s.written = count;
      },
      (err: unknown) => {
        s.state = 'failed';
        this.stats.dropped += s.count;
        const { regarding } = s.event;
        this.opts.log.warn('could not create Event', { reason: s.event.reason, object: `${regarding?.kind}/${regarding?.namespace}/${regarding?.name}`, error: describeKubeError(err) });
      },
    ).finally(() => (s.creating = undefined));
    return s.creating;
  }

  /** Write pending series counts and create aggregates the bucket held back. Serialised; safe to call any time. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushOnce());
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    for (const s of this.series.values()) {
      if (s.creating) await s.creating;
      if (s.state === 'pending') {
        if (this.takeToken(this.now())) await this.create(s);
        continue;
      }
      if (s.state !== 'created' || s.count === s.written) continue;
      const count = s.count;
      try {
        await this.api.patchNamespacedEvent(
          { name: s.event.metadata.name, namespace: s.event.metadata.namespace, body: { series: { count, lastObservedTime: new V1MicroTime(s.lastSeen) } } },
          mergePatch,
        );
        s.written = count;
      } catch (err) {
        // The Event expired (TTL) or was deleted: the next occurrence starts a new series.
        if (statusOf(err) === 404) {
          this.stats.dropped += this.unwritten(s);
          s.state = 'failed';
        }
        else this.opts.log.warn('could not update Event series', { event: `${s.event.metadata.namespace}/${s.event.metadata.name}`, error: describeKubeError(err) });
      }
    }
  }

  /** Flush and stop the timer; what the bucket still holds back is counted as dropped. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    for (const s of this.series.values()) if (s.state === 'pending') this.stats.dropped += s.count;
  }
}
