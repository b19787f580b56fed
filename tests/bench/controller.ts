/**
 * Controller benchmark against the test control plane (tests/controlplane: a real
 * kube-apiserver and etcd on loopback): 1,000 GuardAgents and 1,000 GuardPolicies applied with
 * server-side apply → seconds until all are in force (the operator's /metrics counts) and
 * Ready=True for their generation (status); the operator's RSS idle, at its peak during the
 * bulk load and steady afterwards; then 50 edits of one policy, each timed from the apply
 * request to the first validate_action that sees the new decision.
 *
 * The operator is the built one users run (`npm run build`, then `node dist/policyguard.js
 * serve` in kubernetes mode, watching one namespace, with the image's environment and the heap of
 * the chart's container: ./image.ts), in its own process so its RSS is its own. Baseline: how long the API server took to accept the writes, the floor
 * for "in force".
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { buildServer, imageProcess, spawnImageServer, stopImageServer, waitFor } from './image.js';
import { atMost, printFigure, printInfo } from './report.js';
import { percentile } from './stats.js';

const AGENTS = 1_000;
const POLICIES = 1_000;
const RULES_PER_POLICY = 3;
const EDITS = 50;
/** Applies in flight at once, as a GitOps tool syncing a folder would. */
const APPLY_CONCURRENCY = 64;
const READY_TIMEOUT_MS = 60_000;
/** Issue 15's targets for the built operator with the 2,000 objects in force. */
const STEADY_RSS_TARGET_MB = 150;
const PEAK_RSS_TARGET_MB = 250;
/** How long the operator is left alone after the bulk load before its steady RSS is read. */
const SETTLE_MS = 10_000;
const PLURAL = { GuardAgent: 'guardagents', GuardPolicy: 'guardpolicies' } as const;
const TRUST = ['low', 'medium', 'high', 'admin'] as const;

type Kind = keyof typeof PLURAL;

function apply(api: CustomObjectsApi, kind: Kind, namespace: string, name: string, spec: Record<string, unknown>): Promise<unknown> {
  return api.patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, namespace, plural: PLURAL[kind], name, body: { apiVersion: `${GROUP}/${VERSION}`, kind, metadata: { name, namespace }, spec }, fieldManager: 'kubectl', force: true },
    setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
  );
}

async function inPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const agentSpec = (i: number) => ({ trustLevel: TRUST[i % TRUST.length], allowedTools: i % 7 === 0 ? [`svc${i % 50}_*`, 'read_*'] : [], deniedTools: i % 5 === 0 ? ['drop_*'] : [] });
const policySpec = (i: number) => ({
  priority: i % 500,
  rules: [
    { name: 'exact', match: { tools: [`svc${i}_delete_records`] }, action: 'deny', message: `policy ${i}: no deletes` },
    { name: 'prefix', match: { tools: [`svc${i}_export_*`], trustLevelBelow: 'high' }, action: 'require_approval' },
    { name: 'suffix', match: { tools: [`*_svc${i}_read`] }, action: 'allow' },
  ],
});

async function metricValue(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

async function countReady(api: CustomObjectsApi, namespace: string, kind: Kind): Promise<number> {
  let ready = 0;
  let _continue: string | undefined;
  do {
    const page: any = await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL[kind], limit: 500, ...(_continue ? { _continue } : {}) });
    for (const o of page.items) {
      const c = o.status?.conditions?.find((x: any) => x.type === 'Ready');
      if (c?.status === 'True' && o.status?.observedGeneration === o.metadata.generation) ready++;
    }
    _continue = page.metadata?.continue || undefined;
  } while (_continue);
  return ready;
}

