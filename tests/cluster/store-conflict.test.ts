/**
 * MCP writes (register_agent, create_policy, auto-registration) never take fields from Argo CD,
 * Flux or kubectl: KubernetesStore's server-side applies are not forced, and the real API
 * server's 409 becomes a StoreConflictError naming the fields and their managers. And they do
 * only what the caller was allowed: a create never overwrites an object someone else created
 * meanwhile, an update never writes over an object deleted or created again since.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardAgent } from '../../src/api/builders.js';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { DEFAULT_ENGINE_OPTIONS } from '../../src/engine/types.js';
import { silentLogger } from '../../src/log.js';
import { KubernetesStore } from '../../src/store/kubernetes.js';
import { StoreChangedError, StoreConflictError } from '../../src/store/store.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { createNamespace, eventually, getGuard } from './harness.js';

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
/** `manager/operation` of each managedFields entry. */
const records = async (name: string) => ((await getGuard(kc, 'GuardAgent', ns, name)).metadata.managedFields as Array<{ manager: string; operation: string }>).map((f) => `${f.manager}/${f.operation}`).sort();

/** An update is of the object the store has seen: wait for its watch to bring it. */
async function seen(name: string, s = store): Promise<void> {
  await eventually(async () => s.holds('GuardAgent', ns, name), (held) => held, `the store to see ${name}`);
}

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-conflict');
  store = new KubernetesStore({ kubeConfig: kc, engine: DEFAULT_ENGINE_OPTIONS, log: silentLogger, watchNamespaces: [ns], writeNamespace: ns, isLeader: () => true });
  store.start();
});
afterAll(async () => {
  await store?.close();
});

