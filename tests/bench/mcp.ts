/**
 * MCP over HTTP: `tools/call validate_action` through POST /mcp with autocannon (50
 * connections, 3 s warm-up, 10 s measured, load generator in its own process; 1 call in 10 is
 * denied, which also writes a policy_violation incident), once as 2025-11-25 clients send it and
 * once as 2026-07-28 clients do (`_meta` envelope, `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name`
 * headers), each against baselines measured in the same run:
 *   - ours: the server as the image runs it (./image.ts: the bundle in its own process, with the
 *     image's environment and the heap of the chart's container; standalone mode,
 *     config-samples), also once more with the deny replaced by an allowed call, to show what
 *     the incident write costs;
 *   - raw: node:http in the bench's process answering the same JSON (the ceiling: parse the
 *     body, send the bytes);
 *   - sdk: the MCP SDK's own per-request serving of that revision (src/mcp/revisions.ts without
 *     the fast path: a new McpServer per request, the 2025 stateless transport or the SDK's
 *     `createMcpHandler`) with the same tool over the same kind of store, audit log and
 *     incident log.
 * Afterwards the audit log of "ours" is flushed and its records counted against the decisions
 * the server made: the sink must keep up without dropping any.
 */
import { cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { ANONYMOUS } from '../../src/auth/authenticate.js';
import { openAuthorizer } from '../../src/auth/authorize.js';
import { openFileAuditSink } from '../../src/audit/file-sink.js';
import { openFileIncidentLog } from '../../src/audit/incident-file.js';
import { silentLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { sdkEndpoint } from '../../src/mcp/http.js';
import { classifyMcpRequest, LEGACY_REVISION, MODERN_REVISION } from '../../src/mcp/revisions.js';
import { Tools } from '../../src/mcp/tools.js';
import { StandaloneStore } from '../../src/store/standalone.js';
import { buildServer, imageProcess, startStandaloneImageServer, stopImageServer } from './image.js';
import { loadInChild, type LoadResult } from './load.js';
import { atLeast, printFigure, printInfo } from './report.js';

const CONNECTIONS = 50;
const WARMUP_SEC = 3;
const DURATION_SEC = 10;
const SAMPLES = fileURLToPath(new URL('../../config-samples', import.meta.url));
export type Revision = typeof LEGACY_REVISION | typeof MODERN_REVISION;
export const REVISIONS: Revision[] = [LEGACY_REVISION, MODERN_REVISION];

const BASE_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
/** Headers of a `tools/call validate_action` in each revision (2026-07-28 mirrors the body in them). */
export const HEADERS: Record<Revision, Record<string, string>> = {
  [LEGACY_REVISION]: BASE_HEADERS,
  [MODERN_REVISION]: { ...BASE_HEADERS, 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/call', 'mcp-name': 'validate_action' },
};
/** The 2026-07-28 per-request envelope, as the official clients send it. */
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN_REVISION,
  'io.modelcontextprotocol/clientInfo': { name: 'bench', version: '1.0.0' },
  'io.modelcontextprotocol/clientCapabilities': {},
};

/**
 * What agents ask, against config-samples: mostly allowed reads and queries, small and large
 * refunds (allow / require_approval), an Audit-mode finding, an admin's delete, and one deny in
 * ten (which also records a policy_violation incident).
 */
const CALLS: Array<[agent: string, target: string, parameters: Record<string, unknown>]> = [
  ['support-bot', 'read_customer', { customer_id: 42 }],
  ['data-processor', 'query_sales', { table: 'orders', limit: 100 }],
  ['support-bot', 'issue_refund', { amount: 120, order: 'o-1' }],
  ['support-bot', 'issue_refund', { amount: 900, order: 'o-2' }],
  ['data-processor', 'send_email', { to: 'someone@partner.org', subject: 'report' }],
  ['platform-admin', 'delete_records', { table: 'tmp_events' }],
  ['support-bot', 'get_ticket', { id: 'T-7' }],
  ['data-processor', 'export_report', { format: 'csv' }],
  ['support-bot', 'delete_records', { table: 'users' }],
  ['data-processor', 'read_table', { table: 'events' }],
];

/** The same calls with the deny replaced by an allowed read: isolates what a deny's incident costs. */
const ALLOW_ONLY = CALLS.map((c): (typeof CALLS)[number] => (c[0] === 'support-bot' && c[1] === 'delete_records' ? ['support-bot', 'read_orders', { customer_id: 7 }] : c));

type Mix = 'mixed' | 'allow-only';

export const bodies = (revision: Revision, mix: Mix = 'mixed'): string[] =>
  (mix === 'mixed' ? CALLS : ALLOW_ONLY).map(([agent_id, target, parameters], i) => {
    const params = { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id, parameters } };
    return JSON.stringify({ jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: revision === MODERN_REVISION ? { ...params, _meta: ENVELOPE } : params });
  });

function load(url: string, revision: Revision, durationSec: number, mix: Mix): Promise<LoadResult> {
  return loadInChild({ url, connections: CONNECTIONS, durationSec, headers: HEADERS[revision], bodies: bodies(revision, mix) });
}

/** One request, checked for the right answer in the right revision; resolves with the response text. */
export async function probe(url: string, revision: Revision): Promise<string> {
  const res = await fetch(url, { method: 'POST', headers: HEADERS[revision], body: bodies(revision)[3] });
  const text = await res.text();
  const ok = res.status === 200 && text.includes('require_approval') && text.includes('"resultType":"complete"') === (revision === MODERN_REVISION);
  if (!ok) throw new Error(`probe of ${url} (${revision}) answered ${res.status}: ${text.slice(0, 300)}`);
  return text;
}

interface Measured {
  result: LoadResult;
  warmup: LoadResult;
}

async function measure(url: string, revision: Revision, mix: Mix = 'mixed'): Promise<Measured> {
  await probe(url, revision);
  const warmup = await load(url, revision, WARMUP_SEC, mix);
  const result = await load(url, revision, DURATION_SEC, mix);
  return { warmup, result };
}

/** Sum of a metric's samples in the Prometheus text, optionally only those with a label. */
function metricSum(text: string, name: string, label?: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    if (label && !line.includes(label)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function countAuditRecords(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) {
    if (!f.endsWith('.jsonl')) continue;
    const text = await readFile(join(dir, f), 'utf8');
    for (const line of text.split('\n')) if (line.trim() !== '') n++;
  }
  return n;
}

/**
 * Ours: the server as the image runs it (./image.ts: the bundle in its own process, the image's
 * environment and node flags, the heap of the chart's container), `serve --standalone` with no
 * per-caller rate limit.
 */
async function benchOurs(root: string, revision: Revision) {
  const configDir = join(root, `ours-${revision}-config`);
  const dataDir = join(root, `ours-${revision}-data`);
  await cp(SAMPLES, configDir, { recursive: true });
  const { child: server, base } = await startStandaloneImageServer(configDir, dataDir);
  try {
    const url = `${base}/mcp`;
    const canned = await probe(url, revision);
    const m = await measure(url, revision);
    const allowOnly = (await measure(url, revision, 'allow-only')).result;
    // Let in-flight requests finish, then read what the server did.
    await new Promise((r) => setTimeout(r, 500));
    const metrics = await (await fetch(`${base}/metrics`)).text();
    await stopImageServer(server); // SIGTERM: drains and flushes the audit sink
    const records = await countAuditRecords(join(dataDir, 'audit'));
    return {
      ...m,
      allowOnly,
      canned,
      decisions: metricSum(metrics, 'policyguard_decisions_total'),
      dropped: metricSum(metrics, 'policyguard_audit_dropped_records'),
      fastTaken: metricSum(metrics, 'policyguard_mcp_fast_path_requests_total', 'outcome="taken"'),
      fastWired: metrics.includes('policyguard_mcp_fast_path_requests_total'),
      records,
    };
  } finally {
    await stopImageServer(server);
  }
}

/** The ceiling: node:http reading and parsing the same request, answering the same bytes. */
export function rawServer(canned: string): Server {
  const bytes = Buffer.from(canned);
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length }).end(bytes);
    });
  });
}

