/**
 * The ConfigMap audit sink against a real kube-apiserver + etcd (tests/controlplane): the chain
 * across reopen and rotation, the size bound of every ConfigMap, 10,000 records without loss
 * (issue 4), queries over several replicas, conflicts with other writers, and an API server
 * that goes away and comes back.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM_AGENT_ID, createAuditIncidentLog } from '../../src/audit/audit-incidents.js';
import { isGenesisAnchor, type AuditAnchor, type AuditAnchorStore } from '../../src/audit/anchor.js';
import { ConfigMapAnchorStore } from '../../src/audit/configmap-anchor.js';
import { openConfigMapAuditSink, type ConfigMapAuditSinkOptions } from '../../src/audit/configmap-sink.js';
import { openFileAuditSink } from '../../src/audit/file-sink.js';
import { incidentInput } from '../../src/audit/incident-fixture.js';
import { canonicalJson, createAuditRecord, hashRecord, type AuditEntryInput, type AuditRecord } from '../../src/audit/record.js';
import type { AuditSink } from '../../src/audit/sink.js';
import { AuditWriteError } from '../../src/audit/sink.js';
import { verifyAuditChain, verifyConfigMapRing } from '../../src/audit/verify.js';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';

const KIB = 1024;
const kc = sharedKubeConfig();
const core = kc.makeApiClient(CoreV1Api);
const namespaces: string[] = [];
const sinks: AuditSink[] = [];

afterAll(async () => {
  await Promise.allSettled(sinks.splice(0).map((sink) => sink.close()));
  await Promise.allSettled(namespaces.map((name) => core.deleteNamespace({ name })));
});

/** A namespace of its own for each test, so rings and listings never mix. */
async function newNamespace(kubeConfig: KubeConfig = kc): Promise<string> {
  const name = `pg-audit-cm-${randomBytes(3).toString('hex')}`;
  await kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  if (kubeConfig === kc) namespaces.push(name);
  return name;
}

interface Opened {
  sink: AuditSink;
  logs: string[];
}

/** A sink that writes only on flush() unless a test says otherwise. */
async function open(opts: Partial<ConfigMapAuditSinkOptions> & { namespace: string; replica: string }): Promise<Opened> {
  const logs: string[] = [];
  const sink = await openConfigMapAuditSink({ kubeConfig: kc, flushIntervalMs: 3_600_000, log: (m) => logs.push(m), ...opts });
  sinks.push(sink);
  return { sink, logs };
}

function input(overrides: { agent?: string; type?: string; allowed?: boolean; parameters?: Record<string, unknown> } = {}): AuditEntryInput {
  const allowed = overrides.allowed ?? true;
  return {
    action_id: `act_${randomBytes(6).toString('hex')}`,
    agent_id: overrides.agent ?? 'etl',
    caller: 'system:serviceaccount:agents:etl',
    action: {
      type: overrides.type ?? 'tool_call',
      target: 'db.query',
      parameters: overrides.parameters ?? { sql: 'SELECT id, name, created_at FROM customers WHERE region = $1 LIMIT 100', args: ['eu-west'] },
      context: 'nightly export of the customer table for the reporting warehouse',
    },
    evaluation: {
      allowed,
      decision: allowed ? 'allow' : 'deny',
      require_approval: false,
      reason: allowed ? 'allowed by policy etl/readonly-db' : 'denied by policy etl/no-writes',
      matched: [{ policy: 'etl/readonly-db', rule: 'select-only' }],
      audit_findings: [],
    },
    revision: '4711',
  };
}

async function ringOf(namespace: string, replica?: string): Promise<V1ConfigMap[]> {
  const labelSelector = `policyguard.dev/audit=true${replica ? `,policyguard.dev/replica=${replica}` : ''}`;
  return (await core.listNamespacedConfigMap({ namespace, labelSelector })).items;
}

const recordsOf = (cm: V1ConfigMap): AuditRecord[] =>
  (cm.data?.['records.jsonl'] ?? '').split('\n').filter(Boolean).map((line) => JSON.parse(line) as AuditRecord);
const seqOf = (cm: V1ConfigMap): number => Number(cm.metadata?.annotations?.['policyguard.dev/audit-sequence']);
/** Records of a ring in chain order. */
const chainOf = (cms: V1ConfigMap[]): AuditRecord[] => [...cms].sort((a, b) => seqOf(a) - seqOf(b)).flatMap(recordsOf);
/** Bytes of a ConfigMap's data as the API server counts them (keys + values). */
const dataBytes = (cm: V1ConfigMap): number =>
  Object.entries(cm.data ?? {}).reduce((sum, [key, value]) => sum + Buffer.byteLength(key) + Buffer.byteLength(value), 0);

/** Read-modify-replace by a third party, retrying its own conflicts like any well-behaved client. */
async function meddle(namespace: string, name: string, change: (cm: V1ConfigMap) => void): Promise<void> {
  for (;;) {
    const cm = await core.readNamespacedConfigMap({ name, namespace });
    change(cm);
    try {
      await core.replaceNamespacedConfigMap({ name, namespace, body: cm });
      return;
    } catch (error) {
      if ((error as { code?: number }).code !== 409) throw error;
    }
  }
}

/**
 * A KubeConfig whose CoreV1Api loses the answer to the next call of each method in `lose`: the
 * API server applies the write, the caller sees a connection error — as when a response is cut
 * off on its way back.
 */
function losingAnswers(real: KubeConfig): { kubeConfig: KubeConfig; lose: Set<string> } {
  const lose = new Set<string>();
  const kubeConfig = Object.create(real) as KubeConfig;
  kubeConfig.makeApiClient = ((api: never) => {
    const client = real.makeApiClient(api) as object;
    return new Proxy(client, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return async (...args: unknown[]) => {
          const result = (await value.apply(target, args)) as unknown;
          if (typeof prop === 'string' && lose.delete(prop)) throw new Error('socket hang up (the test lost the answer)');
          return result;
        };
      },
    });
  }) as KubeConfig['makeApiClient'];
  return { kubeConfig, lose };
}

