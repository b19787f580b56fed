/**
 * The gateway in kubernetes mode on the real API server: a GuardUpstream whose credentials
 * come from a Secret, a ServiceAccount caller, and the per-mode rules for header sources.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { readResult } from '../standalone/clients.js';
import { connect } from '../standalone/harness.js';
import { pythonAvailability } from '../standalone/python-client.js';
import { startPythonUpstream, type Upstream } from '../standalone/upstreams.js';
import { applyGuard, createNamespace, eventually, getGuard, startOperator, type Operator } from './harness.js';

const python = pythonAvailability();
const SECRET = 'cluster-upstream-secret';

let kc: KubeConfig;
let ns: string;
let op: Operator;
let upstream: Upstream;
let dir: string;
const core = () => kc.makeApiClient(CoreV1Api);

async function tokenFor(sa: string): Promise<string> {
  const r = await core().createNamespacedServiceAccountToken({ name: sa, namespace: ns, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } });
  return r.status!.token!;
}

const secret = (name: string, labelled: boolean) =>
  core().createNamespacedSecret({
    namespace: ns,
    body: { metadata: { name, ...(labelled ? { labels: { 'policyguard.dev/upstream-credentials': 'true' } } : {}) }, stringData: { token: SECRET } },
  });

beforeAll(async () => {
  if (!python.ok) return;
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-gateway');
  dir = await mkdtemp(join(tmpdir(), 'pg-gateway-cluster-'));
  upstream = await startPythonUpstream(join(dir, 'upstream.log'), `Bearer ${SECRET}`);
  await core().createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'bot' } } });
  await applyGuard(kc, 'GuardAgent', ns, 'bot', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'bot' } }] });
  await applyGuard(kc, 'GuardPolicy', ns, 'no-deletes', { rules: [{ match: { tools: ['delete_*'] }, action: 'deny', message: 'no deletes through the gateway' }] });
  await secret('upstream-token', true);
  await secret('unlabelled-token', false);
  const header = (name: string) => [{ name: 'Authorization', prefix: 'Bearer ', valueFrom: { secretKeyRef: { name, key: 'token' } } }];
  await applyGuard(kc, 'GuardUpstream', ns, 'py', { url: upstream.url, headers: header('upstream-token') });
  await applyGuard(kc, 'GuardUpstream', ns, 'py-unlabelled', { url: upstream.url, headers: header('unlabelled-token') });
  await applyGuard(kc, 'GuardUpstream', ns, 'py-file', { url: upstream.url, headers: [{ name: 'Authorization', valueFrom: { file: '/var/run/secrets/kubernetes.io/serviceaccount/token' } }] });
  op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes']);
}, 180_000);
afterAll(async () => {
  await op?.close();
  await upstream?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!python.ok)(`the gateway in a cluster${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  it('sends the upstream the credentials of a labelled Secret, and decides every call', async () => {
    const client = await connect(`${op.pg.url}/upstreams/${ns}/py`, await tokenFor('bot'));
    try {
      expect(readResult(await client.callTool({ name: 'add', arguments: { a: 20, b: 22 } })).json).toBe(42);
      const denied = readResult(await client.callTool({ name: 'delete_repo', arguments: { name: 'x' } }));
      expect(denied).toMatchObject({ isError: true, json: 'Denied by PolicyGuard: no deletes through the gateway' });
    } finally {
      await client.close();
    }
    const log = await upstream.log();
    expect(log).toContain(`tools/call add auth=Bearer ${SECRET}`);
    expect(log.some((l) => l.startsWith('tools/call delete_repo'))).toBe(false);
  });

  it('refuses a Secret that is not labelled for upstreams: nothing is sent upstream, the error says why', async () => {
    const before = (await upstream.log()).length;
    const r = await fetch(`${op.pg.url}/upstreams/${ns}/py-unlabelled/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${await tokenFor('bot')}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'add', arguments: { a: 1, b: 1 } } }),
    });
    const body = (await r.json()) as any;
    expect(body.result.isError).toBe(true);
    expect(body.result.content[0].text).toMatch(/Secret .*unlabelled-token lacks the label policyguard\.dev\/upstream-credentials: "true"/);
    expect((await upstream.log()).length).toBe(before);
  });

  it('a file source is refused in a cluster: Ready=False, and the gateway does not serve it', async () => {
    const obj = await eventually(() => getGuard(kc, 'GuardUpstream', ns, 'py-file'), (o: any) => o.status?.conditions?.[0]?.status === 'False', 'Ready=False on py-file');
    expect(obj.status.conditions[0]).toMatchObject({ reason: 'InvalidSpec', message: expect.stringMatching(/file and env sources are for standalone mode/) });
    const r = await fetch(`${op.pg.url}/upstreams/${ns}/py-file/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${await tokenFor('bot')}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(r.status).toBe(404);
    expect(((await r.json()) as any).error.message).toMatch(new RegExp(`no usable GuardUpstream ${ns}/py-file`));
  });
});
