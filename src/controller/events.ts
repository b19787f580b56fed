/**
 * `events.k8s.io/v1` Events with series aggregation (DESIGN §6). The first occurrence creates
 * an Event; repeats of the same (object, reason, note) within the series window only bump
 * `series.count`, written at most once per flush interval. An agent hammering a denied tool
 * makes one Event object, not thousands.
 */
import { EventsV1Api, V1MicroTime, type EventsV1Event, type KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import { describeKubeError, mergePatch, statusOf } from '../kube/client.js';

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
} as const;
export type EventReason = (typeof EventReason)[keyof typeof EventReason];

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
}

interface Series {
  name: string;
  namespace: string;
  count: number;
  written: number;
  firstSeen: number;
  lastSeen: number;
  /** Creation in flight; increments wait for it. */
  creating: Promise<void> | undefined;
  failed: boolean;
}

const NOTE_MAX = 1024;

export class EventRecorder {
  private readonly api: EventsV1Api;
  private readonly series = new Map<string, Series>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly opts: EventRecorderOptions) {
    this.api = opts.kubeConfig.makeApiClient(EventsV1Api);
    this.timer = setInterval(() => void this.flush(), opts.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  /** Record one occurrence. Never throws and never waits for the API server. */
  record(target: EventTarget, reason: EventReason, action: string, note: string): void {
    const key = `${target.namespace}/${target.kind}/${target.name}/${target.uid ?? ''}/${reason}/${note}`;
    const now = Date.now();
    const existing = this.series.get(key);
    if (existing && !existing.failed && now - existing.firstSeen < (this.opts.seriesWindowMs ?? 600_000)) {
      existing.count++;
      existing.lastSeen = now;
      return;
    }
    if (this.series.size >= (this.opts.maxSeries ?? 10_000)) this.series.delete(this.series.keys().next().value!);
    const s: Series = {
      name: `${target.name}.${randomBytes(8).toString('hex')}`.slice(0, 253),
      namespace: target.namespace,
      count: 1,
      written: 1,
      firstSeen: now,
      lastSeen: now,
      creating: undefined,
      failed: false,
    };
    this.series.delete(key);
    this.series.set(key, s);
    s.creating = this.create(s, target, reason, action, note.slice(0, NOTE_MAX)).finally(() => (s.creating = undefined));
  }

  private async create(s: Series, target: EventTarget, reason: EventReason, action: string, note: string): Promise<void> {
    const body: EventsV1Event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: s.name, namespace: s.namespace },
      eventTime: new V1MicroTime(s.firstSeen),
      reportingController: this.opts.controller,
      reportingInstance: this.opts.instance.slice(0, 128),
      action,
      reason,
      note,
      type: 'Warning',
      regarding: { apiVersion: target.apiVersion, kind: target.kind, name: target.name, namespace: target.namespace, ...(target.uid ? { uid: target.uid } : {}) },
    };
    try {
      await this.api.createNamespacedEvent({ namespace: s.namespace, body });
    } catch (err) {
      s.failed = true;
      this.opts.log.warn('could not create Event', { reason, object: `${target.kind}/${target.namespace}/${target.name}`, error: describeKubeError(err) });
    }
  }

  /** Write pending series counts. Serialised; safe to call any time. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushOnce());
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    for (const s of this.series.values()) {
      if (s.creating) await s.creating;
      if (s.failed || s.count === s.written) continue;
      const count = s.count;
      try {
        await this.api.patchNamespacedEvent(
          { name: s.name, namespace: s.namespace, body: { series: { count, lastObservedTime: new V1MicroTime(s.lastSeen) } } },
          mergePatch,
        );
        s.written = count;
      } catch (err) {
        // The Event expired (TTL) or was deleted: the next occurrence starts a new series.
        if (statusOf(err) === 404) s.failed = true;
        else this.opts.log.warn('could not update Event series', { event: `${s.namespace}/${s.name}`, error: describeKubeError(err) });
      }
    }
  }

  /** Flush and stop the timer. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
