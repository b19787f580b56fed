// Smoke tests of the test control plane: a real kube-apiserver + etcd, driven through
// @kubernetes/client-node. Most use the shared control plane of global-setup.ts; the restart
// test starts its own so it cannot disturb other files.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';

import {
  ApiextensionsV1Api,
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  RbacAuthorizationV1Api,
  Watch,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { POLICYGUARD_AUDIENCE, startControlPlane, waitForCrdEstablished, type ControlPlane } from './index.js';
import { sharedKubeConfig, sharedKubectl } from './test-context.js';

const suffix = () => randomBytes(3).toString('hex');

/** The HTTP status of a failed client-node call (ApiException.code), or 'no error'. */
async function statusOf(p: Promise<unknown>): Promise<number | string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return (e as { code?: number }).code ?? String(e);
  }
}

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('shared control plane', () => {
  const kc = sharedKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);

  it('answers /readyz through kubectl', async () => {
    const r = await sharedKubectl(['get', '--raw', '/readyz']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('ok');
  });

  it('creates a namespace and a ConfigMap and reads it back', async () => {
    const ns = `cp-smoke-${suffix()}`;
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'settings' }, data: { mode: 'enforce', limit: '3' } },
    });
    const cm = await core.readNamespacedConfigMap({ name: 'settings', namespace: ns });
    expect(cm.data).toEqual({ mode: 'enforce', limit: '3' });
    expect(cm.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    // Reading something that does not exist is a real 404, not an empty object.
    expect(await statusOf(core.readNamespacedConfigMap({ name: 'absent', namespace: ns }))).toBe(404);
    await core.deleteNamespace({ name: ns });
  });

  it('installs a CRD, then creates, watches and deletes a custom object', async () => {
    const group = 'smoke.controlplane.policyguard.dev';
    const crd: V1CustomResourceDefinition = {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `widgets.${group}` },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: 'object',
                properties: {
                  spec: {
                    type: 'object',
                    required: ['size'],
                    properties: { size: { type: 'integer', minimum: 1 } },
                  },
                },
              },
            },
          },
        ],
      },
    };
    await kc.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({ body: crd });
    await waitForCrdEstablished(kc, `widgets.${group}`);

    const ns = `cp-crd-${suffix()}`;
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const custom = kc.makeApiClient(CustomObjectsApi);
    const ref = { group, version: 'v1', namespace: ns, plural: 'widgets' };

    const events: Array<{ type: string; name: string }> = [];
    let watchEnded: unknown = 'still open';
    const watch = new Watch(kc);
    // Right after a CRD is created its watch cache may still be initializing: the apiserver
    // answers 429 with Retry-After (ResilientWatchCacheInitialization). Retry, as informers do.
    let controller: AbortController | undefined;
    for (let attempt = 0; attempt < 30 && !controller; attempt++) {
      watchEnded = 'still open';
      const c = await watch.watch(
        `/apis/${group}/v1/namespaces/${ns}/widgets`,
        {},
        (type, obj: { metadata?: { name?: string } }) => events.push({ type, name: obj.metadata?.name ?? '' }),
        (err: unknown) => (watchEnded = err ?? 'closed'),
      );
      if ((watchEnded as { statusCode?: number }).statusCode === 429) await new Promise((r) => setTimeout(r, 500));
      else controller = c;
    }
    expect(watchEnded).toBe('still open');
    try {
      await custom.createNamespacedCustomObject({
        ...ref,
        body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w1' }, spec: { size: 2 } },
      });
      // The schema is enforced by the real apiserver: size must be >= 1.
      expect(
        await statusOf(custom.createNamespacedCustomObject({
          ...ref,
          body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'bad' }, spec: { size: 0 } },
        })),
      ).toBe(422);
      const got = (await custom.getNamespacedCustomObject({ ...ref, name: 'w1' })) as { spec: { size: number } };
      expect(got.spec.size).toBe(2);
      await custom.deleteNamespacedCustomObject({ ...ref, name: 'w1' });
      const seen = await eventually(
        async () => events.map((e) => `${e.type} ${e.name}`),
        (s) => s.includes('DELETED w1'),
      );
      expect({ seen, watchEnded }).toEqual({ seen: ['ADDED w1', 'DELETED w1'], watchEnded: 'still open' });
      expect(await statusOf(custom.getNamespacedCustomObject({ ...ref, name: 'w1' }))).toBe(404);
    } finally {
      controller?.abort();
      await core.deleteNamespace({ name: ns });
    }
  });

  describe('service accounts', () => {
    const ns = `cp-sa-${suffix()}`;
    const sa = 'agent';
    const auth = kc.makeApiClient(AuthenticationV1Api);

    beforeAll(async () => {
      await core.createNamespace({ body: { metadata: { name: ns } } });
      await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: sa } } });
    });
    afterAll(async () => {
      await core.deleteNamespace({ name: ns });
    });

    const requestToken = async (audiences?: string[]) => {
      const tr = await core.createNamespacedServiceAccountToken({
        name: sa,
        namespace: ns,
        body: { spec: { ...(audiences ? { audiences } : {}), expirationSeconds: 600 } },
      });
      const token = tr.status?.token;
      expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/); // a JWT
      return token!;
    };

    /** A KubeConfig that authenticates with `token` instead of the admin certificate. */
    const tokenKubeConfig = (token: string): KubeConfig => {
      const cluster = kc.getCurrentCluster()!;
      const tkc = new KubeConfig();
      tkc.loadFromOptions({
        clusters: [{ name: 'test', server: cluster.server, caData: cluster.caData }],
        users: [{ name: 'sa', token }],
        contexts: [{ name: 'sa', cluster: 'test', user: 'sa' }],
        currentContext: 'sa',
      });
      return tkc;
    };

    it(`accepts a TokenRequest token with audience "${POLICYGUARD_AUDIENCE}" in a TokenReview`, async () => {
      const token = await requestToken([POLICYGUARD_AUDIENCE]);
      const review = await auth.createTokenReview({ body: { spec: { token, audiences: [POLICYGUARD_AUDIENCE] } } });
      expect(review.status?.error ?? '').toBe('');
      expect(review.status?.authenticated).toBe(true);
      expect(review.status?.user?.username).toBe(`system:serviceaccount:${ns}:${sa}`);
      expect(review.status?.user?.groups).toContain(`system:serviceaccounts:${ns}`);
      expect(review.status?.audiences).toEqual([POLICYGUARD_AUDIENCE]);

      // A token for another audience, and a tampered token, are not accepted.
      const other = await auth.createTokenReview({ body: { spec: { token, audiences: ['someone-else'] } } });
      expect(other.status?.authenticated).not.toBe(true);
      const [h, p, s] = token.split('.');
      const tampered = `${h}.${p}.${s!.slice(0, -4)}${s!.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
      const bad = await auth.createTokenReview({ body: { spec: { token: tampered } } });
      expect(bad.status?.authenticated).not.toBe(true);
    });

    it('accepts a default-audience token too', async () => {
      const token = await requestToken();
      const review = await auth.createTokenReview({ body: { spec: { token } } });
      expect(review.status?.authenticated).toBe(true);
      expect(review.status?.user?.username).toBe(`system:serviceaccount:${ns}:${sa}`);
    });

    it('RBAC denies the service account without a role (403), and allows it once bound', async () => {
      const token = await requestToken([POLICYGUARD_AUDIENCE]);
      const asSa = tokenKubeConfig(token).makeApiClient(CoreV1Api);
      // Authenticated (not 401), but not authorized.
      expect(await statusOf(asSa.listNamespacedConfigMap({ namespace: ns }))).toBe(403);
      expect(await statusOf(asSa.listNamespace())).toBe(403);

      const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
      await rbac.createNamespacedRole({
        namespace: ns,
        body: {
          metadata: { name: 'read-configmaps' },
          rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }],
        },
      });
      await rbac.createNamespacedRoleBinding({
        namespace: ns,
        body: {
          metadata: { name: 'agent-reads-configmaps' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'read-configmaps' },
          subjects: [{ kind: 'ServiceAccount', name: sa, namespace: ns }],
        },
      });
      // The authorizer reads RBAC from an informer cache: allow a moment for the binding.
      const allowed = await eventually(() => statusOf(asSa.listNamespacedConfigMap({ namespace: ns })), (s) => s === 'no error');
      expect(allowed).toBe('no error');
      // Still only what the role grants.
      expect(await statusOf(asSa.listNamespace())).toBe(403);
      expect(
        await statusOf(asSa.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'nope' } } })),
      ).toBe(403);
    });
  });
});

describe('a control plane of its own', () => {
  let cp: ControlPlane;

  beforeAll(async () => {
    cp = await startControlPlane({ crdsDir: null });
  });
  afterAll(async () => {
    await cp?.stop();
  });

  it('keeps its data across an API server restart (same port, same certificates)', async () => {
    const core = cp.kubeConfig().makeApiClient(CoreV1Api);
    const ns = `cp-restart-${suffix()}`;
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const before = await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'survivor' }, data: { written: 'before restart' } },
    });

    await cp.stopApiServer();
    // Really down: a request fails at the connection level, not with an HTTP status.
    const down = await statusOf(core.readNamespace({ name: ns }));
    expect(typeof down).toBe('string');
    expect(down).not.toBe('no error');

    await cp.startApiServer();
    const server = cp.kubeConfig().getCurrentCluster()?.server;
    expect(server).toBe(cp.server);
    const after = await cp.kubeConfig().makeApiClient(CoreV1Api).readNamespacedConfigMap({ name: 'survivor', namespace: ns });
    expect(after.data).toEqual({ written: 'before restart' });
    expect(after.metadata?.uid).toBe(before.metadata?.uid);

    await cp.restartApiServer();
    const ready = await cp.kubectl(['get', '--raw', '/readyz']);
    expect(ready.stdout.trim()).toBe('ok');
    const again = await core.readNamespacedConfigMap({ name: 'survivor', namespace: ns });
    expect(again.metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
  });

  it('stops its processes and removes its directory on stop()', async () => {
    const other = await startControlPlane({ crdsDir: null });
    expect(existsSync(other.kubeconfigPath)).toBe(true);
    const port = Number(new URL(other.server).port);
    expect(await connectResult(port)).toBe('connected');
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
    expect(await connectResult(port)).toBe('ECONNREFUSED');
    expect(await connectResult(Number(new URL(other.etcdUrl).port))).toBe('ECONNREFUSED');
  });
});

function connectResult(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve('connected');
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}
