/**
 * Lease-based leader election (coordination.k8s.io/v1), as client-go's leaderelection does it:
 * take the Lease when it is free or expired, renew it every `retryPeriod`, and give up
 * leadership when a renewal has not succeeded for `renewDeadline`. Optimistic concurrency
 * (resourceVersion on replace) makes two candidates never both win.
 *
 * "Expired" is judged on this replica's own clock only: the elector remembers when it last saw
 * the Lease record change and treats the Lease as expired once `leaseDurationSeconds` have
 * passed since then without a change. The holder's `renewTime` is written by another machine's
 * clock; comparing it with ours would let a replica whose clock runs ahead (or a holder whose
 * clock runs behind) take a Lease that is still being renewed, and two leaders would write status.
 *
 * Only the leader writes status and auto-registers agents; every replica serves decisions.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import { describeKubeError, statusOf } from '../kube/client.js';

export interface LeaderElectionOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  /** How long a Lease stays valid without renewal (default 15 s). */
  leaseDurationMs?: number;
  /** Give up leadership when renewals have failed this long (default 10 s). */
  renewDeadlineMs?: number;
  /** Attempt interval (default 2 s). */
  retryPeriodMs?: number;
  log: Logger;
  onChange?: (leading: boolean) => void;
  /** This replica's clock in epoch milliseconds (default `Date.now`); tests inject their own. */
  now?: () => number;
}

/** What we last saw of the Lease, and when by our own clock. */
interface Observation {
  /** The record's fields that change on every acquire or renew, and its resourceVersion. */
  record: string;
  /** Our clock when `record` was first seen. */
  at: number;
  /** How long the holder promised to renew within (its `leaseDurationSeconds`). */
  durationMs: number;
}

/** Everything a holder changes when it renews or a new holder takes over. */
function recordOf(lease: V1Lease): string {
  const s = lease.spec ?? {};
  const time = (t: unknown) => (t === undefined || t === null ? '' : t instanceof Date ? t.toISOString() : String(t));
  return JSON.stringify([s.holderIdentity ?? '', time(s.renewTime), time(s.acquireTime), s.leaseTransitions ?? 0, s.leaseDurationSeconds ?? 0, lease.metadata?.resourceVersion ?? '']);
}

export class LeaderElector {
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lastRenew = 0;
  private observed: Observation | undefined;
  private readonly now: () => number;
  private readonly api: CoordinationV1Api;
  private readonly leaseMs: number;
  private readonly deadlineMs: number;
  private readonly retryMs: number;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseMs = opts.leaseDurationMs ?? 15_000;
    this.deadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryMs = opts.retryPeriodMs ?? 2_000;
    this.now = opts.now ?? Date.now;
  }

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  /**
   * One attempt to acquire or renew the Lease, as `start()` makes every retry period; resolves
   * with whether this replica leads afterwards. Tests drive it directly with an injected clock.
   *
   * @example const elector = new LeaderElector({ kubeConfig, namespace: 'policyguard', name: 'policyguard-leader', identity: 'pod-a', log, now: () => t });
   * await elector.campaign(); // false while another replica's Lease has not expired on our clock
   */
  async campaign(): Promise<boolean> {
    await this.tick(false);
    return this.leading;
  }

  private schedule(): void {
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.retryMs);
  }

  private setLeading(v: boolean): void {
    if (v === this.leading) return;
    this.leading = v;
    this.opts.log.info(v ? 'became leader' : 'lost leadership', { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity });
    this.opts.onChange?.(v);
  }

  private async tick(reschedule = true): Promise<void> {
    try {
      const ok = await this.tryAcquireOrRenew();
      if (ok) this.lastRenew = this.now();
      if (ok) this.setLeading(true);
      else if (this.leading && this.now() - this.lastRenew > this.deadlineMs) this.setLeading(false);
      else if (!ok && !this.leading) this.setLeading(false);
    } catch (err) {
      this.opts.log.warn('leader election attempt failed', { error: describeKubeError(err) });
      if (this.leading && this.now() - this.lastRenew > this.deadlineMs) this.setLeading(false);
    }
    if (reschedule) this.schedule();
  }

  /** Remember the record if it changed since we last looked; the time is ours, never the holder's. */
  private observe(lease: V1Lease, now: number): Observation {
    const record = recordOf(lease);
    if (this.observed?.record !== record) {
      const seconds = lease.spec?.leaseDurationSeconds;
      this.observed = { record, at: now, durationMs: seconds && seconds > 0 ? seconds * 1000 : this.leaseMs };
    }
    return this.observed;
  }

  private leaseBody(prev: V1Lease | undefined, now: Date): V1Lease {
    const holder = prev?.spec?.holderIdentity;
    const takingOver = holder !== this.opts.identity;
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.opts.name, namespace: this.opts.namespace, ...(prev?.metadata?.resourceVersion ? { resourceVersion: prev.metadata.resourceVersion } : {}) },
      spec: {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
        acquireTime: takingOver ? new V1MicroTime(now.getTime()) : (prev?.spec?.acquireTime ?? new V1MicroTime(now.getTime())),
        renewTime: new V1MicroTime(now.getTime()),
        leaseTransitions: (prev?.spec?.leaseTransitions ?? 0) + (takingOver && holder ? 1 : 0),
      },
    };
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = new Date(this.now());
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      try {
        this.observe(await this.api.createNamespacedLease({ namespace, body: this.leaseBody(undefined, now) }), now.getTime());
        return true;
      } catch (createErr) {
        if (statusOf(createErr) === 409) return false; // someone else created it first
        throw createErr;
      }
    }
    const seen = this.observe(lease, now.getTime());
    const holder = lease.spec?.holderIdentity;
    if (holder && holder !== identity && seen.at + seen.durationMs > now.getTime()) return false;
    try {
      this.observe(await this.api.replaceNamespacedLease({ name, namespace, body: this.leaseBody(lease, now) }), now.getTime());
      return true;
    } catch (err) {
      if (statusOf(err) === 409) return false; // lost the race
      throw err;
    }
  }

  /** Stop campaigning; a leader releases the Lease so another replica takes over at once. */
  async stop(release = true): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.leading && release) {
      try {
        const lease = await this.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
        if (lease.spec?.holderIdentity === this.opts.identity) {
          lease.spec.holderIdentity = undefined;
          lease.spec.renewTime = undefined;
          await this.api.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body: lease });
        }
      } catch (err) {
        this.opts.log.warn('could not release the Lease; it expires on its own', { error: describeKubeError(err) });
      }
    }
    this.setLeading(false);
  }
}
