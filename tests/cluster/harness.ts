/**
 * Helpers for tests of kubernetes mode against the real test control plane: a namespace per
 * test file, an operator started in-process on a free loopback port, and an MCP client.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Client } from '@modelcontextprotocol/client';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { apiErrorMessage, applyObjects } from '../controlplane/index.js';
import { parseObjects, renderChart } from '../helm/chart.js';
import { connect } from '../standalone/harness.js';

import { eventually } from '../standalone/eventually.js';

export { eventually };

export async function createNamespace(kc: KubeConfig, prefix: string): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

export interface Operator {
  pg: RunningPolicyGuard;
  /** An MCP client (unauthenticated; not usable with `--auth`: connect your own with a token). */
  client: Client;
  namespace: string;
  call(name: string, args?: Record<string, unknown>): Promise<any>;
  validate(target: string, agent_id: string, parameters?: Record<string, unknown>): Promise<any>;
  close(): Promise<void>;
}

/**
 * Start PolicyGuard in kubernetes mode in this process, watching only `namespace`. Its data
 * directory is a fresh one removed on close, unless `dataDir` names one to use and keep (a
 * restart: the audit anchor in the namespace expects the log it anchors).
 */
export async function startOperator(kubeconfigPath: string, namespace: string, extra: string[] = [], opts: { dataDir?: string } = {}): Promise<Operator> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'policyguard-op-')));
  const config = parseServeConfig(
    ['--kubeconfig', kubeconfigPath, '--namespace', namespace, '--watch-namespaces', namespace, '--data-dir', dataDir, '--port', '0',
      '--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms', ...extra],
    {},
  );
  const log = process.env.POLICYGUARD_TEST_LOG ? createLogger('debug') : silentLogger;
  const pg = await startServer(config, log);
  await eventually(async () => pg.store.notReady(), (r) => r === undefined, 'the operator to sync');
  // Under --auth the harness cannot connect anonymously; tests bring their own tokens.
  const client = extra.includes('--auth') ? (undefined as unknown as Client) : await connect(pg.url);
  const call = async (name: string, args: Record<string, unknown> = {}) => {
    const res = await client.callTool({ name, arguments: args });
    if (res.structuredContent) return res.structuredContent;
    return (res.content as Array<{ text: string }>)[0]!.text;
  };
  return {
    pg,
    client,
    namespace,
    call,
    validate: (target, agent_id, parameters = {}) => call('validate_action', { action_type: 'tool_call', target, agent_id, parameters }),
    async close() {
      await client?.close();
      await pg.close();
      if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * `validate_action` as a plain HTTP POST to `url`/mcp (for a server started without the
 * harness's MCP client, or with a bearer token): its structured result; an answer other than
 * 200 throws with its body.
 */
export async function validateOverHttp(url: string, target: string, agentId: string, token?: string): Promise<any> {
  const res = await fetch(`${url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: agentId } } }),
  });
  if (res.status !== 200) throw new Error(`validate_action answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as any).result.structuredContent;
}

const PLURAL = { GuardAgent: 'guardagents', GuardPolicy: 'guardpolicies', GuardUpstream: 'guardupstreams' } as const;

/** Create or replace a GuardAgent/GuardPolicy as `kubectl apply` would (server-side apply). */
export async function applyGuard(kc: KubeConfig, kind: keyof typeof PLURAL, namespace: string, name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}): Promise<any> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const { setHeaderOptions, PatchStrategy } = await import('@kubernetes/client-node');
  return api.patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, namespace, plural: PLURAL[kind], name, body: { apiVersion: `${GROUP}/${VERSION}`, kind, metadata: { name, namespace, ...metadata }, spec }, fieldManager: 'kubectl', force: true },
    setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
  );
}

export async function getGuard(kc: KubeConfig, kind: keyof typeof PLURAL, namespace: string, name: string): Promise<any> {
  return kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL[kind], name });
}

export async function deleteGuard(kc: KubeConfig, kind: keyof typeof PLURAL, namespace: string, name: string): Promise<void> {
  await kc.makeApiClient(CustomObjectsApi).deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL[kind], name });
}

const RBAC_KINDS = new Set(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding']);

/**
 * Renders the chart for a release in `ns` watching only `ns` (the operator in tests/cluster
 * watches one namespace), creates its RBAC objects (after `mutate`), and returns a kubeconfig
 * file authenticated as the chart's ServiceAccount, with everything the chart rendered.
 */
export async function installChartRbac(
  admin: KubeConfig,
  ns: string,
  release: string,
  dir: string,
  mutate: (objs: any[]) => void = () => {},
): Promise<{ kubeconfigPath: string; kc: KubeConfig; objects: any[]; rendered: any[]; serviceAccount: string }> {
  const rendered: any[] = parseObjects(await renderChart({ release, namespace: ns, set: [`watchNamespaces[0]=${ns}`] }));
  const objects = rendered.filter((o) => RBAC_KINDS.has(o.kind ?? ''));
  mutate(objects);
  await applyObjects(admin, objects as KubernetesObject[]);
  const serviceAccount = objects.find((o) => o.kind === 'ServiceAccount').metadata.name as string;
  const { path, kc } = await serviceAccountKubeconfig(admin, ns, serviceAccount, dir);
  return { kubeconfigPath: path, kc, objects, rendered, serviceAccount };
}

/** A kubeconfig file authenticated as ServiceAccount `ns/name` (a TokenRequest token, as in a Pod). */
export async function serviceAccountKubeconfig(admin: KubeConfig, ns: string, name: string, dir: string): Promise<{ path: string; kc: KubeConfig }> {
  const tr = await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
  const cluster = admin.getCurrentCluster()!;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'test', server: cluster.server, caData: cluster.caData }],
    users: [{ name, token: tr.status!.token }],
    contexts: [{ name: 'sa', cluster: 'test', user: name }],
    currentContext: 'sa',
  });
  const path = join(dir, `${ns}-${name}.kubeconfig`);
  await writeFile(path, kc.exportConfig(), { mode: 0o600 });
  return { path, kc };
}

/** The admin's kubeconfig impersonating `user` (kubectl --as). */
export function impersonating(admin: KubeConfig, user: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: admin.clusters, users: admin.users.map((u) => ({ ...u, impersonateUser: user })), contexts: admin.contexts, currentContext: admin.currentContext });
  return kc;
}

/** 'ok', or the API server's message: what an admission test compares. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return apiErrorMessage(e);
  }
}

/** A kubeconfig file of the admin impersonating `user` (kubectl --as), for a person in a test. */
export async function userKubeconfig(admin: KubeConfig, user: string, dir: string): Promise<string> {
  const kc = impersonating(admin, user);
  const path = join(dir, `user-${user}.kubeconfig`);
  await writeFile(path, kc.exportConfig(), { mode: 0o600 });
  return path;
}
