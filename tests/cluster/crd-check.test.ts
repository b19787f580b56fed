/**
 * The CRD check (src/controller/crd-check.ts) on a real API server of its own, whose CRDs this
 * file changes: CRDs of another version (here: guardpolicies without this version's digest, as
 * after a `helm upgrade` that did not apply the CRDs) hold every decision and keep the replica
 * not ready, naming the CRD; applying this version's CRDs resumes decisions without a restart.
 * An optional CRD absent at start and installed later is checked too.
 */
import { ApiextensionsV1Api, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { generateCrds, SCHEMA_DIGEST_ANNOTATION } from '../../src/api/crd.js';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { CrdCheck } from '../../src/controller/crd-check.js';
import { parseServeConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { applyObjects, startControlPlane, type ControlPlane } from '../controlplane/index.js';
import { applyGuard, createNamespace, eventually, validateOverHttp } from './harness.js';

let cp: ControlPlane;
let pg: RunningPolicyGuard | undefined;
const crds = () => generateCrds().map((c) => parse(c.yaml) as KubernetesObject);

beforeAll(async () => {
  cp = await startControlPlane({ crdsDir: null });
  // This version's CRDs, but guardpolicies as an older release installed it: no digest.
  await applyObjects(
    cp.kubeConfig(),
    crds().map((c) => (c.metadata?.name === 'guardpolicies.policyguard.dev' ? { ...c, metadata: { name: c.metadata.name } } : c)),
  );
}, 180_000);
afterAll(async () => {
  await pg?.close();
  await cp?.stop();
});

const decide = (target: string) => validateOverHttp(pg!.url, target, 'etl');

describe('CRDs that are not the ones this version ships', () => {
  it('hold every decision and keep the replica not ready, naming the CRD; applying the right ones resumes both', async () => {
    const kc = cp.kubeConfig();
    const ns = await createNamespace(kc, 'pg-crd');
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium' });
    const config = parseServeConfig(['--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--watch-namespaces', ns, '--audit-sink', 'configmap', '--port', '0', '--leader-election', 'false'], {});
    pg = await startServer(config, silentLogger);

    const problem = /^CustomResourceDefinition guardpolicies\.policyguard\.dev is not the one this PolicyGuard ships \(no policyguard\.dev\/schema-digest annotation, so it predates it\)/;
    await eventually(async () => pg!.store.notReady(), (r) => problem.test(r ?? ''), 'the replica to be not ready for the CRD');
    expect(pg.store.problems()[0]).toMatch(problem);
    const readyz = await fetch(`${pg.url}/readyz`);
    expect(readyz.status).toBe(503);
    expect(await readyz.text()).toMatch(/^not ready: CustomResourceDefinition guardpolicies\.policyguard\.dev is not the one/);
    const d = await decide('read_table');
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/^The policy set is incomplete, so this call is denied until it is fixed: CustomResourceDefinition guardpolicies\.policyguard\.dev is not the one this PolicyGuard ships/);
    expect(d.reason).toContain('kubectl apply --server-side -f helm/policyguard/crds/');

    await applyObjects(kc, crds());
    await eventually(() => decide('read_table'), (v) => v.allowed === true, 'decisions to resume once the CRDs are applied');
    expect(pg.store.notReady()).toBeUndefined();
    expect((await fetch(`${pg.url}/readyz`)).status).toBe(200);
    expect(crds().every((c) => c.metadata?.annotations?.[SCHEMA_DIGEST_ANNOTATION]?.startsWith('sha256:'))).toBe(true);
  });
});

describe('a CRD that appears or changes after the check passed', () => {
  it('an optional CRD absent at start and installed later from another version is found at the next check', async () => {
    const kc = cp.kubeConfig();
    const name = 'guardupstreams.policyguard.dev';
    const api = kc.makeApiClient(ApiextensionsV1Api);
    await applyObjects(kc, crds()); // this version's, whatever the test before left
    await api.deleteCustomResourceDefinition({ name });
    await eventually(() => api.readCustomResourceDefinition({ name }).then(() => 'present', () => 'gone'), (v) => v === 'gone', 'the GuardUpstream CRD to be deleted');

    const check = new CrdCheck({ kubeConfig: kc, log: silentLogger, optional: new Set([name]), onChange: () => undefined, recheckMs: 200, watchMs: 200 });
    try {
      await check.start();
      expect(check.problems()).toEqual([]); // absent and optional: no problem
      // Installed later, as an older release had it: no digest.
      const old = crds().find((c) => c.metadata?.name === name)!;
      await applyObjects(kc, [{ ...old, metadata: { name } }]);
      const found = await eventually(async () => check.problems(), (p) => p.length > 0, 'the check to find the CRD installed later');
      expect(found).toEqual([expect.stringMatching(/^CustomResourceDefinition guardupstreams\.policyguard\.dev is not the one this PolicyGuard ships/)]);
      await applyObjects(kc, crds());
      await eventually(async () => check.problems(), (p) => p.length === 0, 'the right CRD to clear it');
    } finally {
      check.stop();
    }
  });
});