async function decide(url: string, target: string, agentId: string): Promise<string> {
  const res = await fetch(`${url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: agentId } } }),
  });
  return ((await res.json()) as any).result.structuredContent.decision;
}

async function rssOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(/(\d+) kB/.exec(status.split('\n').find((l) => l.startsWith(k)) ?? '')?.[1] ?? NaN);
  return { rss: kb('VmRSS:') / 1024, peak: kb('VmHWM:') / 1024 };
}

function startOperatorProcess(kubeconfigPath: string, namespace: string, dataDir: string, port: number): ChildProcess {
  const args = ['serve', '--kubeconfig', kubeconfigPath, '--namespace', namespace, '--watch-namespaces', namespace, '--data-dir', dataDir, '--port', String(port), '--rate-limit', '0', '--log-level', 'info'];
  // The full GC that gives a burst's memory back stops the event loop: say for how long.
  return spawnImageServer('operator', args, (line) => line.includes('released memory') && printInfo(`operator: ${line}`));
}

/** The operator's mean watch-to-snapshot latency from its own histogram (sum ÷ count), in ms. */
async function watchToSnapshotMs(url: string): Promise<{ meanMs: number; count: number }> {
  const sum = await metricValue(url, 'policyguard_watch_to_snapshot_duration_seconds_sum');
  const count = await metricValue(url, 'policyguard_watch_to_snapshot_duration_seconds_count');
  return { meanMs: (sum / count) * 1000, count };
}

export async function runControllerBench(): Promise<void> {
  printInfo(`controller: built in ${(await buildServer()).toFixed(0)} s (npm run build); the operator runs ${imageProcess().describe}`);
  let cpModule: typeof import('../controlplane/index.js');
  let cp: Awaited<ReturnType<typeof cpModule.startControlPlane>>;
  try {
    cpModule = await import('../controlplane/index.js');
    cp = await cpModule.startControlPlane();
  } catch (err) {
    printInfo(`controller: skipped, the test control plane did not start: ${String((err as Error).message ?? err).split('\n')[0]}`);
    return;
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'policyguard-bench-op-'));
  let operator: ChildProcess | undefined;
  try {
    const kc: KubeConfig = cp.kubeConfig();
    const api = kc.makeApiClient(CustomObjectsApi);
    const namespace = `pg-bench-${Date.now().toString(36)}`;
    await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });

    const port = await cpModule.freePort();
    const url = `http://127.0.0.1:${port}`;
    operator = startOperatorProcess(cp.kubeconfigPath, namespace, dataDir, port);
    await waitFor('the operator to be ready', 60_000, async () => (await fetch(`${url}/readyz`)).ok, 100);
    const idle = await rssOf(operator.pid!);

    // 1. Bulk apply, then wait for the snapshot and the status to catch up.
    const started = performance.now();
    const work = [
      ...Array.from({ length: AGENTS }, (_, i) => () => apply(api, 'GuardAgent', namespace, `bench-agent-${i}`, agentSpec(i))),
      ...Array.from({ length: POLICIES }, (_, i) => () => apply(api, 'GuardPolicy', namespace, `bench-policy-${i}`, policySpec(i))),
    ];
    let appliedAt = 0;
    const inForce = (async () => {
      await waitFor('all objects in force', READY_TIMEOUT_MS, async () => (await metricValue(url, 'policyguard_agents')) >= AGENTS && (await metricValue(url, 'policyguard_policy_rules')) >= POLICIES * RULES_PER_POLICY, 50);
      return performance.now();
    })();
    await inPool(work, APPLY_CONCURRENCY, (w) => w());
    appliedAt = performance.now();
    const inForceAt = await inForce;
    const ready = { agents: 0, policies: 0 };
    let readyAt = NaN;
    try {
      await waitFor('all objects Ready', READY_TIMEOUT_MS, async () => {
        ready.agents = await countReady(api, namespace, 'GuardAgent');
        ready.policies = await countReady(api, namespace, 'GuardPolicy');
        return ready.agents + ready.policies >= AGENTS + POLICIES;
      }, 250);
      readyAt = performance.now();
    } catch (err) {
      printInfo(`controller: ${(err as Error).message}: ${ready.agents} of ${AGENTS} GuardAgents and ${ready.policies} of ${POLICIES} GuardPolicies Ready`);
    }
    const loaded = await rssOf(operator.pid!);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const steady = await rssOf(operator.pid!);
    const watchLag = await watchToSnapshotMs(url);
    // Where the RSS is: the V8 heap (total reserved, used) and memory outside it (Buffers, native).
    const mb = async (name: string) => (await metricValue(url, name)) / 2 ** 20;
    printInfo(`controller: after the load, V8 heap ${(await mb('nodejs_heap_size_total_bytes')).toFixed(0)} MB reserved, ${(await mb('nodejs_heap_size_used_bytes')).toFixed(0)} MB used; external ${(await mb('nodejs_external_memory_bytes')).toFixed(0)} MB; RSS ${steady.rss.toFixed(0)} MB`);

    // 2. Cold start: a new operator process over the same 2,000 objects (list, compile, serve).
    await stopImageServer(operator);
    const coldStarted = performance.now();
    operator = startOperatorProcess(cp.kubeconfigPath, namespace, dataDir, port);
    await waitFor('the restarted operator to have everything in force', READY_TIMEOUT_MS, async () => (await metricValue(url, 'policyguard_agents')) >= AGENTS && (await metricValue(url, 'policyguard_policy_rules')) >= POLICIES * RULES_PER_POLICY, 50);
    const coldInForce = (performance.now() - coldStarted) / 1000;
    const cold = await rssOf(operator.pid!);

    // 3. Apply → changed decision, 50 times, alternating deny and allow on one tool.
    const latencies: number[] = [];
    const agent = 'bench-agent-1';
    const target = 'svc0_delete_records';
    for (let i = 0; i < EDITS; i++) {
      const action = i % 2 === 0 ? 'allow' : 'deny';
      const spec = policySpec(0);
      const rules: Array<Record<string, unknown>> = spec.rules;
      rules[0] = { ...spec.rules[0], action, message: `edit ${i}` };
      const t0 = performance.now();
      await apply(api, 'GuardPolicy', namespace, 'bench-policy-0', spec);
      await waitFor(`edit ${i} to decide ${action}`, 30_000, async () => (await decide(url, target, agent)) === action, 2);
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);

    const secs = (t: number) => (t - started) / 1000;
    const note = `${AGENTS} GuardAgents + ${POLICIES} GuardPolicies (${POLICIES * RULES_PER_POLICY} rules), ${APPLY_CONCURRENCY} applies in flight`;
    printFigure({ name: 'controller.in_force', value: secs(inForceAt), unit: 's', baseline: { label: 'api writes', value: secs(appliedAt) }, note: `${atMost(secs(inForceAt), 10, 's')}; from the first apply; ${note}` });
    printFigure({ name: 'controller.in_force_after_last_write', value: (inForceAt - appliedAt) / 1000, unit: 's', note: 'how far the snapshot trails the API server' });
    printFigure({
      name: 'controller.ready',
      value: secs(readyAt),
      unit: 's',
      baseline: { label: 'in force', value: secs(inForceAt) },
      note: Number.isNaN(readyAt) ? `NOT all Ready within ${READY_TIMEOUT_MS / 1000} s: ${ready.agents}/${AGENTS} GuardAgents, ${ready.policies}/${POLICIES} GuardPolicies` : 'from the first apply; Ready=True at the current generation (status written by the Lease holder)',
    });
    printFigure({ name: 'controller.cold_start_in_force', value: coldInForce, unit: 's', baseline: { label: 'target', value: 10 }, note: `a new operator process over the 2,000 objects: start, list, compile; RSS then ${cold.rss.toFixed(0)} MB` });
    printFigure({ name: 'controller.rss.idle', value: idle.rss, unit: 'MB', note: 'the built operator, ready, before any object exists' });
    printFigure({ name: 'controller.rss.peak', value: loaded.peak, unit: 'MB', baseline: { label: 'idle', value: idle.rss }, note: `${atMost(loaded.peak, PEAK_RSS_TARGET_MB, 'MB')}; highest RSS (VmHWM) through the bulk load` });
    printFigure({ name: 'controller.rss.steady', value: steady.rss, unit: 'MB', baseline: { label: 'idle', value: idle.rss }, note: `${atMost(steady.rss, STEADY_RSS_TARGET_MB, 'MB')}; ${SETTLE_MS / 1000} s after all were Ready (${loaded.rss.toFixed(0)} MB right then)` });
    printFigure({ name: 'controller.watch_to_snapshot.mean', value: watchLag.meanMs, unit: 'ms', note: `the operator's own policyguard_watch_to_snapshot_duration_seconds over ${watchLag.count} compiles` });
    printFigure({ name: 'controller.apply_to_decision.p50', value: percentile(latencies, 50), unit: 'ms', note: `${EDITS} edits of one GuardPolicy; validate_action polled every ~2 ms` });
    printFigure({ name: 'controller.apply_to_decision.p99', value: percentile(latencies, 99), unit: 'ms', baseline: { label: 'target', value: 1000 }, note: atMost(percentile(latencies, 99), 1000, 'ms') });
  } finally {
    if (operator) await stopImageServer(operator);
    await cp.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 5 });
  }
}
