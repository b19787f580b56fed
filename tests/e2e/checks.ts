// The end-to-end checks (docs/e2e.md): the chart's Pods from the image built from our Dockerfile,
// on a real node, under the chart's defaults. Each check asserts and throws with what it saw.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { DiscoveryV1Api, Watch } from '@kubernetes/client-node';

import { REPO_ROOT, runProgram, type ExecResult } from '../controlplane/index.js';
import { ensureHelm } from '../helm/binary.js';
import type { E2ECluster } from './cluster.js';
import { validateAction } from './mcp.js';
import { note, run, waitUntil } from './util.js';

const NS = 'policyguard';
const RELEASE = 'policyguard';
/** The chart's fullname for release `policyguard`: Deployment, Service and Lease holder prefix. */
const APP = 'policyguard';
/** What an agent in the cluster sends as Host: the Service's name (the chart's allowedHosts). */
const SERVICE_HOST = `${APP}.${NS}.svc`;
const CHART_DIR = join(REPO_ROOT, 'helm', 'policyguard');
const AGENT = 'e2e-agent';
const CALLER_SA = 'e2e-caller';
const SAMPLE_DENY_REASON = 'Delete operations require admin trust level';
const LOCAL_STORAGE_CLASS = 'policyguard-e2e-local';

export interface CheckResult {
  name: string;
  ok: boolean;
  seconds: number;
  error?: string;
}

/**
 * Runs checks in order; after the first failure the rest are reported as not run.
 *
 * @example await checks.check('the Lease is held', async () => holder); process.stdout.write(checks.summary());
 */
export class Checks {
  readonly results: CheckResult[] = [];
  private failed = false;

  async check(name: string, fn: () => Promise<string | void>): Promise<void> {
    if (this.failed) {
      this.results.push({ name, ok: false, seconds: 0, error: 'not run: an earlier check failed' });
      return;
    }
    const t0 = Date.now();
    note(`CHECK ${name}`);
    try {
      const detail = await fn();
      const seconds = (Date.now() - t0) / 1000;
      this.results.push({ name, ok: true, seconds });
      note(`  ✓ ${name} (${seconds.toFixed(1)}s)${detail ? `: ${detail}` : ''}`);
    } catch (e) {
      this.failed = true;
      const seconds = (Date.now() - t0) / 1000;
      this.results.push({ name, ok: false, seconds, error: (e as Error).message });
      note(`  ✗ ${name} (${seconds.toFixed(1)}s): ${(e as Error).message}`);
    }
  }

  /** A result decided outside a check (the teardown's). */
  record(name: string, ok: boolean, error?: string): void {
    this.results.push({ name, ok, seconds: 0, ...(error ? { error } : {}) });
    note(`  ${ok ? '✓' : '✗'} ${name}${error ? `: ${error}` : ''}`);
  }

  get anyFailed(): boolean {
    return this.results.some((r) => !r.ok);
  }

  /** The closing lines: every check, then `N passed, N failed`. */
  summary(): string {
    const lines = this.results.map((r) => `${r.ok ? '✓' : '✗'} ${r.name}${r.ok ? '' : ` — ${r.error?.split('\n')[0]}`}`);
    const passed = this.results.filter((r) => r.ok).length;
    return `${lines.join('\n')}\n${passed} passed, ${this.results.length - passed} failed`;
  }
}

/** Everything the checks share: the cluster and a few helpers on it. */
class Ctx {
  token = '';
  constructor(readonly cluster: E2ECluster) {}

