/**
 * Leader election under clock skew, against the real API server: a Lease's `renewTime` comes
 * from the holder's clock, so an elector must judge expiry only by how long the record has gone
 * unchanged on its own clock (as client-go does). Each elector gets an injected clock and is
 * driven one attempt at a time (`campaign()`), so nothing here depends on real time.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { LeaderElector } from '../../src/controller/leader.js';
import { silentLogger } from '../../src/log.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { createNamespace } from './harness.js';

const LEASE_MS = 4000;
const HOUR_MS = 3_600_000;

let kc: KubeConfig;
let ns: string;

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-skew');
});

/** A clock that moves only when told to. */
function manualClock(start = Date.now()) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

function elector(name: string, identity: string, clock: { now: () => number }): LeaderElector {
  return new LeaderElector({ kubeConfig: kc, namespace: ns, name, identity, leaseDurationMs: LEASE_MS, renewDeadlineMs: 3000, retryPeriodMs: 500, log: silentLogger, now: clock.now });
}

/** A Lease held by "other-replica", whose clock wrote `renewTime`. */
async function leaseHeldByOther(name: string, renewTime: number): Promise<void> {
  await kc.makeApiClient(CoordinationV1Api).createNamespacedLease({
    namespace: ns,
    body: {
      metadata: { name, namespace: ns },
      spec: { holderIdentity: 'other-replica', leaseDurationSeconds: LEASE_MS / 1000, acquireTime: new V1MicroTime(renewTime), renewTime: new V1MicroTime(renewTime), leaseTransitions: 0 },
    },
  });
}

const holderOf = async (name: string) => (await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name, namespace: ns })).spec?.holderIdentity;

describe('leader election judges expiry by its own clock, never by the holder\'s renewTime', () => {
  it.each([
    ['one hour in the past (the holder\'s clock runs behind, or ours ahead)', -HOUR_MS],
    ['one hour in the future (the holder\'s clock runs ahead)', HOUR_MS],
  ])('a Lease whose renewTime is %s is taken exactly when it has gone unchanged for a lease duration on our clock', async (_what, skew) => {
    const name = `skew-${skew > 0 ? 'future' : 'past'}`;
    await leaseHeldByOther(name, Date.now() + skew);
    const clock = manualClock();
    const e = elector(name, 'challenger', clock);
    // Attempts over 3.6 s of our clock: the record never changes, but a lease duration has not passed.
    for (let i = 0; i < 5; i++) {
      expect(await e.campaign(), `attempt ${i + 1} at +${i * 900} ms`).toBe(false);
      clock.advance(900);
    }
    expect(await holderOf(name)).toBe('other-replica');
    clock.advance(LEASE_MS - 5 * 900 + 100); // now 4.1 s after we first saw this record
    expect(await e.campaign()).toBe(true);
    const lease = await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name, namespace: ns });
    expect(lease.spec).toMatchObject({ holderIdentity: 'challenger', leaseTransitions: 1 });
  });

  it('a holder that keeps renewing is never taken over, however far the challenger\'s clock jumps; once it stops, it is', async () => {
    const name = 'skew-renewing';
    const clockA = manualClock();
    const clockB = manualClock(clockA.now() + HOUR_MS); // B's clock runs an hour ahead of A's
    const a = elector(name, 'replica-a', clockA);
    const b = elector(name, 'replica-b', clockB);
    expect(await a.campaign()).toBe(true);
    for (let i = 0; i < 5; i++) {
      expect(await b.campaign(), `challenge ${i + 1}`).toBe(false);
      clockB.advance(10 * LEASE_MS); // ten lease durations pass on B's clock between its looks…
      clockA.advance(500);
      expect(await a.campaign(), `renewal ${i + 1}`).toBe(true); // …but A renews in between
    }
    expect(await b.campaign()).toBe(false);
    expect(await holderOf(name)).toBe('replica-a');
    // A stops renewing (say it hangs): B takes over one lease duration later, on B's clock.
    clockB.advance(LEASE_MS - 1);
    expect(await b.campaign()).toBe(false);
    clockB.advance(2);
    expect(await b.campaign()).toBe(true);
    expect(await holderOf(name)).toBe('replica-b');
    // A, back, sees B's record and steps down once its renew deadline has passed on its clock.
    clockA.advance(3001);
    expect(await a.campaign()).toBe(false);
    expect(a.isLeader()).toBe(false);
  });
});
