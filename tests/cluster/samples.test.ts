/**
 * Every file in config-samples/: our objects parse with the zod schemas (parseManifests, as
 * standalone mode reads them), and the real kube-apiserver accepts every document with the
 * third-party CRDs (kagent, Argo CD, Flux from tests/fixtures/vendor-crds) installed, by
 * `kubectl apply --server-side --dry-run=server` with strict field validation. (Strict validation
 * no longer checks our kinds' spec fields, which the CRDs keep: the zod parse above does.)
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { TOOL_NAMES } from '../../src/mcp/server.js';
import { parseManifests } from '../../src/store/manifests.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { REPO_ROOT, VENDOR_CRDS_DIR, ensureNamespaces, findObject, installCrds, parseObjects, renderChart, serverDryRun } from '../helm/chart.js';

const SAMPLES_DIR = join(REPO_ROOT, 'config-samples');

function sampleFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sampleFiles(join(dir, e.name)) : /\.(ya?ml|json)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}
const files = sampleFiles(SAMPLES_DIR).sort();
const rel = (f: string) => relative(REPO_ROOT, f);
const samples = files.map((f) => ({ file: rel(f), text: readFileSync(f, 'utf8') }));
const objectsOf = (name: string): any[] => parseObjects(samples.find((s) => s.file === `config-samples/${name}`)!.text);

describe('config-samples', () => {
  it('has the policy samples and the kagent, Argo CD and Flux folders', () => {
    const folders = new Set(samples.map((s) => s.file.split('/').slice(1, -1).join('/')));
    expect([...folders].sort()).toEqual(['', 'argocd', 'flux', 'kagent']);
  });

  it.each(samples)('$file: our objects parse with the API schemas, the rest are other groups', ({ file, text }) => {
    const parsed = parseManifests(text, file);
    expect(parsed.errors).toEqual([]);
    const docs = parseObjects(text);
    expect(docs.length).toBeGreaterThan(0);
    expect(parsed.objects.length + parsed.skipped).toBe(docs.length);
    expect(parsed.objects.length).toBe(docs.filter((d) => d.apiVersion?.startsWith('policyguard.dev/')).length);
  });

  it('the kagent Agent uses exactly the six PolicyGuard tools through the RemoteMCPServer', () => {
    const agent = findObject(objectsOf('kagent/agent.yaml'), 'Agent');
    const server = findObject(objectsOf('kagent/remotemcpserver.yaml'), 'RemoteMCPServer');
    const tool = agent.spec.declarative.tools[0].mcpServer;
    expect(tool).toMatchObject({ kind: 'RemoteMCPServer', apiGroup: 'kagent.dev', name: server.metadata.name });
    expect([...tool.toolNames].sort()).toEqual([...TOOL_NAMES].sort());
    expect(server.spec.protocol).toBe('STREAMABLE_HTTP');
    // The GuardAgent PolicyGuard knows it by is bound to the Agent's ServiceAccount.
    const guard = findObject(objectsOf('kagent/agent.yaml'), 'GuardAgent');
    expect(guard.spec.identities).toEqual([{ serviceAccount: { namespace: 'kagent', name: agent.spec.declarative.deployment.serviceAccountName } }]);
  });

  it("the kagent RemoteMCPServer's url is the Service of the chart installed as the samples say (release policyguard, namespace policyguard)", async () => {
    await ensureHelm();
    const chart = parseObjects(await renderChart({ release: 'policyguard', namespace: 'policyguard', set: ['kagent.remoteMCPServer.enabled=true', 'kagent.remoteMCPServer.headersFrom[0].name=Authorization,kagent.remoteMCPServer.headersFrom[0].valueFrom.type=Secret,kagent.remoteMCPServer.headersFrom[0].valueFrom.name=policyguard-token,kagent.remoteMCPServer.headersFrom[0].valueFrom.key=authorization'] }));
    const svc = findObject(chart, 'Service');
    const sample = findObject(objectsOf('kagent/remotemcpserver.yaml'), 'RemoteMCPServer');
    expect(sample.spec.url).toBe(`http://${svc.metadata.name}.${svc.metadata.namespace}:${svc.spec.ports[0].port}/mcp`);
    expect(findObject(chart, 'RemoteMCPServer').spec.url).toBe(sample.spec.url);
    // The Flux HelmRelease installs exactly that release.
    const release = findObject(objectsOf('flux/helmrelease.yaml'), 'HelmRelease');
    expect([release.spec.releaseName, release.spec.targetNamespace]).toEqual(['policyguard', 'policyguard']);
  }, 20 * 60_000);
});

describe('the kagent gateway sample', () => {
  it('points its RemoteMCPServer at the gateway path of the GuardUpstream it defines, on the chart\'s Service', () => {
    const objs = objectsOf('kagent/gateway.yaml');
    const upstream = findObject(objs, 'GuardUpstream');
    const server = findObject(objs, 'RemoteMCPServer');
    const base = findObject(objectsOf('kagent/remotemcpserver.yaml'), 'RemoteMCPServer').spec.url.replace(/\/mcp$/, '');
    expect(server.spec.url).toBe(`${base}/upstreams/${upstream.metadata.namespace}/${upstream.metadata.name}/mcp`);
    expect(server.spec.protocol).toBe('STREAMABLE_HTTP');
    // Its policies match the upstream by the same namespace/name.
    for (const rule of findObject(objs, 'GuardPolicy').spec.rules) expect(rule.match.upstreams).toEqual([`${upstream.metadata.namespace}/${upstream.metadata.name}`]);
    expect(upstream.spec.headers[0].valueFrom.secretKeyRef).toBeDefined(); // never a value in clear
  });
});

describe('the API server accepts every sample (third-party CRDs installed)', () => {
  beforeAll(async () => {
    const kc = sharedKubeConfig();
    for (const vendor of ['kagent', 'argocd', 'flux']) await installCrds(kc, join(VENDOR_CRDS_DIR, vendor));
    const namespaces = samples.flatMap((s) => parseObjects(s.text).map((o) => o.metadata?.namespace)).filter((n): n is string => !!n);
    await ensureNamespaces(kc, namespaces);
  }, 120_000);

  it.each(samples)('$file', async ({ text }) => {
    const r = await serverDryRun(text);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const applied = r.stdout.split('\n').filter((l) => /serverside-applied \(server dry run\)$/.test(l));
    expect(applied).toHaveLength(parseObjects(text).length);
  });

  it('the vendor schemas are really checked: kagent rejects requireApproval outside toolNames', async () => {
    const broken = objectsOf('kagent/agent.yaml').find((o) => o.kind === 'Agent');
    broken.spec.declarative.tools[0].mcpServer.requireApproval = ['delete_everything'];
    const r = await serverDryRun(JSON.stringify(broken));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/each RequireApproval entry must also appear in ToolNames/);
  });
});
