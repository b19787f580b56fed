/**
 * What the operator keeps of the objects it watches, and the memory it gives back after a burst
 * of changes (docs/performance.md, "What the second pass changed"), against a real API server.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ENGINE_OPTIONS } from '../../src/engine/types.js';
import { silentLogger } from '../../src/log.js';
import { objectKey } from '../../src/engine/types.js';
import { KubernetesStore } from '../../src/store/kubernetes.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { applyGuard, createNamespace, eventually, getGuard } from './harness.js';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

let kc: KubeConfig;
let ns: string;
let store: KubernetesStore;

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-memory');
  store = new KubernetesStore({
    kubeConfig: kc,
    engine: DEFAULT_ENGINE_OPTIONS,
    log: silentLogger,
    watchNamespaces: [ns],
    writeNamespace: ns,
    isLeader: () => true,
    releaseAfterBurst: { changes: 4, settleMs: 200 },
  });
  store.start();
});
afterAll(async () => {
  await store?.close();
});

describe('KubernetesStore memory', () => {
  it('keeps objects without managedFields and kubectl last-applied-configuration, other annotations intact', async () => {
    const annotations = { [LAST_APPLIED]: JSON.stringify({ spec: { trustLevel: 'low' } }), 'team.example/owner': 'data' };
    await applyGuard(kc, 'GuardAgent', ns, 'kept', { trustLevel: 'low' }, { annotations });
    expect((await getGuard(kc, 'GuardAgent', ns, 'kept')).metadata.managedFields).not.toHaveLength(0);
    const agent = await eventually(async () => store.snapshot().agent('kept'), (a) => a?.trust === 'low', 'the agent in force');
    expect(agent!.source.metadata.managedFields).toBeUndefined();
    expect(agent!.source.metadata.annotations).toEqual({ 'team.example/owner': 'data' });
    // What the status writer reads: identity, generation and status, not the spec again.
    const raw = store.rawObject(objectKey('GuardAgent', ns, 'kept'))!.obj;
    expect(Object.keys(raw.metadata).sort()).toEqual(['generation', 'name', 'namespace', 'resourceVersion', 'uid']);
    expect(raw.spec).toBeUndefined();
  });

  it('gives memory back once after a burst of changes has settled, and not again without one', async () => {
    const before = store.memoryReleases;
    for (let i = 0; i < 6; i++) await applyGuard(kc, 'GuardPolicy', ns, `burst-${i}`, { rules: [{ action: 'deny', match: { tools: [`t${i}`] } }] });
    await eventually(async () => store.memoryReleases, (n) => n === before + 1, 'a release after the burst');
    await new Promise((r) => setTimeout(r, 600));
    expect(store.memoryReleases).toBe(before + 1);
  });
});
