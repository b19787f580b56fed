/**
 * Event cardinality is bounded whatever callers send (src/controller/events.ts): distinct notes
 * per (object, reason) beyond a few are folded into one aggregate Event, and creations go
 * through one token bucket. Checked by counting the Event objects the real API server holds.
 */
import { EventsV1Api, type EventsV1Event, type KubeConfig } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { EventReason, EventRecorder, type EventRecorderOptions, type EventTarget } from '../../src/controller/events.js';
import { silentLogger } from '../../src/log.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { createNamespace } from './harness.js';

let kc: KubeConfig;
let ns: string;

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-events');
});

const agent = (name: string): EventTarget => ({ apiVersion: 'policyguard.dev/v1alpha1', kind: 'GuardAgent', name, namespace: ns, uid: `uid-${name}` });

/** A recorder that writes only when flushed (no timer flushes in between), as replica `instance`. */
function recorder(instance: string, extra: Partial<EventRecorderOptions> = {}): EventRecorder {
  return new EventRecorder({ kubeConfig: kc, controller: 'policyguard.dev/controller', instance, log: silentLogger, flushIntervalMs: 3_600_000, ...extra });
}

/** The Events `instance` made, as the API server holds them. */
async function eventsOf(instance: string): Promise<EventsV1Event[]> {
  return (await kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.reportingInstance === instance);
}

const occurrences = (e: EventsV1Event) => e.series?.count ?? 1;

describe('Event cardinality', () => {
  it('1,000 distinct notes for one agent make 6 Events: the first 5 notes, and one aggregate whose series counts the other 995', async () => {
    const r = recorder('distinct-notes');
    for (let i = 0; i < 1000; i++) r.record(agent('prober'), EventReason.PolicyViolation, 'validate_action', `Tool 'probe_${i}' denied by policy no-probes`);
    // A repeat of an early note joins its own series, not the aggregate.
    for (let i = 0; i < 3; i++) r.record(agent('prober'), EventReason.PolicyViolation, 'validate_action', "Tool 'probe_0' denied by policy no-probes");
    await r.close();
    const events = await eventsOf('distinct-notes');
    expect(events).toHaveLength(6);
    const aggregate = events.filter((e) => /beyond its first 5 distinct notes/.test(e.note ?? ''));
    expect(aggregate).toHaveLength(1);
    expect(aggregate[0]!.note).toBe(
      `PolicyViolation occurrences for GuardAgent ${ns}/prober beyond its first 5 distinct notes in 10m (or beyond the Event rate limit), folded into this Event: series.count says how many; their notes are in the audit log`,
    );
    expect(aggregate[0]!).toMatchObject({ reason: 'PolicyViolation', type: 'Warning', regarding: { kind: 'GuardAgent', name: 'prober', uid: 'uid-prober' } });
    expect(occurrences(aggregate[0]!)).toBe(995);
    const own = events.filter((e) => e !== aggregate[0]).map((e) => [e.note, occurrences(e)]).sort();
    expect(own).toEqual([0, 1, 2, 3, 4].map((i) => [`Tool 'probe_${i}' denied by policy no-probes`, i === 0 ? 4 : 1]).sort());
    expect(events.reduce((n, e) => n + occurrences(e), 0)).toBe(1003); // every occurrence is accounted for
    expect(r.stats).toEqual({ folded: 995, dropped: 0 });
  });

  it('another reason on the same agent has its own 5 + 1', async () => {
    const r = recorder('two-reasons');
    for (let i = 0; i < 20; i++) {
      r.record(agent('both'), EventReason.PolicyViolation, 'validate_action', `deny ${i}`);
      r.record(agent('both'), EventReason.IncidentReported, 'report_incident', `incident ${i}`);
    }
    await r.close();
    const events = await eventsOf('two-reasons');
    for (const reason of ['PolicyViolation', 'IncidentReported']) {
      const mine = events.filter((e) => e.reason === reason);
      expect(mine, reason).toHaveLength(6);
      expect(mine.reduce((n, e) => n + occurrences(e), 0), reason).toBe(20);
    }
  });

  it('a global token bucket bounds creations across many agents; what it holds back is created, with its count, as tokens come back', async () => {
    let t = Date.now();
    const r = recorder('bucket', { eventBurst: 20, eventsPerSecond: 1, now: () => t });
    for (let i = 0; i < 200; i++) for (let j = 0; j < 2; j++) r.record(agent(`agent-${i}`), EventReason.PolicyViolation, 'validate_action', `deny ${i}.${j}`);
    await r.flush();
    // 20 tokens: agent-0..9 get their two notes each; the 190 others wait as aggregates, with the bucket empty.
    expect(await eventsOf('bucket')).toHaveLength(20);
    expect(r.stats.folded).toBe(380);
    t += 10_000; // ten tokens come back
    await r.flush();
    const events = await eventsOf('bucket');
    expect(events).toHaveLength(30);
    const aggregates = events.filter((e) => /folded into this Event/.test(e.note ?? ''));
    expect(aggregates).toHaveLength(10);
    for (const a of aggregates) expect(occurrences(a), a.regarding?.name).toBe(2); // created with their count so far
    await r.close();
    expect(r.stats.dropped).toBe(360); // 180 aggregates never got a token; the audit log has them
    expect(await eventsOf('bucket')).toHaveLength(30);
  });
});

describe('Event fields within the limits the API server counts in bytes', () => {
  it('a note of 1,000 emoji and a non-ASCII instance make an Event, cut to 1024 and 128 bytes at whole characters', async () => {
    const instance = `replica-${'é'.repeat(100)}`; // 108 characters, 208 bytes
    const r = recorder(instance);
    const notes = ['😀'.repeat(1000), `${'a'.repeat(1023)}😀`]; // the red-team's rule message; a cut at 1024 code units would split the pair
    for (const note of notes) r.record(agent('emoji'), EventReason.PolicyViolation, 'validate_action', note);
    await r.close();
    expect(r.stats).toEqual({ folded: 0, dropped: 0 });
    const stored = `replica-${'é'.repeat(60)}`; // 8 + 120 bytes
    const events = await eventsOf(stored);
    expect(events.map((e) => e.note).sort()).toEqual([`${'a'.repeat(1021)}…`, `${'😀'.repeat(255)}…`]);
    for (const e of events) expect(Buffer.byteLength(e.note!)).toBeLessThanOrEqual(1024);
  });

  it('a note holding terminal escapes and invisible characters (an agent wrote it) is stored escaped: kubectl prints notes as they are', async () => {
    const r = recorder('escapes');
    r.record(agent('escapes'), EventReason.IncidentReported, 'report_incident', 'low: \u001b[1A\u001b[2Kok\u202e\u200b');
    await r.close();
    expect((await eventsOf('escapes')).map((e) => e.note)).toEqual(['low: \\u001b[1A\\u001b[2Kok\\u202e\\u200b']);
  });

  it('an object with a 253-character name gets an Event per note, each with its own valid name', async () => {
    const name = `${'a'.repeat(235)}.${'b'.repeat(17)}`; // the cut leaves "a…a." before the suffix
    const r = recorder('long-name');
    for (const note of ['first', 'second']) r.record(agent(name), EventReason.PolicyViolation, 'validate_action', note);
    await r.close();
    expect(r.stats).toEqual({ folded: 0, dropped: 0 });
    const events = await eventsOf('long-name');
    expect(events.map((e) => e.note).sort()).toEqual(['first', 'second']);
    for (const e of events) expect(e.metadata!.name).toMatch(new RegExp(`^a{235}\\.[0-9a-f]{16}$`));
  });
});
