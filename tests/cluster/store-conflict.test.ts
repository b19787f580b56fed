/**
 * MCP writes (register_agent, create_policy, auto-registration) never take fields from Argo CD,
 * Flux or kubectl: KubernetesStore's server-side applies are not forced, and the real API
 * server's 409 becomes a StoreConflictError naming the fields and their managers.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardAgent } from '../../src/api/builders.js';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { DEFAULT_ENGINE_OPTIONS } from '../../src/engine/types.js';
import { silentLogger } from '../../src/log.js';
import { KubernetesStore } from '../../src/store/kubernetes.js';
import { StoreConflictError } from '../../src/store/store.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { createNamespace, getGuard } from './harness.js';

let kc: KubeConfig;
let ns: string;
let store: KubernetesStore;

/** What Argo CD does with `ServerSideApply=true`: an apply by its own field manager. */
async function gitopsApply(name: string, spec: Record<string, unknown>, fieldManager = 'argocd-controller'): Promise<void> {
  await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', name, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'GuardAgent', metadata: { name, namespace: ns }, spec }, fieldManager },
    setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
  );
}

const managers = async (name: string) => ((await getGuard(kc, 'GuardAgent', ns, name)).metadata.managedFields as Array<{ manager: string }>).map((f) => f.manager).sort();

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-conflict');
  store = new KubernetesStore({ kubeConfig: kc, engine: DEFAULT_ENGINE_OPTIONS, log: silentLogger, watchNamespaces: [ns], writeNamespace: ns, isLeader: () => true });
});
afterAll(async () => {
  await store?.close();
});

describe('KubernetesStore applies without force', () => {
  it('changing a field Argo CD owns is a StoreConflictError naming the field and "argocd-controller"; the object is unchanged', async () => {
    await gitopsApply('etl', { trustLevel: 'low', deniedTools: ['drop_*'] });
    const before = await getGuard(kc, 'GuardAgent', ns, 'etl');
    const err = await store.applyAgent(guardAgent({ name: 'etl', namespace: ns }, { trustLevel: 'admin', deniedTools: ['drop_*'] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConflictError);
    const conflict = err as StoreConflictError;
    expect(conflict.message).toBe(
      `GuardAgent ${ns}/etl: .spec.trustLevel is managed by "argocd-controller"; PolicyGuard never takes fields from another manager — change it where that manager's source lives (Git), or remove the field there first`,
    );
    expect(conflict.conflicts).toEqual([{ field: '.spec.trustLevel', manager: 'argocd-controller' }]);
    const after = await getGuard(kc, 'GuardAgent', ns, 'etl');
    expect(after.spec.trustLevel).toBe('low');
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    expect(await managers('etl')).toEqual(['argocd-controller']);
  });

  it('every conflicting field is named, with each manager, Update managers (kubectl edit) included', async () => {
    await gitopsApply('multi', { trustLevel: 'low', allowedTools: ['read_*'] });
    // `kubectl edit` is an Update (merge patch) by manager kubectl-edit, not an apply.
    await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', name: 'multi', body: { spec: { description: 'edited by hand' } }, fieldManager: 'kubectl-edit' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const err = (await store
      .applyAgent(guardAgent({ name: 'multi', namespace: ns }, { trustLevel: 'high', allowedTools: ['*'], description: 'from MCP' }))
      .catch((e: unknown) => e)) as StoreConflictError;
    expect(err).toBeInstanceOf(StoreConflictError);
    expect([...err.conflicts].sort((a, b) => a.field.localeCompare(b.field))).toEqual([
      { field: '.spec.allowedTools', manager: 'argocd-controller' },
      { field: '.spec.description', manager: 'kubectl-edit' },
      { field: '.spec.trustLevel', manager: 'argocd-controller' },
    ]);
    expect(err.message).toMatch(/\.spec\.description is managed by "kubectl-edit"/);
    expect((await getGuard(kc, 'GuardAgent', ns, 'multi')).spec).toMatchObject({ trustLevel: 'low', allowedTools: ['read_*'], description: 'edited by hand' });
  });

  it('a field nobody else owns still applies, and fields it leaves as they are stay with their owner', async () => {
    await gitopsApply('reporter', { trustLevel: 'medium', deniedTools: ['send_*'] });
    const r = await store.applyAgent(guardAgent({ name: 'reporter', namespace: ns }, { trustLevel: 'medium', deniedTools: ['send_*'], displayName: 'Reporter (via MCP)' }));
    expect(r.location).toBe(`${ns}/reporter`);
    const obj = await getGuard(kc, 'GuardAgent', ns, 'reporter');
    expect(obj.spec).toMatchObject({ trustLevel: 'medium', deniedTools: ['send_*'], displayName: 'Reporter (via MCP)' });
    expect(await managers('reporter')).toEqual(['argocd-controller', 'policyguard']);
  });

  it('a new object is created as before (auto-registration, register_agent of a new id)', async () => {
    const r = await store.applyAgent(guardAgent({ name: 'brand-new', namespace: ns }, { trustLevel: 'low' }));
    expect(r).toEqual({ created: true, location: `${ns}/brand-new` });
    expect(await managers('brand-new')).toEqual(['policyguard']);
  });
});
