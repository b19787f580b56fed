/**
 * Latency measured properly: an open-loop run (./open-loop.ts, a Go generator) at fixed offered rates — half
 * of the capacity measured just before (autocannon, 50 connections), and 2,000 req/s — against
 * the server as the image runs it (./image.ts: the bundle in its own process, with the image's
 * environment and the V8 heap of the chart's 512 MiB container; standalone, config-samples, the
 * same ten `validate_action` calls as the MCP bench, one in ten denied) for both MCP revisions, with p50/p99/p99.9 from each request's
 * intended send time. Baseline in the same run: raw node:http answering the same bytes at the
 * same rates in the bench's own process, which shows the floor the machine and the generator give (the generator's own lag
 * is printed too). Target: p99 ≤ 2 ms at 2,000 req/s.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildServer, imageProcess, startStandaloneImageServer, stopImageServer } from './image.js';
import { loadInChild } from './load.js';
import { bodies, HEADERS, probe, rawServer, REVISIONS, type Revision } from './mcp.js';
import { generatorBinary, runOpenLoop, type OpenLoopResult } from './open-loop.js';
import { atMost, printFigure, printInfo } from './report.js';

const SAMPLES = fileURLToPath(new URL('../../config-samples', import.meta.url));
const FIXED_RATE = 2_000;
const P99_TARGET_MS = 2;
const DURATION_SEC = 10;
const WARMUP_SEC = 2;
/** Enough connections that the generator never waits for one below the server's capacity. */
const MAX_SOCKETS = 256;

function openLoop(url: string, revision: Revision, rate: number): Promise<OpenLoopResult> {
  return runOpenLoop({ url, headers: HEADERS[revision], bodies: bodies(revision), rate, durationSec: DURATION_SEC, warmupSec: WARMUP_SEC, maxSockets: MAX_SOCKETS });
}

/** The target holds only over a run where every request was answered with a 2xx: percentiles leave failures out. */
const verdict = (r: OpenLoopResult): string =>
  r.completed === r.scheduled && r.non2xx === 0
    ? atMost(r.p99, P99_TARGET_MS, 'ms')
    : `target not judged: ${r.scheduled - r.completed} of ${r.scheduled} unanswered, ${r.non2xx} non-2xx`;

const describe = (r: OpenLoopResult) =>
  `p99.9 ${r.p999.toFixed(2)} ms, max ${r.max.toFixed(1)} ms; ${r.completed.toLocaleString('en-US')}/${r.scheduled.toLocaleString('en-US')} answered${r.non2xx + r.errors ? `, ${r.non2xx} non-2xx, ${r.errors} errors` : ''}, ${r.connections} connections; generator lag p50/p99 ${r.lagP50.toFixed(2)}/${r.lagP99.toFixed(2)} ms`;

async function benchRevision(root: string, revision: Revision): Promise<void> {
  const configDir = join(root, `latency-${revision}-config`);
  await cp(SAMPLES, configDir, { recursive: true });
  const server = await startStandaloneImageServer(configDir, join(root, `latency-${revision}-data`));
  const url = `${server.base}/mcp`;
  let raw: Server | undefined;
  try {
    raw = rawServer(await probe(url, revision));
    await new Promise<void>((r) => raw!.listen(0, '127.0.0.1', r));
    const rawUrl = `http://127.0.0.1:${(raw.address() as AddressInfo).port}/mcp`;
    await loadInChild({ url, connections: 50, durationSec: 3, headers: HEADERS[revision], bodies: bodies(revision) });
    const capacity = (await loadInChild({ url, connections: 50, durationSec: 5, headers: HEADERS[revision], bodies: bodies(revision) })).requestsPerSec;
    const half = Math.round(capacity / 2 / 100) * 100;
    printInfo(`latency ${revision}: capacity ${Math.round(capacity)} req/s (closed loop, 50 connections): open loop at ${half} and ${FIXED_RATE} req/s`);
    for (const rate of half === FIXED_RATE ? [FIXED_RATE] : [half, FIXED_RATE]) {
      const ours = await openLoop(url, revision, rate);
      const floor = await openLoop(rawUrl, revision, rate);
      const name = (f: string) => `latency.${revision}.${rate === FIXED_RATE ? '2k' : 'half'}.${f}`;
      printFigure({ name: name('p50'), value: ours.p50, unit: 'ms', baseline: { label: 'raw', value: floor.p50 }, note: `open loop, ${rate} req/s offered` });
      printFigure({
        name: name('p99'),
        value: ours.p99,
        unit: 'ms',
        baseline: { label: 'raw', value: floor.p99 },
        note: rate === FIXED_RATE ? verdict(ours) : `half of capacity (${Math.round(capacity)} req/s)`,
      });
      printFigure({ name: name('p99.9'), value: ours.p999, unit: 'ms', baseline: { label: 'raw', value: floor.p999 }, note: `ours: ${describe(ours)}; raw: ${describe(floor)}` });
    }
  } finally {
    raw?.closeAllConnections();
    if (raw) await new Promise((r) => raw!.close(r));
    await stopImageServer(server.child);
  }
}

export async function runLatencyBench(): Promise<void> {
  try {
    printInfo(`latency: load generator ${await generatorBinary((msg) => printInfo(`latency: ${msg}`))}`);
  } catch (err) {
    printInfo(`latency: skipped, ${String((err as Error).message ?? err).split('\n')[0]}`);
    return;
  }
  printInfo(`latency: built in ${(await buildServer()).toFixed(0)} s (npm run build); the server runs ${imageProcess().describe}`);
  const root = await mkdtemp(join(tmpdir(), 'policyguard-bench-latency-'));
  try {
    for (const revision of REVISIONS) await benchRevision(root, revision);
  } finally {
    await rm(root, { recursive: true, force: true, maxRetries: 5 });
  }
}
