/**
 * Restart the API server under a running operator: it re-lists, re-watches, and decisions
 * reflect changes made while its watches were down. Uses its own control plane so the shared
 * one is never disturbed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import type { KubernetesStore } from '../../src/store/kubernetes.js';
import { applyGuard, createNamespace, eventually, startOperator, type Operator } from './harness.js';

let cp: ControlPlane;
let op: Operator;
let ns: string;

beforeAll(async () => {
  cp = await startControlPlane();
  ns = await createNamespace(cp.kubeConfig(), 'pg-restart');
  await applyGuard(cp.kubeConfig(), 'GuardAgent', ns, 'bot', { trustLevel: 'low' });
  op = await startOperator(cp.kubeconfigPath, ns);
}, 180_000);
afterAll(async () => {
  await op?.close();
  await cp?.stop();
});

describe('API server restart', () => {
  it('re-syncs and reflects changes made while the watches were down', async () => {
    expect((await op.validate('wipe_disk', 'bot')).allowed).toBe(true);
    const store = op.pg.store as KubernetesStore;
    const before = store.watchStats();
    await cp.stopApiServer();
    // Decisions keep coming from the last snapshot while the API server is away.
    expect((await op.validate('wipe_disk', 'bot')).allowed).toBe(true);
    await cp.startApiServer();
    await applyGuard(cp.kubeConfig(), 'GuardPolicy', ns, 'no-wipes', { rules: [{ match: { tools: ['wipe_*'] }, action: 'deny', message: 'no wipes' }] });
    await applyGuard(cp.kubeConfig(), 'GuardAgent', ns, 'bot', { trustLevel: 'high' });
    // Policies and agents are watched apart: wait for both changes, not the first to arrive.
    const d = await eventually(() => op.validate('wipe_disk', 'bot'), (v) => v.allowed === false && v.agent.trust_level === 'high', 'both changes made during the outage', 60_000);
    expect(d.reason).toBe('no wipes');
    expect(d.agent.trust_level).toBe('high');
    expect(op.pg.store.notReady()).toBeUndefined();
    // It re-listed after the outage (on a failed watch or a 410), rather than trusting its cache.
    const after = store.watchStats();
    process.stderr.write(`[restart] watch stats before ${JSON.stringify(before)} after ${JSON.stringify(after)}\n`);
    expect(after.lists).toBeGreaterThan(before.lists);
    expect(after.errors + after.expired).toBeGreaterThan(before.errors + before.expired);
  }, 120_000);
});
