/**
 * The gateway's cost: `tools/call` through /upstreams/<ns>/<name>/mcp against the same calls
 * straight to the same upstream, in the same run (50 connections, 3 s warm-up, 10 s measured,
 * load generator and upstream each in their own process), for two upstreams
 * (tests/bench/upstream.ts): `raw`, a canned answer (the gateway's whole cost shows: edge,
 * decision, a decision and an outcome audit record, the forwarding hop), and `sdk`, a real MCP
 * server (what the gateway usually fronts). Targets: added p50 ≤ 1 ms, throughput ≥ 0.5× direct.
 * On a 2-core machine the gateway run has one process more competing for the cores than the
 * direct run (load generator, gateway, upstream): the ratio measures that too.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { loadInChild, type LoadResult } from './load.js';
import { atLeast, atMost, printFigure } from './report.js';

const CONNECTIONS = 50;
const WARMUP_SEC = 3;
const DURATION_SEC = 10;
const SEQUENTIAL_SEC = 5;
const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' };
const TOOLS = ['create_issue', 'list_issues', 'get_file', 'search_code'];
const BODIES = TOOLS.map((name, i) => JSON.stringify({ jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name, arguments: { repo: 'acme/app', n: i } } }));

async function startUpstream(kind: 'raw' | 'sdk'): Promise<{ url: string; stop(): void }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./upstream.ts', import.meta.url)), kind], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      const m = /port (\d+)/.exec(String(d));
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`bench upstream exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}/mcp`, stop: () => child.kill('SIGTERM') };
}

/**
 * Saturation (50 connections) and one call at a time: with one connection nothing queues, so
 * the time per call (1000 ÷ req/s) is the latency a caller really pays, and gateway minus direct
 * is what the gateway adds to each call.
 */
async function measure(url: string): Promise<{ saturated: LoadResult; msPerCall: number }> {
  const probe = await fetch(url, { method: 'POST', headers: HEADERS, body: BODIES[0] });
  const text = await probe.text();
  if (probe.status !== 200 || !text.includes('"done"')) throw new Error(`probe of ${url} answered ${probe.status}: ${text.slice(0, 300)}`);
  await loadInChild({ url, connections: CONNECTIONS, durationSec: WARMUP_SEC, headers: HEADERS, bodies: BODIES });
  const saturated = await loadInChild({ url, connections: CONNECTIONS, durationSec: DURATION_SEC, headers: HEADERS, bodies: BODIES });
  const sequential = await loadInChild({ url, connections: 1, durationSec: SEQUENTIAL_SEC, headers: HEADERS, bodies: BODIES });
  return { saturated, msPerCall: 1000 / sequential.requestsPerSec };
}

async function countLines(dir: string): Promise<number> {
  let n = 0;
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.jsonl'))) n += (await readFile(join(dir, f), 'utf8')).split('\n').filter(Boolean).length;
  return n;
}

export async function runGatewayBench(): Promise<void> {
  for (const kind of ['raw', 'sdk'] as const) await benchUpstream(kind);
}

async function benchUpstream(kind: 'raw' | 'sdk'): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'pg-bench-gateway-'));
  const upstream = await startUpstream(kind);
  try {
    const configDir = join(root, 'config');
    await mkdir(configDir);
    await writeFile(
      join(configDir, 'upstream.yaml'),
      `apiVersion: policyguard.dev/v1alpha1\nkind: GuardUpstream\nmetadata: {name: tools}\nspec: {url: ${upstream.url}}\n---\n` +
        `apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: gateway}\nspec:\n  rules:\n    - {match: {tools: ["delete_*"]}, action: deny}\n    - {match: {tools: ["create_*"], arguments: [{path: n, operator: GreaterThan, values: ["100"]}]}, action: require_approval}\n`,
    );
    const direct = await measure(upstream.url);
    const dataDir = join(root, 'data');
    const pg = await startServer(parseServeConfig(['--standalone', '--config-dir', configDir, '--data-dir', dataDir, '--port', '0', '--rate-limit', '0'], {}), silentLogger);
    let gateway: Awaited<ReturnType<typeof measure>>;
    try {
      gateway = await measure(`${pg.url}/upstreams/default/tools/mcp`);
    } finally {
      await pg.close();
    }
    const records = await countLines(join(dataDir, 'audit'));
    const bad = (r: LoadResult) => r.non2xx + r.errors + r.timeouts;
    const name = (figure: string) => `gateway.${kind}.${figure}`;
    const [g, d] = [gateway.saturated, direct.saturated];
    printFigure({
      name: name('req_per_s'),
      value: g.requestsPerSec,
      unit: 'req/s',
      baseline: { label: 'direct', value: d.requestsPerSec },
      note: `${atLeast(g.requestsPerSec / d.requestsPerSec, 0.5, 'x direct')}; ${g.completed.toLocaleString('en-US')} responses, ${bad(g)} bad`,
    });
    const added = gateway.msPerCall - direct.msPerCall;
    printFigure({ name: name('ms_per_call'), value: gateway.msPerCall, unit: 'ms', baseline: { label: 'direct', value: direct.msPerCall }, note: `one call at a time; added ${added.toFixed(2)} ms: ${atMost(added, 1, 'ms added')}` });
    printFigure({ name: name('saturated.p50'), value: g.p50, unit: 'ms', baseline: { label: 'direct', value: d.p50 }, note: `50 connections: mostly queueing (p99 ${g.p99} ms vs ${d.p99} ms)` });
    printFigure({ name: name('direct.req_per_s'), value: d.requestsPerSec, unit: 'req/s', note: `the upstream alone; p50 ${d.p50} ms, p99 ${d.p99} ms; ${bad(d)} bad` });
    printFigure({ name: name('audit_records'), value: records, unit: 'rec', note: 'a decision and an outcome record per forwarded call (warm-up, sequential run and probes included)' });
  } finally {
    upstream.stop();
    await rm(root, { recursive: true, force: true });
  }
}
