/**
 * The reflector's 410 Gone path on a real API server: with the watch cache off, watches are
 * served by etcd, so compacting etcd past the reflector's resourceVersion makes its next watch
 * "too old"; the reflector must re-list and carry on, missing nothing.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { Reflector } from '../../src/controller/reflector.js';
import { silentLogger } from '../../src/log.js';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import { applyGuard, createNamespace, eventually } from './harness.js';

let cp: ControlPlane;
let reflector: Reflector | undefined;

beforeAll(async () => {
  cp = await startControlPlane({ extraApiServerArgs: ['--watch-cache=false'] });
}, 180_000);
afterAll(async () => {
  await reflector?.stop();
  await cp?.stop();
});

async function etcd(path: string, body: unknown): Promise<any> {
  const res = await fetch(`${cp.etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

describe('reflector', () => {
  it('re-lists after 410 Gone and still sees every change', async () => {
    const kc = cp.kubeConfig();
    const ns = await createNamespace(kc, 'pg-reflector');
    await applyGuard(kc, 'GuardPolicy', ns, 'first', { rules: [{ action: 'deny' }] });
    let synced = 0;
    reflector = new Reflector({
      kubeConfig: kc,
      group: GROUP,
      version: VERSION,
      plural: 'guardpolicies',
      namespace: ns,
      log: silentLogger,
      onChange: () => {},
      onSynced: () => synced++,
      watchTimeoutSeconds: 1, // end each watch quickly, so the next one starts from the old resourceVersion
      backoff: { initialMs: 50, maxMs: 500 },
    });
    await eventually(async () => synced, (n) => n >= 1, 'the first list');

    // Move etcd past the reflector's resourceVersion (writes elsewhere), then compact.
    const core = kc.makeApiClient(CoreV1Api);
    for (let i = 0; i < 5; i++) await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: `filler-${i}` } } });
    const { header } = await etcd('/v3/kv/range', { key: Buffer.from('/').toString('base64') });
    await etcd('/v3/kv/compaction', { revision: header.revision, physical: true });

    await eventually(async () => reflector!.stats.expired, (n) => n >= 1, 'a 410 Gone');
    await eventually(async () => synced, (n) => n >= 2, 'the re-list');
    await applyGuard(kc, 'GuardPolicy', ns, 'second', { rules: [{ action: 'allow' }] });
    await eventually(async () => [...reflector!.versions.keys()].sort(), (keys) => keys.length === 2, 'the change after the re-list');
    expect([...reflector.versions.keys()].sort()).toEqual([`${ns}/first`, `${ns}/second`]);
    expect(reflector.stats.errors).toBe(0); // the 410 path, not the error path
  }, 120_000);
});