describe('KubernetesStore applies without force', () => {
  it('changing a field Argo CD owns is a StoreConflictError naming the field and "argocd-controller"; the object is unchanged', async () => {
    await gitopsApply('etl', { trustLevel: 'low', deniedTools: ['drop_*'] });
    await seen('etl');
    const before = await getGuard(kc, 'GuardAgent', ns, 'etl');
    const err = await store.applyAgent(guardAgent({ name: 'etl', namespace: ns }, { trustLevel: 'admin', deniedTools: ['drop_*'] }), 'update').catch((e: unknown) => e);
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
    await seen('multi');
    const err = (await store
      .applyAgent(guardAgent({ name: 'multi', namespace: ns }, { trustLevel: 'high', allowedTools: ['*'], description: 'from MCP' }), 'update')
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
    await seen('reporter');
    const r = await store.applyAgent(guardAgent({ name: 'reporter', namespace: ns }, { trustLevel: 'medium', deniedTools: ['send_*'], displayName: 'Reporter (via MCP)' }), 'update');
    expect(r.location).toBe(`${ns}/reporter`);
    const obj = await getGuard(kc, 'GuardAgent', ns, 'reporter');
    expect(obj.spec).toMatchObject({ trustLevel: 'medium', deniedTools: ['send_*'], displayName: 'Reporter (via MCP)' });
    expect(await managers('reporter')).toEqual(['argocd-controller', 'policyguard']);
  });

  it('a new object is created, its fields recorded as applied by policyguard, so a later update through MCP changes them', async () => {
    const r = await store.applyAgent(guardAgent({ name: 'brand-new', namespace: ns }, { trustLevel: 'low' }), 'create');
    expect(r).toEqual({ location: `${ns}/brand-new` });
    // A POST records an Update; left so, the apply below would conflict with policyguard itself.
    expect(await records('brand-new')).toEqual(['policyguard/Apply']);
    await seen('brand-new');
    await store.applyAgent(guardAgent({ name: 'brand-new', namespace: ns }, { trustLevel: 'medium' }), 'update');
    expect((await getGuard(kc, 'GuardAgent', ns, 'brand-new')).spec.trustLevel).toBe('medium');
  });
});

describe('KubernetesStore writes only what the caller was allowed: the object as its permission check saw it', () => {
  it('a create of an object someone else created meanwhile (not yet seen by the store) is a StoreChangedError; the object is unchanged', async () => {
    await gitopsApply('raced', { trustLevel: 'low', deniedTools: ['drop_*'] });
    const before = await getGuard(kc, 'GuardAgent', ns, 'raced');
    // Values that would not conflict with the other writer's: an apply would take them.
    const err = await store.applyAgent(guardAgent({ name: 'raced', namespace: ns }, { trustLevel: 'low', description: 'from MCP' }), 'create', ['trustLevel', 'description']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreChangedError);
    expect((err as Error).message).toBe(
      `GuardAgent ${ns}/raced exists, though it did not when this call was checked (someone created it meanwhile, or it is in a namespace this server does not watch); a create does not overwrite it, so nothing was written. Retry to change it, which takes permission to change it (RBAC patch), not only to create`,
    );
    expect((await getGuard(kc, 'GuardAgent', ns, 'raced')).metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  });

  /** A store that saw `name` as it is now and then stopped watching: its view stays that one. */
  async function staleStore(name: string): Promise<KubernetesStore> {
    const stale = new KubernetesStore({ kubeConfig: kc, engine: DEFAULT_ENGINE_OPTIONS, log: silentLogger, watchNamespaces: [ns], writeNamespace: ns, isLeader: () => true });
    stale.start();
    await seen(name, stale);
    await stale.close();
    return stale;
  }

  const CHANGED = (name: string) => `GuardAgent ${ns}/${name} was changed, deleted or created again since this server last saw it (replicas see changes a moment late); nothing was written. Retry`;

  it('an update is of the version the caller\'s checks read: one whose spec or policyguard.dev/ keys moved on is a StoreChangedError; a status write is applied on', async () => {
    await gitopsApply('edited', { trustLevel: 'low' });
    await seen('edited');
    // What register_agent's checks read: the object as the snapshot held it.
    const read = await getGuard(kc, 'GuardAgent', ns, 'edited');
    const asRead = (description: string) => guardAgent(read.metadata as never, { trustLevel: 'low', description });
    // Git raised its trust since: the store's own view has it already, but the checks read low.
    await gitopsApply('edited', { trustLevel: 'high' });
    await eventually(async () => store.rawObject(`GuardAgent/${ns}/edited`)?.obj.metadata.generation, (g) => g === 2, 'the store to see the change');
    const before = await getGuard(kc, 'GuardAgent', ns, 'edited');
    const err = await store.applyAgent(asRead('after a spec change'), 'update', ['description']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreChangedError);
    expect((err as Error).message).toBe(CHANGED('edited'));
    expect((await getGuard(kc, 'GuardAgent', ns, 'edited')).metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    // A status write (our own Ready condition) changes nothing a check read: applied on it.
    const now = await getGuard(kc, 'GuardAgent', ns, 'edited');
    const objects = kc.makeApiClient(CustomObjectsApi);
    await objects.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', name: 'edited', body: { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'Accepted', message: '', lastTransitionTime: new Date().toISOString() }] } }, fieldManager: 'policyguard' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await store.applyAgent(guardAgent(now.metadata as never, { trustLevel: 'high', description: 'after a status write' }), 'update', ['description']);
    expect((await getGuard(kc, 'GuardAgent', ns, 'edited')).spec.description).toBe('after a status write');
    // A person's change to a policyguard.dev/ annotation (a resume stamp removed) is not written over.
    const annotated = await getGuard(kc, 'GuardAgent', ns, 'edited');
    await objects.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', name: 'edited', body: { metadata: { annotations: { 'policyguard.dev/resume': '2026-01-01T00:00:00Z' } } }, fieldManager: 'kubectl-annotate' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(await store.applyAgent(guardAgent(annotated.metadata as never, { trustLevel: 'high', description: 'stale' }), 'update', ['description']).catch((e: unknown) => e)).toBeInstanceOf(StoreChangedError);
    // The version as it is now: written.
    const current = await getGuard(kc, 'GuardAgent', ns, 'edited');
    await store.applyAgent(guardAgent(current.metadata as never, { trustLevel: 'high', description: 'current' }), 'update', ['description']);
    expect((await getGuard(kc, 'GuardAgent', ns, 'edited')).spec.description).toBe('current');
  });

  it('an update checked against the version that was in force, when a newer one fails to compile, says what is wrong instead of "retry"', async () => {
    await gitopsApply('broken', { trustLevel: 'low', allowedTools: ['read_*'] });
    const inForce = await eventually(async () => store.snapshot().agent('broken')?.source, (a) => a !== undefined, 'the agent in force');
    await gitopsApply('broken', { trustLevel: 'low', allowedTools: ['read_[z-a]'] });
    await eventually(async () => store.objectProblems().get(`GuardAgent/${ns}/broken`)?.message, (m) => m !== undefined, 'the compile problem');
    // The newest generation counts: the one the check read is out of force too (docs/decisions.md §9).
    await eventually(async () => store.snapshot().agent('broken'), (a) => a === undefined, 'the agent out of force');
    const err = await store.applyAgent(guardAgent(inForce!.metadata, { trustLevel: 'low', description: 'from MCP' }), 'update', ['description']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConflictError);
    expect((err as Error).message).toMatch(new RegExp(`^GuardAgent ${ns}/broken: its newest version is not in force \\(.*InvalidPattern.*\\), and this call was checked against the version that is; fix the newest version where it was written \\(kubectl, Git\\), then retry$`));
  });

  it('an update of an object deleted and created again since the store saw it is a StoreChangedError; the new object is unchanged', async () => {
    await gitopsApply('reborn', { trustLevel: 'low' });
    const stale = await staleStore('reborn');
    await kc.makeApiClient(CustomObjectsApi).deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', name: 'reborn' });
    // A field the new object's writer does not own, so no field conflict answers first.
    const update = () => stale.applyAgent(guardAgent({ name: 'reborn', namespace: ns }, { trustLevel: 'low', description: 'from MCP' }), 'update', ['description']);
    // Deleted: not created by the update.
    const gone = await update().catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(StoreChangedError);
    expect((gone as Error).message).toBe(CHANGED('reborn'));
    await expect(getGuard(kc, 'GuardAgent', ns, 'reborn')).rejects.toThrow();
    // Created again by someone else: not changed by the update.
    await gitopsApply('reborn', { trustLevel: 'low' });
    const before = await getGuard(kc, 'GuardAgent', ns, 'reborn');
    expect(await update().catch((e: unknown) => e)).toBeInstanceOf(StoreChangedError);
    const after = await getGuard(kc, 'GuardAgent', ns, 'reborn');
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    expect(after.spec.description).toBeUndefined();
  });

  it('fields a create recorded as an Update by policyguard (its relabelling failed) are relabelled on the next update, which then applies', async () => {
    await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      group: GROUP, version: VERSION, namespace: ns, plural: 'guardagents', fieldManager: 'policyguard',
      body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'GuardAgent', metadata: { name: 'posted', namespace: ns }, spec: { trustLevel: 'low', deniedTools: ['drop_*'] } },
    });
    expect(await records('posted')).toEqual(['policyguard/Update']);
    await seen('posted');
    await store.applyAgent(guardAgent({ name: 'posted', namespace: ns }, { trustLevel: 'medium', deniedTools: ['drop_*'] }), 'update');
    expect((await getGuard(kc, 'GuardAgent', ns, 'posted')).spec.trustLevel).toBe('medium');
    expect(await records('posted')).toEqual(['policyguard/Apply']);
  });
});