  async kubectl(args: string[], input?: string): Promise<string> {
    const r = await this.cluster.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim()}`);
    return r.stdout;
  }

  async json<T = any>(args: string[]): Promise<T> {
    return JSON.parse(await this.kubectl([...args, '-o', 'json'])) as T;
  }

  async helm(args: string[]): Promise<ExecResult> {
    return runProgram({ command: await ensureHelm(), args: [] }, [...args, '--kubeconfig', this.cluster.kubeconfigPath], { cwd: REPO_ROOT });
  }

  imageArgs(): string[] {
    return ['--set', `image.repository=${this.cluster.image.repository}`, '--set', `image.tag=${this.cluster.image.tag}`];
  }

  /** The Pods behind the Service, as its EndpointSlices list them: only ready, not terminating ones. */
  async endpoints(): Promise<Array<{ name: string; ip: string }>> {
    const api = this.cluster.kubeConfig().makeApiClient(DiscoveryV1Api);
    const slices = await api.listNamespacedEndpointSlice({ namespace: NS, labelSelector: `kubernetes.io/service-name=${APP}` });
    return slices.items.flatMap((s) =>
      (s.endpoints ?? []).filter((e) => e.conditions?.ready === true && e.conditions?.terminating !== true).map((e) => ({ name: e.targetRef?.name ?? '?', ip: e.addresses[0]! })),
    );
  }

  async podUrl(pod: { name: string; ip: string }): Promise<string> {
    return this.cluster.podUrl({ namespace: NS, ...pod }, 8000);
  }

  /** validate_action as the test caller; `anonymous` sends no token. */
  validate(url: string, target: string, parameters: Record<string, unknown> = {}, opts: { anonymous?: boolean } = {}) {
    return validateAction(url, { host: SERVICE_HOST, token: opts.anonymous ? undefined : this.token, agentId: AGENT, target, parameters });
  }

  /** Pods of the release with their readiness, for messages and waits. */
  async pods(): Promise<Array<{ name: string; ready: boolean; deleting: boolean; ip: string; spec: any; status: any }>> {
    const list = await this.json<{ items: any[] }>(['-n', NS, 'get', 'pods', '-l', `app.kubernetes.io/instance=${RELEASE}`]);
    return list.items.map((p) => ({
      name: p.metadata.name as string,
      ready: (p.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True'),
      deleting: Boolean(p.metadata.deletionTimestamp),
      ip: p.status?.podIP as string,
      spec: p.spec,
      status: p.status,
    }));
  }

  /** What went wrong with the Pods, for failure messages: their states, the namespace's Events, logs. */
  async diagnose(): Promise<string> {
    const parts = [
      (await this.cluster.kubectl(['-n', NS, 'get', 'pods', '-o', 'wide'])).stdout,
      (await this.cluster.kubectl(['-n', NS, 'get', 'events', '--sort-by=.lastTimestamp'])).stdout.split('\n').slice(-25).join('\n'),
      (await this.cluster.kubectl(['-n', NS, 'logs', '-l', `app.kubernetes.io/instance=${RELEASE}`, '--tail=30', '--prefix', '--all-containers'])).stdout,
    ];
    return parts.join('\n');
  }

  /** Waits until the Deployment has `n` ready Pods, none of them terminating, and returns them. */
  async readyPods(n: number, timeoutMs = 300_000) {
    return waitUntil(`${n} ready Pods of ${APP}`, timeoutMs, async () => {
      const pods = (await this.pods()).filter((p) => !p.deleting);
      return pods.length === n && pods.every((p) => p.ready) ? pods : undefined;
    }, { intervalMs: 2000, describe: () => this.diagnose() });
  }
}

/** A client that keeps calling validate_action through the Service's ready endpoints, round robin. */
class SteadyClient {
  ok = 0;
  readonly errors = new Map<string, number>();
  readonly latencies: number[] = [];
  private stopped = false;
  private view: Array<{ name: string; ip: string }> = [];
  private running: Promise<void>[] = [];

  constructor(private readonly ctx: Ctx) {}

  async start(workers = 2): Promise<void> {
    this.view = await this.ctx.endpoints();
    // The view of the endpoints is refreshed every 250 ms, as kube-proxy follows EndpointSlices.
    const watcher = (async () => {
      while (!this.stopped) {
        this.view = await this.ctx.endpoints().catch(() => this.view);
        await delay(250);
      }
    })();
    let next = 0;
    const worker = async (w: number) => {
      for (let i = 0; !this.stopped; i++) {
        const ep = this.view.length ? this.view[next++ % this.view.length]! : undefined;
        if (!ep) {
          this.count('no ready endpoint');
          await delay(100);
          continue;
        }
        const t0 = performance.now();
        try {
          const d = await this.ctx.validate(await this.ctx.podUrl(ep), 'read_records', { e2e_client: `${w}-${i}` });
          if (d.decision !== 'allow') this.count(`decision ${d.decision}`);
          else {
            this.ok++;
            this.latencies.push(performance.now() - t0);
          }
        } catch (e) {
          this.count(`${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (${ep.name})`);
        }
        await delay(20);
      }
    };
    this.running = [watcher, ...Array.from({ length: workers }, (_, w) => worker(w))];
  }

  private count(kind: string): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  get errorCount(): number {
    return [...this.errors.values()].reduce((a, b) => a + b, 0);
  }

  describe(): string {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const p = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(0) : '-');
    const errs = [...this.errors].map(([k, n]) => `${n}× ${k}`).join(', ');
    return `${this.ok} decisions, ${this.errorCount} errors${errs ? ` (${errs})` : ''}; latency p50 ${p(0.5)} ms, p99 ${p(0.99)} ms`;
  }
}

/** Watches one Pod until it is deleted; resolves with its container's last terminated state. */
async function watchTermination(ctx: Ctx, pod: string): Promise<() => Promise<{ exitCode?: number; reason?: string }>> {
  let terminated: { exitCode?: number; reason?: string } = {};
  let resolveGone!: () => void;
  const gone = new Promise<void>((r) => (resolveGone = r));
  const req = await new Watch(ctx.cluster.kubeConfig()).watch(`/api/v1/namespaces/${NS}/pods`, { fieldSelector: `metadata.name=${pod}` }, (type, obj: any) => {
    const t = obj?.status?.containerStatuses?.[0]?.state?.terminated ?? obj?.status?.containerStatuses?.[0]?.lastState?.terminated;
    if (t) terminated = { exitCode: t.exitCode, reason: t.reason };
    if (type === 'DELETED') resolveGone();
  }, () => resolveGone());
  return async () => {
    await Promise.race([gone, delay(120_000)]);
    req.abort();
    return terminated;
  };
}

/** Audit records of one replica's ConfigMap ring, parsed. */
async function ringRecords(ctx: Ctx, replica: string): Promise<any[]> {
  const list = await ctx.json<{ items: any[] }>(['-n', NS, 'get', 'configmaps', '-l', `policyguard.dev/audit=true,policyguard.dev/replica=${replica}`]);
  return list.items.flatMap((cm) => String(cm.data?.['records.jsonl'] ?? '').split('\n').filter(Boolean).map((l) => JSON.parse(l)));
}

/**
 * Runs every check against `cluster`, in order (later checks build on earlier ones).
 *
 * @example const checks = new Checks(); await runChecks(cluster, checks); console.log(checks.summary());
 */
export async function runChecks(cluster: E2ECluster, checks: Checks): Promise<void> {
  const ctx = new Ctx(cluster);

  await checks.check('helm install: both Pods Ready under the "restricted" Pod Security level, root filesystem read-only, non-root', async () => {
    await ctx.kubectl(['create', 'namespace', NS]);
    await ctx.kubectl(['label', 'namespace', NS, 'pod-security.kubernetes.io/enforce=restricted', 'pod-security.kubernetes.io/warn=restricted']);
    const installed = await ctx.helm(['install', RELEASE, CHART_DIR, '--namespace', NS, ...ctx.imageArgs(), '--wait', '--timeout', '5m']);
    if (installed.code !== 0) throw new Error(`helm install failed: ${installed.stderr}\n${await ctx.diagnose()}`);
    const pods = await ctx.readyPods(2);
    for (const p of pods) {
      const c = p.spec.containers[0];
      if (c.image !== `${cluster.image.repository}:${cluster.image.tag}`) throw new Error(`${p.name} runs ${c.image}, not the image built here`);
      if (c.securityContext?.readOnlyRootFilesystem !== true) throw new Error(`${p.name}: root filesystem not read-only`);
    }
    // What the process itself sees: its user, and that it cannot write outside its mounts.
    const probe = `const fs=require('fs');let w;try{fs.writeFileSync('/app/e2e-probe','x');w='writable'}catch(e){w=e.code}` +
      `process.stdout.write(JSON.stringify({uid:process.getuid(),gid:process.getgid(),root:w,tmp:(fs.writeFileSync('/tmp/p','x'),'writable')}))`;
    const seen = JSON.parse(await ctx.kubectl(['-n', NS, 'exec', pods[0]!.name, '--', 'node', '-e', probe])) as Record<string, unknown>;
    if (seen.uid !== 1000 || seen.root !== 'EROFS' || seen.tmp !== 'writable') throw new Error(`inside ${pods[0]!.name}: ${JSON.stringify(seen)} (expected uid 1000, /app EROFS, /tmp writable)`);
    return `${pods.map((p) => p.name).join(', ')}; inside: ${JSON.stringify(seen)}`;
  });

  if (cluster.closedPodRoutes) {
    const expected = cluster.closedPodRoutes;
    await checks.check(`the Pod network is closed: a Pod's only routes are ${expected.join(' and ')}, no default route`, async () => {
      const [pod] = await ctx.readyPods(2);
      // /proc/net/route: destination and mask in little-endian hex; no address is dialled to check.
      const ip = (hex: string) => Buffer.from(hex, 'hex').reverse().join('.');
      const bits = (hex: string) => [...Buffer.from(hex, 'hex')].reduce((n, b) => n + b.toString(2).replaceAll('0', '').length, 0);
      const routes = (await ctx.kubectl(['-n', NS, 'exec', pod!.name, '--', 'cat', '/proc/net/route'])).trim().split('\n').slice(1)
        .map((l) => l.trim().split(/\s+/)).map((f) => `${ip(f[1]!)}/${bits(f[7]!)}`);
      if ([...routes].sort().join() !== [...expected].sort().join()) throw new Error(`${pod!.name} has the routes ${routes.join(', ')}; expected exactly ${expected.join(', ')}`);
      return `${pod!.name}: ${routes.join(', ')}`;
    });
  }

  await checks.check('samples applied: every GuardPolicy and GuardAgent Ready (status written by the Pods)', async () => {
    await ctx.kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'config-samples')]);
    // Under --auth kubernetes a caller acts only as agents that name its ServiceAccount.
    await ctx.kubectl(['-n', NS, 'create', 'serviceaccount', CALLER_SA]);
    await ctx.kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify({
      apiVersion: 'policyguard.dev/v1alpha1', kind: 'GuardAgent', metadata: { name: AGENT, namespace: NS },
      spec: { trustLevel: 'low', identities: [{ serviceAccount: { namespace: NS, name: CALLER_SA } }] },
    }));
    for (const kind of ['guardpolicies', 'guardagents']) await ctx.kubectl(['-n', NS, 'wait', '--for=condition=Ready', kind, '--all', '--timeout=120s']);
    return (await ctx.kubectl(['-n', NS, 'get', 'guardpolicies,guardagents', '-o', 'name'])).trim().split('\n').join(', ');
  });

  await checks.check('validate_action with a ServiceAccount token reaches each Pod behind the Service and is decided; no token: 401', async () => {
    ctx.token = (await ctx.kubectl(['-n', NS, 'create', 'token', CALLER_SA, '--audience', 'policyguard'])).trim();
    const eps = await waitUntil('2 ready endpoints of the Service', 60_000, async () => {
      const e = await ctx.endpoints();
      return e.length === 2 ? e : undefined;
    });
    const seen: string[] = [];
    for (const ep of eps) {
      const url = await ctx.podUrl(ep);
      const allowed = await ctx.validate(url, 'read_records');
      if (allowed.decision !== 'allow') throw new Error(`${ep.name}: read_records was ${allowed.decision}: ${JSON.stringify(allowed)}`);
      const denied = await ctx.validate(url, 'delete_records');
      if (denied.decision !== 'deny' || !JSON.stringify(denied).includes(SAMPLE_DENY_REASON)) throw new Error(`${ep.name}: delete_records: ${JSON.stringify(denied)}`);
      const anonymous = await ctx.validate(url, 'read_records', {}, { anonymous: true }).then((d) => `decided ${d.decision}`, (e: NodeJS.ErrnoException) => String(e.code));
      if (anonymous !== 'HTTP_401') throw new Error(`${ep.name}: without a token: ${anonymous}, expected HTTP 401`);
      seen.push(`${ep.name} (${ep.ip}): allow, deny, 401`);
    }
    return seen.join('; ');
  });

  await checks.check('the deny is a PolicyViolation Event', async () => {
    const events = await waitUntil('a PolicyViolation Event', 60_000, async () => {
      const out = (await ctx.kubectl(['-n', NS, 'get', 'events.events.k8s.io', '--field-selector', 'reason=PolicyViolation', '-o', 'name'])).trim();
      return out || undefined;
    });
    return events.split('\n')[0];
  });

  await checks.check('one Pod holds the Lease policyguard-leader', async () => {
    const pods = (await ctx.pods()).map((p) => p.name);
    const holder = (await ctx.kubectl(['-n', NS, 'get', 'lease', 'policyguard-leader', '-o', 'jsonpath={.spec.holderIdentity}'])).trim();
    if (!pods.includes(holder)) throw new Error(`the Lease is held by "${holder}", not one of ${pods.join(', ')}`);
    return holder;
  });

  await checks.check('rolling restart: both replicas replaced while a client keeps calling, with no failed call', async () => {
    const before = (await ctx.readyPods(2)).map((p) => p.name);
    const client = new SteadyClient(ctx);
    await client.start();
    await delay(3000);
    await ctx.kubectl(['-n', NS, 'rollout', 'restart', `deployment/${APP}`]);
    await ctx.kubectl(['-n', NS, 'rollout', 'status', `deployment/${APP}`, '--timeout=5m']);
    const after = await ctx.readyPods(2);
    await delay(3000);
    await client.stop();
    note(`  steady client: ${client.describe()}`);
    if (after.some((p) => before.includes(p.name))) throw new Error(`not every Pod was replaced: before ${before.join(', ')}, after ${after.map((p) => p.name).join(', ')}`);
    if (client.ok === 0 || client.errorCount > 0) throw new Error(`the client saw failures during the rollout: ${client.describe()}`);
    return client.describe();
  });

  await checks.check('SIGTERM: the Pod drains, answers what it accepted, exits 0, and every decision it gave is in its audit log', async () => {
    const [victim] = await ctx.readyPods(2);
    const url = await ctx.podUrl(victim!);
    const acknowledged = new Set<string>();
    const outcomes = new Map<string, number>();
    let closed = false;
    const hammer = async (w: number) => {
      for (let i = 0; !closed; i++) {
        const seq = `sigterm-${w}-${i}`;
        try {
          const d = await ctx.validate(url, 'read_records', { e2e_seq: seq });
          if (d.decision === 'allow') acknowledged.add(seq);
          else outcomes.set(`decision ${d.decision}`, (outcomes.get(`decision ${d.decision}`) ?? 0) + 1);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code ?? 'error';
          outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
          // Refused or unreachable: the Pod stopped listening (or is gone). Other errors are failures.
          if (['ECONNREFUSED', 'EHOSTUNREACH', 'ECONNRESET', 'ETIMEDOUT'].includes(code)) closed = true;
        }
        // Four loops at most 100 calls/s each: busy, but under the chart's rateLimit (1000/1s per
        // caller), whose 429s would otherwise count as failures here.
        await delay(10);
      }
    };
    const terminated = await watchTermination(ctx, victim!.name);
    const workers = [0, 1, 2, 3].map(hammer);
    await delay(2000);
    const t0 = Date.now();
    await ctx.kubectl(['-n', NS, 'delete', 'pod', victim!.name, '--wait=false']);
    const end = await terminated();
    closed = true;
    await Promise.all(workers);
    const summary = `${acknowledged.size} decisions acknowledged; other outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}; exit ${end.exitCode} (${end.reason}) ${((Date.now() - t0) / 1000).toFixed(1)}s after the delete`;
    note(`  ${summary}`);
    if (end.exitCode !== 0) throw new Error(`the container did not exit 0 on SIGTERM: ${summary}`);
    const failures = [...outcomes].filter(([k]) => !['ECONNREFUSED', 'EHOSTUNREACH', 'ECONNRESET', 'ETIMEDOUT'].includes(k));
    if (failures.length) throw new Error(`calls failed while the Pod shut down (not refused, answered wrongly): ${summary}`);
    const recorded = new Set((await ringRecords(ctx, victim!.name)).map((r) => r.action?.parameters?.e2e_seq).filter(Boolean));
    const missing = [...acknowledged].filter((s) => !recorded.has(s));
    if (missing.length) throw new Error(`${missing.length} of ${acknowledged.size} acknowledged decisions are not in ${victim!.name}'s audit ring (e.g. ${missing.slice(0, 3).join(', ')})`);
    // And the ring verifies with the chart's key, as docs/deploy.md tells users to check it.
    const key = Buffer.from(await ctx.kubectl(['-n', NS, 'get', 'secret', `${APP}-audit-key`, '-o', 'jsonpath={.data.audit\\.key}']), 'base64').toString();
    const keyFile = join(cluster.workDir, 'audit.key');
    writeFileSync(keyFile, key, { mode: 0o600 });
    const verified = await run(join(REPO_ROOT, 'node_modules', '.bin', 'tsx'), [join(REPO_ROOT, 'src', 'cli', 'main.ts'), 'audit', 'verify', '--configmap', '--namespace', NS, '--replica', victim!.name, '--key-file', keyFile, '--kubeconfig', cluster.kubeconfigPath], { allowFailure: true });
    if (verified.code !== 0) throw new Error(`audit verify of ${victim!.name}'s ring failed: ${verified.stdout}${verified.stderr}`);
    return `${summary}; all in the ring; ${verified.stdout.trim()}`;
  });

  await checks.check('file audit sink on a local PersistentVolume: the log of a deleted Pod is still there and verifies', async () => {
    const path = await cluster.makeNodeDir('audit');
    await ctx.kubectl(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'List', items: [
        { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: LOCAL_STORAGE_CLASS }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' },
        {
          apiVersion: 'v1', kind: 'PersistentVolume', metadata: { name: 'policyguard-e2e-audit' },
          spec: {
            capacity: { storage: '1Gi' }, accessModes: ['ReadWriteMany'], persistentVolumeReclaimPolicy: 'Retain', storageClassName: LOCAL_STORAGE_CLASS,
            local: { path }, nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [cluster.nodeName] }] }] } },
          },
        },
      ],
    }));
    const upgraded = await ctx.helm(['upgrade', RELEASE, CHART_DIR, '--namespace', NS, ...ctx.imageArgs(), '--set', 'audit.sink=file',
      '--set', `audit.persistence.storageClassName=${LOCAL_STORAGE_CLASS}`, '--set', 'audit.persistence.accessModes={ReadWriteMany}', '--wait', '--timeout', '5m']);
    if (upgraded.code !== 0) throw new Error(`helm upgrade to the file sink failed: ${upgraded.stderr}\n${await ctx.diagnose()}`);
    await ctx.kubectl(['-n', NS, 'rollout', 'status', `deployment/${APP}`, '--timeout=5m']);
    const [first] = await ctx.readyPods(2);
    const url = await ctx.podUrl(first!);
    const seqs: string[] = [];
    for (let i = 0; i < 5; i++) {
      const seq = `file-${i}`;
      if ((await ctx.validate(url, 'read_records', { e2e_seq: seq })).decision === 'allow') seqs.push(seq);
    }
    await ctx.kubectl(['-n', NS, 'delete', 'pod', first!.name, '--wait=true', '--timeout=120s']);
    const now = await ctx.readyPods(2);
    const other = now.find((p) => p.name !== first!.name)!;
    const dir = `/var/lib/policyguard/${first!.name}/audit`;
    const verify = await cluster.kubectl(['-n', NS, 'exec', other.name, '--', 'node', '/app/dist/policyguard.js', 'audit', 'verify', dir,
      '--key-file', '/etc/policyguard/audit-key/audit.key', '--namespace', NS, '--replica', first!.name]);
    if (verify.code !== 0) throw new Error(`audit verify ${dir} in ${other.name} failed (exit ${verify.code}): ${verify.stdout}${verify.stderr}`);
    const log = await ctx.kubectl(['-n', NS, 'exec', other.name, '--', 'sh', '-c', `cat ${dir}/*.jsonl`]);
    const missing = seqs.filter((s) => !log.includes(`"e2e_seq":"${s}"`));
    if (seqs.length !== 5 || missing.length) throw new Error(`decisions missing from ${dir}: ${missing.join(', ')} (of ${seqs.join(', ')})`);
    return `${first!.name}'s log, read in ${other.name}: ${verify.stdout.trim()}`;
  });
}