describe('ConfigMap audit sink', () => {
  it('writes labelled, annotated ConfigMaps; a reopened sink continues the chain; the ring verifies', async () => {
    const namespace = await newNamespace();
    const first = await open({ namespace, replica: 'policyguard-0' });
    const a = first.sink.append(input({ parameters: { user: 'bob', password: 'hunter2' } })).record;
    const b = first.sink.append(input()).record;
    await first.sink.close();

    const [cm, ...others] = await ringOf(namespace);
    expect(others).toEqual([]);
    expect(cm?.metadata).toMatchObject({
      name: 'policyguard-audit-policyguard-0-0',
      labels: { 'app.kubernetes.io/name': 'policyguard', 'policyguard.dev/audit': 'true', 'policyguard.dev/replica': 'policyguard-0' },
      annotations: { 'policyguard.dev/audit-sequence': '1', 'policyguard.dev/audit-chain-head': b.hash },
    });
    expect(cm?.data?.['records.jsonl']).not.toContain('hunter2');
    expect(recordsOf(cm!)).toEqual([a, b]);

    const second = await open({ namespace, replica: 'policyguard-0' });
    const c = second.sink.append(input()).record;
    expect(c.prev_hash).toBe(b.hash);
    await second.sink.flush();
    expect(second.sink.stats).toEqual({ written: 1, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });
    expect(await verifyConfigMapRing(kc, namespace, 'policyguard-0')).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('verification catches an edited record and records cut off the end of a segment', async () => {
    const namespace = await newNamespace();
    const { sink } = await open({ namespace, replica: 'pod-v' });
    const records = Array.from({ length: 4 }, () => sink.append(input()).record);
    await sink.flush();
    const name = 'policyguard-audit-pod-v-0';
    expect(await verifyConfigMapRing(kc, namespace, 'pod-v')).toMatchObject({ ok: true, records: 4, segments: 1 });

    await meddle(namespace, name, (cm) => {
      cm.data!['records.jsonl'] = cm.data!['records.jsonl']!.replace('"allowed":true', '"allowed":false');
    });
    expect(await verifyConfigMapRing(kc, namespace, 'pod-v')).toMatchObject({
      ok: false, records: 3, problems: [{ file: `configmap/${namespace}/${name}`, line: 1, entryId: records[0]!.entry_id, reason: expect.stringMatching(/^hash mismatch/) }],
    });
    // A read of the log (get_audit_log, compliance) does not serve the edited record either.
    await expect(sink.query({ limit: 10 })).rejects.toThrow(
      `the audit log holds a record that was changed after it was written: ${records[0]!.entry_id} in configmap/${namespace}/${name} (hash mismatch: the record was changed after it was written)`,
    );

    await meddle(namespace, name, (cm) => {
      cm.data!['records.jsonl'] = records.slice(0, 3).map((r) => `${JSON.stringify(r)}\n`).join('');
    });
    expect(await verifyConfigMapRing(kc, namespace, 'pod-v')).toMatchObject({
      ok: false, records: 3, problems: [{ line: 3, reason: expect.stringMatching(/^chain-head annotation .* does not match/) }, { line: 4, reason: expect.stringMatching(/^truncated/) }],
    });
    await expect(sink.query({ limit: 10 })).rejects.toThrow(
      `${records[2]!.entry_id} in configmap/${namespace}/${name} (the newest record of the segment, but its chain-head annotation policyguard.dev/audit-chain-head=${records[3]!.hash} names another record`,
    );
  });

  describe('a ring changed in the API server is not served by reads', () => {
    /** Records over three segments of at least two each; `change` rewrites the segments' lines (oldest segment first) and annotations. */
    const changed = async (change: (segments: string[][], cms: V1ConfigMap[]) => void) => {
      const namespace = await newNamespace();
      const size = Buffer.byteLength(`${JSON.stringify(createAuditRecord(input({ parameters: { n: 1 } }), '0'.repeat(64)))}\n`);
      const { sink } = await open({ namespace, replica: 'pod-t', ringSize: 4, maxBytes: Math.floor(size * 2.5) });
      const records: AuditRecord[] = [];
      for (let n = 1; n <= 6; n++) records.push(sink.append(input({ parameters: { n } })).record);
      await sink.flush();
      const cms = [...(await ringOf(namespace, 'pod-t'))].sort((a, b) => seqOf(a) - seqOf(b));
      const segments = cms.map((cm) => (cm.data?.['records.jsonl'] ?? '').split('\n').filter(Boolean));
      expect(segments.map((lines) => lines.length)).toEqual([2, 2, 2]);
      change(segments, cms);
      for (const [i, cm] of cms.entries()) {
        await meddle(namespace, cm.metadata!.name!, (now) => {
          now.data = { 'records.jsonl': segments[i]!.map((l) => `${l}\n`).join('') };
          now.metadata!.annotations = cm.metadata!.annotations;
        });
      }
      return { sink, records, where: (i: number) => `configmap/${namespace}/${cms[i]!.metadata!.name}` };
    };
    const rehashed = (line: string, change: Partial<AuditRecord>): string => {
      const { hash: _hash, mac: _mac, ...fields } = { ...(JSON.parse(line) as AuditRecord), ...change };
      return `${canonicalJson(fields).slice(0, -1)},"hash":"${hashRecord(fields.prev_hash, fields)}"}`;
    };

    it('as written, the ring is served whole across its segments', async () => {
      const { sink, records } = await changed(() => {});
      expect((await sink.query({ limit: 10 })).entries.map((r) => r.entry_id)).toEqual(records.map((r) => r.entry_id).reverse());
    });
    it('a record edited and its hash recomputed (no key needed): the record after it does not link to it', async () => {
      const { sink, records, where } = await changed((segments) => {
        segments[1]![0] = rehashed(segments[1]![0]!, { agent_id: 'someone-else' });
      });
      await expect(sink.query({ limit: 10 })).rejects.toThrow(`${records[2]!.entry_id} in ${where(1)} (the record after it does not link to it`);
    });
    it('the newest record of a segment removed and its annotation made to match: the next segment does not link to it', async () => {
      const { sink, records, where } = await changed((segments, cms) => {
        segments[0]!.pop();
        cms[0]!.metadata!.annotations!['policyguard.dev/audit-chain-head'] = (JSON.parse(segments[0]![0]!) as AuditRecord).hash;
      });
      await expect(sink.query({ limit: 10 })).rejects.toThrow(`${records[0]!.entry_id} in ${where(0)} (the record after it does not link to it`);
    });
    it('an unreadable line: the record before it does not link', async () => {
      const { sink, records, where } = await changed((segments) => {
        segments[2]!.splice(1, 0, '{"not":"a record"');
      });
      await expect(sink.query({ limit: 10 })).rejects.toThrow(`${records[4]!.entry_id} in ${where(2)} (the record after it does not link to it`);
    });
  });

  it('rotates through a ring of 4 ConfigMaps of at most 20 KiB, keeps the newest records, resumes after a wrap', async () => {
    const namespace = await newNamespace();
    const replica = 'pod-r';
    const maxBytes = 20 * KIB;
    const opts = { namespace, replica, maxBytes, ringSize: 4 };
    const first = await open(opts);
    const appended: AuditRecord[] = [];
    // ~1 KiB records in uneven batches, so batches split across ConfigMaps and the ring wraps several times.
    for (let i = 0; i < 300; i++) {
      appended.push(first.sink.append(input({ parameters: { i, blob: 'x'.repeat(400 + (i % 7) * 60) } })).record);
      if (i % 37 === 0) await first.sink.flush();
    }
    await first.sink.close();
    expect(first.sink.stats).toEqual({ written: 300, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });

    const check = async () => {
      const cms = await ringOf(namespace, replica);
      expect(cms.length).toBe(4);
      for (const cm of cms) {
        expect(dataBytes(cm)).toBeLessThan(maxBytes);
        for (const value of Object.values(cm.data ?? {})) expect(Buffer.byteLength(value)).toBeLessThanOrEqual(maxBytes);
      }
      const seqs = cms.map(seqOf).sort((x, y) => x - y);
      expect(seqs).toEqual([0, 1, 2, 3].map((k) => seqs[0]! + k));
      return { cms, seqs };
    };
    const { cms, seqs } = await check();
    expect(seqs[0]).toBeGreaterThan(4); // wrapped at least once
    // The ring holds exactly the newest records, in order.
    const kept = chainOf(cms);
    expect(kept.length).toBeGreaterThan(40);
    expect(kept).toEqual(appended.slice(-kept.length));
    expect(first.logs.some((m) => /^retention: segment \d+ overwrote policyguard-audit-pod-r-\d \(segment \d+\)/.test(m))).toBe(true);
    const verified = await verifyConfigMapRing(kc, namespace, replica, { retained: 4 });
    expect(verified).toMatchObject({ ok: true, records: kept.length, segments: 4 });

    // The newest segment sits somewhere in the middle of the ring now; a new sink must continue there.
    const second = await open(opts);
    const next = second.sink.append(input()).record;
    expect(next.prev_hash).toBe(appended.at(-1)!.hash);
    await second.sink.flush();
    // It lands in the newest segment, or in the one after it when that was full.
    const holder = (await ringOf(namespace, replica)).find((cm) => recordsOf(cm).some((r) => r.entry_id === next.entry_id));
    expect([seqs.at(-1), seqs.at(-1)! + 1]).toContain(seqOf(holder!));
    expect(second.logs.filter((m) => !m.startsWith('retention:'))).toEqual([]);
    for (let i = 0; i < 60; i++) second.sink.append(input({ parameters: { blob: 'y'.repeat(500) } }));
    await second.sink.flush();
    const after = await check();
    expect(after.seqs.at(-1)).toBeGreaterThan(seqs.at(-1)!);
    expect((await verifyConfigMapRing(kc, namespace, replica, { retained: 4 })).ok).toBe(true);
    await second.sink.close();

    // Records cut from the head by deleting the oldest ConfigMap: a wrapped ring holds all of its.
    const oldest = after.cms.find((cm) => seqOf(cm) === after.seqs[0])!;
    await core.deleteNamespacedConfigMap({ namespace, name: oldest.metadata!.name! });
    const cut = await verifyConfigMapRing(kc, namespace, replica, { retained: 4 });
    expect(cut.problems[0]?.reason).toMatch(/^segments? .* missing, but only 3 segment\(s\) remain: retention deletes the oldest segments only once more than 4 exist/);
    await expect(open(opts)).rejects.toThrow(/only 3 segment\(s\) remain/);
  });

  it('resumes at the segment with the highest sequence, wherever it sits in the ring', async () => {
    const namespace = await newNamespace();
    // A wrapped ring, laid out by hand: segments 2, 3, 4 at indexes 1, 2, 3 and the newest, 5, at index 0.
    const chain: AuditRecord[] = [];
    for (let i = 0; i < 8; i++) chain.push(createAuditRecord(input(), chain.at(-1)?.hash ?? 'f'.repeat(64)));
    const layout = [{ index: 1, seq: 2 }, { index: 2, seq: 3 }, { index: 3, seq: 4 }, { index: 0, seq: 5 }];
    for (const [k, { index, seq }] of layout.entries()) {
      const records = chain.slice(k * 2, k * 2 + 2);
      await core.createNamespacedConfigMap({
        namespace,
        body: {
          metadata: {
            name: `policyguard-audit-pod-w-${index}`,
            labels: { 'app.kubernetes.io/name': 'policyguard', 'policyguard.dev/audit': 'true', 'policyguard.dev/replica': 'pod-w' },
            annotations: { 'policyguard.dev/audit-sequence': String(seq), 'policyguard.dev/audit-chain-head': records.at(-1)!.hash },
          },
          data: { 'records.jsonl': records.map((r) => `${JSON.stringify(r)}\n`).join('') },
        },
      });
    }
    expect(await verifyConfigMapRing(kc, namespace, 'pod-w', { anchor: false, retained: 4 })).toMatchObject({ ok: true, records: 8, segments: 4 });

    // Laid out without an anchor: accepted as the operator of a ring from before anchors would.
    const { sink, logs } = await open({ namespace, replica: 'pod-w', ringSize: 4, acceptMissingAnchor: true });
    const next = sink.append(input()).record;
    expect(next.prev_hash).toBe(chain.at(-1)!.hash);
    await sink.flush();
    const newest = await core.readNamespacedConfigMap({ namespace, name: 'policyguard-audit-pod-w-0' });
    expect(recordsOf(newest)).toEqual([...chain.slice(6), next]);
    expect(seqOf(newest)).toBe(5);
    expect(logs).toEqual([expect.stringMatching(/^the audit log holds records up to aud_\w+ \(policyguard-audit-pod-w-0:2\) but has no anchor .*; accepted with --audit-accept-missing-anchor/)]);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-w', { retained: 4 })).toMatchObject({ ok: true, records: 9, segments: 4 });
  });

  it('does not store a batch twice when the answer to its write was lost', async () => {
    const namespace = await newNamespace();
    const { kubeConfig, lose } = losingAnswers(kc);
    const { sink } = await open({ namespace, replica: 'pod-l', kubeConfig });
    const appended = Array.from({ length: 3 }, () => sink.append(input()).record);
    lose.add('createNamespacedConfigMap');
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    expect(sink.stats).toEqual({ written: 0, dropped: 0, refused: 0, buffered: 3, failedWrites: expect.any(Number), writesFailing: expect.any(Number) });
    expect(sink.stats.failedWrites).toBeGreaterThanOrEqual(1);
    await sink.flush();
    appended.push(...Array.from({ length: 3 }, () => sink.append(input()).record));
    lose.add('replaceNamespacedConfigMap');
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    await sink.flush();
    expect(sink.stats).toEqual({ written: 6, dropped: 0, refused: 0, buffered: 0, failedWrites: expect.any(Number), writesFailing: 0 });
    expect(chainOf(await ringOf(namespace, 'pod-l'))).toEqual(appended);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-l')).toMatchObject({ ok: true, records: 6, segments: 1 });
  });

  it('writes a ConfigMap someone deleted anew, and verification shows the gap', async () => {
    const namespace = await newNamespace();
    const { sink, logs } = await open({ namespace, replica: 'pod-d' });
    sink.append(input());
    await sink.flush();
    await core.deleteNamespacedConfigMap({ namespace, name: 'policyguard-audit-pod-d-0' });
    const later = [sink.append(input()).record, sink.append(input()).record];
    await sink.flush();
    expect(chainOf(await ringOf(namespace, 'pod-d'))).toEqual(later);
    expect(logs.some((m) => /policyguard-audit-pod-d-0 was deleted by someone else/.test(m))).toBe(true);
    expect((await verifyConfigMapRing(kc, namespace, 'pod-d')).problems[0]).toMatchObject({
      line: 1, entryId: later[0]!.entry_id, reason: expect.stringMatching(/^prev_hash mismatch: expected 0{64} \(genesis/),
    });
  });

  it('a ring made smaller keeps only its newest segments, oldest deleted first, the chain intact', async () => {
    const namespace = await newNamespace();
    const opts = { namespace, replica: 'pod-s', maxBytes: 20 * KIB };
    const record = () => input({ parameters: { blob: 'x'.repeat(600) } });
    const big = await open({ ...opts, ringSize: 4 });
    for (let i = 0; i < 110; i++) big.sink.append(record());
    await big.sink.close();
    const seqs = (await ringOf(namespace, 'pod-s')).map(seqOf).sort((a, b) => a - b);
    expect(seqs).toHaveLength(4);

    const small = await open({ ...opts, ringSize: 2 });
    expect((await ringOf(namespace, 'pod-s')).map(seqOf).sort((a, b) => a - b)).toEqual(seqs.slice(2));
    expect(small.logs.filter((m) => m.startsWith('retention: deleted'))).toHaveLength(2);
    expect((await verifyConfigMapRing(kc, namespace, 'pod-s', { retained: 2 })).ok).toBe(true);
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 25; i++) small.sink.append(record());
      await small.sink.flush();
      const now = (await ringOf(namespace, 'pod-s')).map(seqOf).sort((a, b) => a - b);
      expect(now).toHaveLength(2);
      expect(now[1]! - now[0]!).toBe(1);
      expect((await verifyConfigMapRing(kc, namespace, 'pod-s', { retained: 2 })).ok).toBe(true);
    }
  });

  it('keeps a record larger than a ConfigMap may hold without its largest argument (its size and sha256 instead), and the chain goes on', async () => {
    const namespace = await newNamespace();
    const { sink } = await open({ namespace, replica: 'pod-big', maxBytes: 20 * KIB, ringSize: 4, failureMode: 'open' });
    const before = sink.append(input()).record;
    const huge = sink.append(input({ parameters: { blob: 'z'.repeat(21 * KIB) } })).record;
    const after = sink.append(input()).record;
    await sink.flush();
    expect(sink.stats).toEqual({ written: 3, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });
    expect(huge.action.parameters).toEqual({ blob: expect.stringMatching(/^\[OMITTED: 21506 bytes of canonical JSON \(secrets redacted\), sha256 [0-9a-f]{64}\]$/) });
    expect(after.prev_hash).toBe(huge.hash);
    const cms = await ringOf(namespace, 'pod-big');
    expect(chainOf(cms).map((r) => r.entry_id)).toEqual([before.entry_id, huge.entry_id, after.entry_id]);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-big')).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('10,000 appends then flush with the defaults: exactly 10,000 records across the ring, none dropped, every ConfigMap < 900 KiB', async () => {
    const namespace = await newNamespace();
    const { sink } = await open({ namespace, replica: 'pod-10k', flushIntervalMs: undefined });
    const ids = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      ids.add(sink.append(input({ agent: `agent-${i % 7}`, allowed: i % 5 !== 0, parameters: { i, sql: `SELECT * FROM t WHERE id = ${i}` } })).record.entry_id);
    }
    await sink.flush();
    expect(sink.stats).toEqual({ written: 10_000, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });

    const cms = await ringOf(namespace, 'pod-10k');
    const stored = chainOf(cms);
    const sizes = cms.map((cm) => dataBytes(cm));
    console.log(
      `[audit-configmap] 10,000 appends: ${stored.length} records in ${cms.length} ConfigMaps, ` +
        `data bytes ${sizes.join(', ')} (bound ${900 * KIB}), dropped ${sink.stats.dropped}`,
    );
    expect(stored.length).toBe(10_000);
    expect(new Set(stored.map((r) => r.entry_id))).toEqual(ids);
    for (const size of sizes) expect(size).toBeLessThan(900 * KIB);
    expect(cms.length).toBeGreaterThan(1);
    expect(cms.length).toBeLessThanOrEqual(16);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-10k')).toMatchObject({ ok: true, records: 10_000, segments: cms.length });
    const { total } = await sink.query({ limit: 0 });
    expect(total).toBe(10_000);
  });

  it('queries the rings of all replicas plus its own buffer: filters, newest first, limit and total', async () => {
    const namespace = await newNamespace();
    const a = await open({ namespace, replica: 'pod-a' });
    const b = await open({ namespace, replica: 'pod-b' });
    const tick = () => new Promise((resolve) => setTimeout(resolve, 3)); // distinct timestamps
    const all: AuditRecord[] = [];
    const add = async (sink: AuditSink, overrides: Parameters<typeof input>[0]) => {
      all.push(sink.append(input(overrides)).record);
      await tick();
    };
    await add(a.sink, { agent: 'etl' });
    await add(b.sink, { agent: 'etl', allowed: false });
    await add(a.sink, { agent: 'ops', type: 'file_write' });
    await b.sink.flush();
    await a.sink.flush();
    await add(b.sink, { agent: 'ops', allowed: false });
    const since = new Date();
    await tick();
    await add(a.sink, { agent: 'etl', allowed: false });
    await add(b.sink, { agent: 'etl', type: 'file_write' });
    await b.sink.flush();
    await add(a.sink, { agent: 'etl' }); // stays buffered in a
    expect(a.sink.stats.buffered).toBe(2);

    const expected = (keep: (r: AuditRecord) => boolean) => all.filter(keep).reverse().map((r) => r.entry_id);
    const ids = async (q: Parameters<AuditSink['query']>[0], sink = a.sink) => {
      const { entries, total } = await sink.query(q);
      expect(total).toBeGreaterThanOrEqual(entries.length);
      return { ids: entries.map((r) => r.entry_id), total };
    };

    expect(await ids({ limit: 100 })).toEqual({ ids: expected(() => true), total: 7 });
    expect(await ids({ agentId: 'etl', limit: 100 })).toEqual({ ids: expected((r) => r.agent_id === 'etl'), total: 5 });
    expect(await ids({ status: 'denied', limit: 100 })).toEqual({ ids: expected((r) => !r.evaluation.allowed), total: 3 });
    expect(await ids({ actionType: 'file_write', agentId: 'etl', limit: 100 })).toEqual({
      ids: expected((r) => r.action.type === 'file_write' && r.agent_id === 'etl'), total: 1,
    });
    expect(await ids({ since, limit: 100 })).toEqual({ ids: expected((r) => Date.parse(r.timestamp) >= since.getTime()), total: 3 });
    expect(await ids({ limit: 2 })).toEqual({ ids: expected(() => true).slice(0, 2), total: 7 });
    // Replica b sees what a has stored, not what a still buffers.
    expect(await ids({ limit: 100 }, b.sink)).toEqual({ ids: expected((r) => r !== all.at(-1) && r !== all.at(-3)), total: 5 });

    // Writing while querying: every record exactly once.
    const racing = Array.from({ length: 5 }, () => a.sink.query({ limit: 100 }));
    await a.sink.flush();
    for (const { total, entries } of await Promise.all(racing)) {
      expect(total).toBe(7);
      expect(new Set(entries.map((r) => r.entry_id)).size).toBe(7);
    }
  });

  it('retries on a conflict with another writer, keeps its labels and loses nothing', async () => {
    const namespace = await newNamespace();
    const replica = 'pod-c';
    const name = 'policyguard-audit-pod-c-0';
    const { sink } = await open({ namespace, replica });
    const appended = [sink.append(input()).record];
    await sink.flush();

    // Someone else replaces the ConfigMap after the sink's last read: its resourceVersion is stale now.
    await meddle(namespace, name, (cm) => {
      cm.metadata!.labels = { ...cm.metadata!.labels, 'team.example.com/owner': 'compliance' };
    });
    appended.push(...Array.from({ length: 5 }, () => sink.append(input()).record));
    await sink.flush();

    let cm = await core.readNamespacedConfigMap({ name, namespace });
    expect(cm.metadata?.labels?.['team.example.com/owner']).toBe('compliance');
    expect(recordsOf(cm)).toEqual(appended);

    // And while someone keeps replacing it in a loop.
    let stop = false;
    let meddled = 0;
    const meddler = (async () => {
      while (!stop) {
        await meddle(namespace, name, (c) => {
          c.metadata!.annotations = { ...c.metadata!.annotations, 'example.com/touched': String(++meddled) };
        });
      }
    })();
    // A writer that loses to the meddler 16 times in a row fails the batch and keeps its records
    // for the next flush (on a loaded machine the meddler can win that often): flush until done.
    const flushed = async () => {
      for (let failed = 0; ; failed++) {
        const error = await sink.flush().then(() => undefined, (e: unknown) => e);
        if (!error) return;
        if (!(error instanceof AuditWriteError) || failed === 10) throw error;
      }
    };
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 10; i++) appended.push(sink.append(input()).record);
      await flushed();
    }
    stop = true;
    await meddler;
    expect(meddled).toBeGreaterThan(5);
    cm = await core.readNamespacedConfigMap({ name, namespace });
    expect(recordsOf(cm)).toEqual(appended);
    expect(cm.metadata?.labels?.['team.example.com/owner']).toBe('compliance');
    expect(sink.stats).toEqual({ written: 206, dropped: 0, refused: 0, buffered: 0, failedWrites: expect.any(Number), writesFailing: 0 });
    expect(await verifyConfigMapRing(kc, namespace, replica)).toMatchObject({ ok: true, records: 206, segments: 1 });
  });
});