function benchRaw(canned: string, revision: Revision) {
  return measureServer(rawServer(canned), revision);
}

/** Listen on a free loopback port, measure /mcp there, then close; `cleanup` runs after. */
async function measureServer(server: Server, revision: Revision, cleanup: () => Promise<unknown> = async () => undefined) {
  if (!server.listening) await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  try {
    return await measure(url, revision);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await cleanup();
  }
}

/** The SDK's own per-request serving (no fast path) with the same tool, store, audit and incident log. */
async function benchSdk(root: string, revision: Revision) {
  const dataDir = join(root, `sdk-${revision}-data`);
  const store = await StandaloneStore.open({ configDir: SAMPLES, dataDir, log: silentLogger, engine: { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null } });
  const audit = await openFileAuditSink({ dir: join(dataDir, 'audit'), log: () => {} });
  const incidents = await openFileIncidentLog(join(dataDir, 'incidents.jsonl'), { log: () => {} });
  const metrics = new Metrics();
  const tools = new Tools({ store, authorizer: openAuthorizer(), audit, incidents, metrics, log: silentLogger, options: { autoRegister: true, autoRegisterLimit: 1000, autoRegisterPerCaller: 1, unknownAgents: 'evaluate' } });
  const app = express();
  app.disable('x-powered-by');
  const sdk = sdkEndpoint(tools, metrics, 'none', silentLogger);
  app.post('/mcp', express.json({ limit: '1mb' }), (req, res) => sdk.serve(req, res, req.body, classifyMcpRequest(req, req.body), ANONYMOUS));
  return measureServer(createServer(app), revision, async () => {
    await incidents.list(new Date()); // waits for incident writes still queued
    await audit.close();
    await store.close();
  });
}

