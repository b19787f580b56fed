/**
 * Two operator processes against the same API server: exactly one (the Lease holder) writes
 * status; kill it and the other takes over; both answer decisions throughout.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { cliArgs, startProcess } from '../standalone/cli.js';
import { applyGuard, createNamespace, eventually, getGuard } from './harness.js';

const LEASE_MS = 4000;
interface Replica {
  id: string;
  child: ChildProcess;
  url: string;
}
const replicas: Replica[] = [];
let dataRoot: string;
let ns: string;

async function metric(r: Replica, name: string): Promise<number> {
  const text = await fetch(`${r.url}/metrics`).then((res) => res.text());
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  if (!m) throw new Error(`${name} not in /metrics of ${r.id}`);
  return Number(m[1]);
}

async function decide(r: Replica): Promise<boolean> {
  const res = await fetch(`${r.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target: 'delete_x', agent_id: 'worker' } } }),
  });
  const body = (await res.json()) as any;
  return body.result?.structuredContent?.allowed === false;
}

beforeAll(async () => {
  const kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-leader');
  await applyGuard(kc, 'GuardAgent', ns, 'worker', { trustLevel: 'low' });
  await applyGuard(kc, 'GuardPolicy', ns, 'no-deletes', { rules: [{ match: { tools: ['delete_*'] }, action: 'deny' }] });
  dataRoot = await mkdtemp(join(tmpdir(), 'policyguard-leader-'));
  for (const id of ['replica-a', 'replica-b']) {
    const [cmd, args] = cliArgs([
      'serve', '--kubeconfig', sharedKubeconfigPath(), '--namespace', ns, '--watch-namespaces', ns, '--replica-id', id,
      '--data-dir', join(dataRoot, id), '--port', '0', '--lease-duration', `${LEASE_MS / 1000}s`, '--renew-deadline', '3s', '--retry-period', '500ms',
    ]);
    const { child, match } = await startProcess(cmd, args, /PolicyGuard serving .*url=(\S+)\/mcp/);
    replicas.push({ id, child, url: match[1]! });
  }
});

afterAll(async () => {
  // Wait for each replica to exit: one that is still shutting down writes its last audit records
  // into the data directory while it is being removed.
  await Promise.all(
    replicas.map((r) => new Promise<void>((resolve) => {
      if (r.child.exitCode !== null || r.child.signalCode !== null) return resolve();
      r.child.once('exit', () => resolve());
      r.child.kill('SIGTERM');
    })),
  );
  if (dataRoot) await rm(dataRoot, { recursive: true, force: true });
});

describe('leader election', () => {
  it('exactly one replica leads and writes status; both answer decisions', async () => {
    const leaders = await eventually(async () => Promise.all(replicas.map((r) => metric(r, 'policyguard_leader'))), (l) => l[0]! + l[1]! === 1, 'one leader');
    expect([...leaders].sort()).toEqual([0, 1]);
    await eventually(() => getGuard(sharedKubeConfig(), 'GuardPolicy', ns, 'no-deletes'), (o) => o.status?.conditions?.[0]?.status === 'True', 'status written');
    const writes = await Promise.all(replicas.map((r) => metric(r, 'policyguard_status_writes')));
    const leader = replicas[leaders.indexOf(1)]!;
    for (const [i, r] of replicas.entries()) {
      if (r === leader) expect(writes[i], `${r.id} (leader) writes`).toBeGreaterThan(0);
      else expect(writes[i], `${r.id} (follower) writes nothing`).toBe(0);
    }
    for (const r of replicas) await eventually(() => decide(r), (d) => d, `${r.id} to deny delete_x`);
  });

  it('kill the leader: the other takes over within the lease duration and keeps answering', async () => {
    const flags = await Promise.all(replicas.map((r) => metric(r, 'policyguard_leader')));
    const leader = replicas[flags.indexOf(1)]!;
    const survivor = replicas[flags.indexOf(0)]!;
    leader.child.kill('SIGKILL'); // no graceful Lease release: the survivor must wait for expiry
    const killedAt = Date.now();
    let answered = 0;
    await eventually(
      async () => {
        expect(await decide(survivor)).toBe(true); // decisions never stop
        answered++;
        return metric(survivor, 'policyguard_leader');
      },
      (v) => v === 1,
      'the survivor to take over',
    );
    const tookMs = Date.now() - killedAt;
    process.stderr.write(`[leader] takeover after ${tookMs} ms (lease ${LEASE_MS} ms), ${answered} decisions answered meanwhile\n`);
    // A protocol bound, not a speed target: expiry (one lease) plus one retry period and slack.
    expect(tookMs).toBeLessThan(LEASE_MS * 2);
    expect(answered).toBeGreaterThan(0);
    // The new leader writes status now.
    await applyGuard(sharedKubeConfig(), 'GuardPolicy', ns, 'after-takeover', { rules: [{ action: 'allow' }] });
    await eventually(() => getGuard(sharedKubeConfig(), 'GuardPolicy', ns, 'after-takeover'), (o) => o.status?.conditions?.[0]?.status === 'True', 'status by the new leader');
    expect(await metric(survivor, 'policyguard_status_writes')).toBeGreaterThan(0);
  });
});