describe('ConfigMap audit sink: anchors, MACs and filters', () => {
  const anchorOf = (namespace: string, replica: string) => core.readNamespacedConfigMap({ namespace, name: `policyguard-audit-anchor-${replica}` });
  /** Cut the last `n` records off the newest ConfigMap, fixing its chain-head annotation as a careful intruder would. */
  async function cutNewest(namespace: string, replica: string, n: number): Promise<AuditRecord[]> {
    const newest = [...(await ringOf(namespace, replica))].sort((a, b) => seqOf(b) - seqOf(a))[0]!;
    const kept = recordsOf(newest).slice(0, -n);
    await meddle(namespace, newest.metadata!.name!, (cm) => {
      cm.data!['records.jsonl'] = kept.map((r) => `${JSON.stringify(r)}\n`).join('');
      cm.metadata!.annotations!['policyguard.dev/audit-chain-head'] = kept.at(-1)!.hash;
    });
    return kept;
  }

  it('anchors the ring in its own ConfigMap, and verification catches records cut off the end through it', async () => {
    const namespace = await newNamespace();
    const { sink } = await open({ namespace, replica: 'pod-t' });
    const records = Array.from({ length: 6 }, () => sink.append(input()).record);
    await sink.close();
    const anchor = await anchorOf(namespace, 'pod-t');
    expect(anchor.metadata?.labels).toMatchObject({ 'policyguard.dev/audit-anchor': 'true', 'policyguard.dev/replica': 'pod-t' });
    expect(anchor.metadata?.labels?.['policyguard.dev/audit']).toBeUndefined();
    expect(JSON.parse(anchor.data!['anchor.json']!)).toMatchObject({ entry_id: records[5]!.entry_id, hash: records[5]!.hash, segment: 1, line: 6 });
    expect((await ringOf(namespace)).map((cm) => cm.metadata?.name)).toEqual(['policyguard-audit-pod-t-0']);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-t')).toMatchObject({ ok: true, records: 6 });

    await cutNewest(namespace, 'pod-t', 2);
    const result = await verifyConfigMapRing(kc, namespace, 'pod-t');
    expect(result).toMatchObject({ ok: false, records: 4, problemCount: 1, problems: [{ file: `configmap/${namespace}/policyguard-audit-pod-t-0`, line: 6 }] });
    expect(result.problems[0]?.reason).toMatch(
      new RegExp(`^truncated: at least 2 records after ${records[3]!.entry_id} were removed \\(the anchor of \\S+ names ${records[5]!.entry_id} at policyguard-audit-pod-t-0:6\\)$`),
    );
    // A sink does not continue a ring cut while it was stopped, and leaves the anchor alone.
    await expect(openConfigMapAuditSink({ kubeConfig: kc, namespace, replica: 'pod-t', log: () => undefined })).rejects.toThrow(
      new RegExp(`does not match its anchor \\(ConfigMap ${namespace}/policyguard-audit-anchor-pod-t\\): truncated: at least 2 records.*delete it`),
    );
    expect((await anchorOf(namespace, 'pod-t')).data).toEqual(anchor.data);
  });

  it('a replica restarting under its name does not open a ring whose anchor was deleted, or whose chain is broken', async () => {
    const namespace = await newNamespace();
    const { sink } = await open({ namespace, replica: 'pod-x' });
    const records = Array.from({ length: 4 }, () => sink.append(input()).record);
    await sink.close();
    const pristine = await core.readNamespacedConfigMap({ namespace, name: 'policyguard-audit-pod-x-0' });
    await cutNewest(namespace, 'pod-x', 2);
    await core.deleteNamespacedConfigMap({ namespace, name: 'policyguard-audit-anchor-pod-x' });
    await expect(openConfigMapAuditSink({ kubeConfig: kc, namespace, replica: 'pod-x', log: () => undefined })).rejects.toThrow(
      new RegExp(`^the audit log holds records up to ${records[1]!.entry_id} \\(policyguard-audit-pod-x-0:2\\) but has no anchor \\(ConfigMap ${namespace}/policyguard-audit-anchor-pod-x\\)`),
    );
    await expect(anchorOf(namespace, 'pod-x')).rejects.toThrow();

    // An anchor again (accepted once), then a record edited in the ring: the chain is checked where it is continued.
    await (await open({ namespace, replica: 'pod-x', acceptMissingAnchor: true })).sink.close();
    await meddle(namespace, 'policyguard-audit-pod-x-0', (cm) => {
      cm.data!['records.jsonl'] = cm.data!['records.jsonl']!.replace('"allowed":true', '"allowed":false');
    });
    await expect(openConfigMapAuditSink({ kubeConfig: kc, namespace, replica: 'pod-x', log: () => undefined })).rejects.toThrow(
      new RegExp(`^the audit log is broken at policyguard-audit-pod-x-0:1 \\(${records[0]!.entry_id}\\): hash mismatch: .*copy the audit ConfigMaps of replica pod-x`),
    );
    expect(recordsOf(pristine)).toEqual(records);
  });

  it('anchors a new ring at genesis before its first record: killed before its first batch is anchored, it restarts without the flag', async () => {
    const namespace = await newNamespace();
    const store = new ConfigMapAnchorStore({ kubeConfig: kc, namespace, replica: 'pod-g' });
    // The process dies while the first batch's anchor is written: only the genesis anchor arrives.
    const dying: AuditAnchorStore = {
      location: store.location,
      discardHint: store.discardHint,
      read: () => store.read(),
      write: (anchor) => (isGenesisAnchor(anchor) ? store.write(anchor) : Promise.reject(new Error('killed while writing the anchor'))),
    };
    const { sink } = await open({ namespace, replica: 'pod-g', anchor: dying });
    const genesis = (await anchorOf(namespace, 'pod-g')).data;
    expect(JSON.parse(genesis!['anchor.json']!)).toMatchObject({ entry_id: 'genesis', segment: 0, line: 0 });
    expect(await ringOf(namespace, 'pod-g')).toEqual([]);
    const records = [sink.append(input()).record, sink.append(input()).record];
    await sink.close();
    expect(recordsOf((await ringOf(namespace, 'pod-g'))[0]!)).toEqual(records);
    expect((await anchorOf(namespace, 'pod-g')).data).toEqual(genesis);
    expect(await verifyConfigMapRing(kc, namespace, 'pod-g')).toMatchObject({ ok: true, records: 2 });

    // The genesis anchor deleted: refused as any deleted anchor.
    await core.deleteNamespacedConfigMap({ namespace, name: 'policyguard-audit-anchor-pod-g' });
    await expect(openConfigMapAuditSink({ kubeConfig: kc, namespace, replica: 'pod-g', log: () => undefined })).rejects.toThrow(
      new RegExp(`^the audit log holds records up to ${records[1]!.entry_id} \\(policyguard-audit-pod-g-0:2\\) but has no anchor`),
    );
    await store.write(JSON.parse(genesis!['anchor.json']!) as AuditAnchor);
    const { sink: restarted, logs } = await open({ namespace, replica: 'pod-g' });
    expect(logs).toEqual([]);
    expect(JSON.parse((await anchorOf(namespace, 'pod-g')).data!['anchor.json']!)).toMatchObject({ entry_id: records[1]!.entry_id, segment: 1, line: 2 });
    await restarted.close();
  });

  it('a file sink in kubernetes mode anchors in the ConfigMap, and verify finds it there', async () => {
    const namespace = await newNamespace();
    const dir = await mkdtemp(join(tmpdir(), 'pg-audit-file-cm-'));
    try {
      const anchor = new ConfigMapAnchorStore({ kubeConfig: kc, namespace, replica: 'pod-f' });
      const sink = await openFileAuditSink({ dir, anchor, log: () => undefined });
      const records = Array.from({ length: 4 }, () => sink.append(input()).record);
      await sink.close();
      await expect(readFile(join(dir, 'anchor.json'))).rejects.toThrow(/ENOENT/);
      expect(await verifyAuditChain(dir, { anchor })).toMatchObject({ ok: true, records: 4 });
      const segment = join(dir, 'audit-000001.jsonl');
      await writeFile(segment, records.slice(0, 1).map((r) => `${JSON.stringify(r)}\n`).join(''));
      const result = await verifyAuditChain(dir, { anchor });
      expect(result.problems.map((p) => p.reason)).toEqual([expect.stringMatching(/^truncated: at least 3 records after/)]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('with a key, the ring records and the anchor carry MACs, and a ring recomputed without the key fails', async () => {
    const namespace = await newNamespace();
    const dir = await mkdtemp(join(tmpdir(), 'pg-audit-key-'));
    try {
      const keyFile = join(dir, 'audit.key');
      await writeFile(keyFile, randomBytes(48).toString('base64'));
      const { sink } = await open({ namespace, replica: 'pod-k', keyFile });
      const records = Array.from({ length: 3 }, () => sink.append(input()).record);
      await sink.close();
      expect(records.every((r) => /^[0-9a-f]{64}$/.test(r.mac ?? ''))).toBe(true);
      expect(await verifyConfigMapRing(kc, namespace, 'pod-k', { keyFile })).toMatchObject({ ok: true, records: 3 });

      // Everything rewritten consistently, without the key: hashes, annotation, anchor.
      const forged: AuditRecord[] = [];
      for (const { hash: _hash, mac: _mac, ...fields } of records) {
        const edited = { ...fields, agent_id: 'someone-else', prev_hash: forged.at(-1)?.hash ?? '0'.repeat(64) };
        forged.push({ ...edited, hash: hashRecord(edited.prev_hash, edited) });
      }
      await meddle(namespace, 'policyguard-audit-pod-k-0', (cm) => {
        cm.data!['records.jsonl'] = forged.map((r) => `${JSON.stringify(r)}\n`).join('');
        cm.metadata!.annotations!['policyguard.dev/audit-chain-head'] = forged.at(-1)!.hash;
      });
      await meddle(namespace, 'policyguard-audit-anchor-pod-k', (cm) => {
        const { mac: _mac, ...anchor } = JSON.parse(cm.data!['anchor.json']!) as Record<string, unknown>;
        cm.data!['anchor.json'] = JSON.stringify({ ...anchor, entry_id: forged.at(-1)!.entry_id, hash: forged.at(-1)!.hash });
      });
      expect(await verifyConfigMapRing(kc, namespace, 'pod-k')).toMatchObject({ ok: true, records: 3 });
      // Records without MACs could predate the key; an anchor without one proves nothing then.
      expect(await verifyConfigMapRing(kc, namespace, 'pod-k', { keyFile })).toMatchObject({
        ok: false, problems: [{ line: 3, reason: expect.stringMatching(/^the anchor has no MAC though a key is given/) }],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('filters by status (decisions only), kind and scope across replicas', async () => {
    const namespace = await newNamespace();
    const a = await open({ namespace, replica: 'pod-qa' });
    const b = await open({ namespace, replica: 'pod-qb' });
    const incidents = createAuditIncidentLog(b.sink);
    const tick = () => new Promise((resolve) => setTimeout(resolve, 3)); // distinct timestamps
    const allowed = a.sink.append(input({ agent: 'etl' })).record;
    await tick();
    const denied = b.sink.append(input({ agent: 'etl', allowed: false })).record;
    await tick();
    const incident = await incidents.record({ ...incidentInput({ agent_id: 'etl', action_id: denied.action_id }) });
    await tick();
    const admin = a.sink.append({ ...input({ agent: SYSTEM_AGENT_ID }), action_id: null, caller: 'alice' }).record;
    await b.sink.flush(); // a's records stay buffered: seen by a's scan only
    const ids = async (q: Omit<Parameters<AuditSink['query']>[0], 'limit'>) => (await a.sink.query({ ...q, limit: 100 })).entries.map((e) => e.entry_id);
    const incidentEntry = (await a.sink.query({ kinds: ['incident'], limit: 1 })).entries[0]!;
    expect(incidentEntry.action.target).toBe(incident.incident_id);
    expect(incidentEntry.evaluation.allowed).toBe(true);

    expect(await ids({ status: 'allowed' })).toEqual([allowed.entry_id]);
    expect(await ids({ status: 'denied' })).toEqual([denied.entry_id]);
    expect(await ids({ kinds: ['admin'] })).toEqual([admin.entry_id]);
    expect(await ids({ kinds: ['decision'] })).toEqual([denied.entry_id, allowed.entry_id]);
    expect(await ids({ scope: { agentIds: new Set(), caller: 'alice' } })).toEqual([admin.entry_id]);
    expect((await ids({ scope: { agentIds: new Set(['etl']), caller: 'nobody' } })).sort()).toEqual([allowed, denied, incidentEntry].map((e) => e.entry_id).sort());
    // scan stops when asked
    let visited = 0;
    expect(await a.sink.scan({}, () => ++visited < 2)).toEqual({ scanned: 2, matched: 2 });
  });
});

describe('ConfigMap audit sink while the API server is away', () => {
  let cp: ControlPlane;
  beforeAll(async () => {
    cp = await startControlPlane({ crdsDir: null });
  }, 180_000);
  afterAll(async () => {
    await cp?.stop();
  });

  it('open mode buffers up to maxBuffered and drops the overflow; closed mode refuses while writes fail; both recover', async () => {
    const kubeConfig = cp.kubeConfig();
    const namespace = await newNamespace(kubeConfig);
    const logs: string[] = [];
    const closedLogs: string[] = [];
    const common = { kubeConfig, namespace, flushIntervalMs: 100, maxRetryDelayMs: 500, requestTimeoutMs: 2_000 };
    const sink = await openConfigMapAuditSink({ ...common, replica: 'pod-down', maxBuffered: 300, failureMode: 'open', log: (m) => logs.push(m) });
    const closed = await openConfigMapAuditSink({ ...common, replica: 'pod-closed', log: (m) => closedLogs.push(m) });
    for (let i = 0; i < 100; i++) sink.append(input());
    await sink.flush();
    closed.append(input());
    await closed.flush();

    await cp.stopApiServer();
    for (let i = 0; i < 350; i++) sink.append(input());
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    expect(sink.stats).toEqual({ written: 100, dropped: 50, refused: 0, buffered: 300, failedWrites: expect.any(Number), writesFailing: expect.any(Number) });
    expect(sink.stats.failedWrites).toBeGreaterThanOrEqual(1);
    expect(logs.filter((m) => m.startsWith('DROPPING'))).toHaveLength(1);
    expect(logs.some((m) => /failed; 300 records kept in memory, retrying in \d+ ms/.test(m))).toBe(true);

    const pending = closed.append(input());
    expect(pending.ok).toBe(true); // nothing has failed yet
    await expect(closed.flush()).rejects.toBeInstanceOf(AuditWriteError);
    const refused = closed.append(input());
    expect(refused).toMatchObject({
      ok: false,
      reason: expect.stringMatching(new RegExp(`^the last write to ConfigMap ${namespace}/policyguard-audit-pod-closed-0 failed \\d+ time\\(s\\): `)),
    });
    expect(closed.available()).toMatch(/^the last write to ConfigMap/);

    await cp.startApiServer();
    // No flush(): the backoff timer retries by itself.
    const deadline = Date.now() + 30_000;
    while ((sink.stats.buffered > 0 || closed.stats.buffered > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(sink.stats).toEqual({ written: 400, dropped: 50, refused: 0, buffered: 0, failedWrites: expect.any(Number), writesFailing: 0 });
    expect(logs.some((m) => m.startsWith('audit writes recovered'))).toBe(true);
    expect(logs).toContain('audit log takes records again; 50 records were dropped meanwhile');
    expect(await verifyConfigMapRing(kubeConfig, namespace, 'pod-down')).toMatchObject({ ok: true, records: 400, segments: 1 });

    expect(closed.stats).toEqual({ written: 2, dropped: 0, refused: 1, buffered: 0, failedWrites: expect.any(Number), writesFailing: 0 });
    expect(closed.stats.failedWrites).toBeGreaterThanOrEqual(1);
    expect(closed.available()).toBeUndefined();
    expect(closed.append(input()).ok).toBe(true);
    await closed.close();
    expect(closedLogs.some((m) => m.startsWith('REFUSING audit records (their decisions are denied): the last write to ConfigMap'))).toBe(true);
    expect(await verifyConfigMapRing(kubeConfig, namespace, 'pod-closed')).toMatchObject({ ok: true, records: 3 });
    await sink.close();
  }, 120_000);
});