function describe(r: LoadResult): string {
  const bad = r.non2xx + r.errors + r.timeouts;
  return `${r.completed.toLocaleString('en-US')} responses${bad ? `, ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts` : ''}`;
}

/** The figures of one revision, named mcp.<revision>.…, each next to its same-run baseline. */
function report(revision: Revision, ours: Awaited<ReturnType<typeof benchOurs>>, raw: Measured, sdk: Measured): void {
  const o = ours.result;
  const name = (figure: string) => `mcp.${revision}.${figure}`;
  // Issue 15's targets, for both revisions: 10,000 req/s and 0.2x raw node:http in the same run.
  printFigure({ name: name('ours.req_per_s'), value: o.requestsPerSec, unit: 'req/s', baseline: { label: 'sdk', value: sdk.result.requestsPerSec }, note: `${atLeast(o.requestsPerSec, 10_000, 'req/s')}; ${atLeast(o.requestsPerSec / sdk.result.requestsPerSec, 2.5, 'x sdk')}; ${describe(o)}` });
  printFigure({ name: name('ours.req_per_s_of_ceiling'), value: o.requestsPerSec, unit: 'req/s', baseline: { label: 'raw', value: raw.result.requestsPerSec }, note: atLeast(o.requestsPerSec / raw.result.requestsPerSec, 0.2, 'x raw') });
  printFigure({ name: name('ours.p50'), value: o.p50, unit: 'ms', baseline: { label: 'sdk', value: sdk.result.p50 } });
  // Closed loop: with 50 requests always in flight this is mostly queueing; `npm run bench -- latency` measures latency.
  printFigure({ name: name('ours.p99'), value: o.p99, unit: 'ms', baseline: { label: 'sdk', value: sdk.result.p99 }, note: '50 connections, closed loop' });
  printFigure({
    name: name('ours.allow_only.req_per_s'),
    value: ours.allowOnly.requestsPerSec,
    unit: 'req/s',
    baseline: { label: 'mixed', value: o.requestsPerSec },
    note: `same calls, the deny replaced by a read (no incident write); p50 ${ours.allowOnly.p50} ms, p99 ${ours.allowOnly.p99} ms; ${describe(ours.allowOnly)}`,
  });
  printFigure({ name: name('raw.req_per_s'), value: raw.result.requestsPerSec, unit: 'req/s', note: `ceiling: node:http, same JSON; p50 ${raw.result.p50} ms, p99 ${raw.result.p99} ms; ${describe(raw.result)}` });
  printFigure({ name: name('sdk.req_per_s'), value: sdk.result.requestsPerSec, unit: 'req/s', baseline: { label: 'raw', value: raw.result.requestsPerSec }, note: `SDK per-request serving; p50 ${sdk.result.p50} ms, p99 ${sdk.result.p99} ms; ${describe(sdk.result)}` });
  printFigure({
    name: name('ours.fast_path_share'),
    value: ours.fastTaken,
    unit: 'req',
    baseline: { label: 'decisions', value: ours.decisions, unit: 'req' },
    note: ours.fastWired ? 'requests answered on the fast path' : 'fast path NOT wired into http.ts: "ours" is the SDK path',
  });
  printFigure({
    name: name('ours.audit_records'),
    value: ours.records,
    unit: 'rec',
    baseline: { label: 'decisions', value: ours.decisions, unit: 'rec' },
    note: `${ours.records === ours.decisions && ours.dropped === 0 ? 'every decision audited' : 'MISMATCH'}; dropped ${ours.dropped}; load generator saw ${(o.completed + ours.warmup.completed + ours.allowOnly.completed).toLocaleString('en-US')} measured responses (+ warm-ups and probes)`,
  });
}

export async function runMcpBench(): Promise<void> {
  try {
    await import('autocannon');
  } catch {
    printInfo('mcp: skipped, autocannon is not installed (a devDependency; for a quick run: npm install --no-save autocannon@8)');
    return;
  }
  printInfo(`mcp: built in ${(await buildServer()).toFixed(0)} s (npm run build); ours runs ${imageProcess().describe}`);
  const root = await mkdtemp(join(tmpdir(), 'policyguard-bench-mcp-'));
  try {
    for (const revision of REVISIONS) {
      // Ours first: it also yields the exact JSON the raw ceiling answers with.
      const ours = await benchOurs(root, revision);
      const raw = await benchRaw(ours.canned, revision);
      const sdk = await benchSdk(root, revision);
      report(revision, ours, raw, sdk);
    }
  } finally {
    await rm(root, { recursive: true, force: true, maxRetries: 5 });
  }
}
