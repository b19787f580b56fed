/**
 * What an operator sees of a running server (docs/observability.md), over real HTTP on
 * loopback: latency histograms, process metrics and the new gauges at /metrics; JSON log lines
 * that carry the request's trace id and its decision's action id; and, with --otel-endpoint,
 * OpenTelemetry spans delivered to an OTLP/HTTP receiver this test runs, parented on the
 * caller's `traceparent`, with the gateway passing the trace on to its upstream.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { eventually } from './eventually.js';
import { SAMPLES } from './harness.js';
import { freePort } from './upstreams.js';
import { attribute, startOtlpReceiver } from '../../src/telemetry/otlp-receiver-fixture.js';

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';
const TRACEPARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;
const ABORTED_TRACE = '5cf92f3577b34da6a3ce929d0e0e4737';

const validate = (target: string, id = 1) =>
  JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: 'support-bot' } } });
const upstreamCall = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'get_file', arguments: { path: 'README.md' } } });

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A real MCP-speaking upstream on loopback: answers every tools/call, and keeps the headers it got. */
async function startUpstream(): Promise<{ url: string; seen: IncomingHttpHeaders[]; server: Server }> {
  const seen: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push(req.headers);
      const { id } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id: number };
      const text = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'done' }], isError: false } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
  });
  return { url: `${await listen(server)}/mcp`, seen, server };
}

/** The value of one sample line of the Prometheus text (`name{labels} value`). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

let root: string;
let upstream: Awaited<ReturnType<typeof startUpstream>>;

/** config-samples plus a GuardUpstream in front of the recording upstream, and one nobody listens on. */
async function configDir(name: string): Promise<string> {
  const dir = join(root, name);
  await cp(SAMPLES, dir, { recursive: true });
  const down = `http://127.0.0.1:${await freePort()}/mcp`;
  await writeFile(
    join(dir, 'upstream.yaml'),
    `apiVersion: policyguard.dev/v1alpha1\nkind: GuardUpstream\nmetadata: {name: files}\nspec: {url: ${upstream.url}}\n---\n` +
      `apiVersion: policyguard.dev/v1alpha1\nkind: GuardUpstream\nmetadata: {name: down}\nspec: {url: ${down}}\n`,
  );
  return dir;
}

async function start(name: string, flags: string[], lines?: string[]): Promise<RunningPolicyGuard> {
  const config = parseServeConfig(['--standalone', '--config-dir', await configDir(name), '--data-dir', join(root, `${name}-data`), '--port', '0', ...flags], {});
  return startServer(config, createLogger('debug', (l) => lines?.push(l), 'json'));
}

const post = (url: string, body: string, headers: Record<string, string> = {}) => fetch(url, { method: 'POST', headers: { ...HEADERS, ...headers }, body });

/** POST /mcp announcing a longer body than it sends, then hang up: a caller that went away mid-body. */
async function hangUpMidBody(url: string, traceparent: string): Promise<void> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  // Node answers `100 Continue` as it hands the request to the app, whose handlers then run up
  // to the body reader without waiting for I/O: after it, the body is being read.
  socket.write(`POST /mcp HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\ntraceparent: ${traceparent}\r\n\r\n`);
  const [interim] = (await once(socket, 'data')) as [Buffer];
  expect(interim.toString()).toMatch(/^HTTP\/1\.1 100 Continue/);
  socket.write('{"jsonrpc":');
  socket.destroy();
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-observability-'));
  upstream = await startUpstream();
});

afterAll(async () => {
  upstream.server.close();
  await rm(root, { recursive: true, force: true });
});

describe('/metrics', () => {
  let pg: RunningPolicyGuard;
  beforeAll(async () => {
    pg = await start('metrics', []);
  });
  afterAll(() => pg.close());

  it('has decision, engine, HTTP and audit latency histograms, process metrics and the readiness gauge', async () => {
    const res = await post(`${pg.url}/mcp`, validate('read_customer'));
    expect(res.status).toBe(200);
    await res.text();
    await post(`${pg.url}/mcp`, validate('read_customer'), { 'content-type': 'text/plain' }).then((r) => r.text()); // refused by the SDK: 415
    // The HTTP histogram is observed when the response is done; the audit write when the batch is.
    const text = await eventually(
      async () => (await fetch(`${pg.url}/metrics`)).text(),
      (t) => sample(t, 'policyguard_http_request_duration_seconds_count{route="/mcp",method="POST",status="200"}') === 1 && sample(t, 'policyguard_audit_write_duration_seconds_count') >= 1,
      'the request and the audit batch to be observed',
    );
    expect(sample(text, 'policyguard_decision_duration_seconds_count')).toBe(1);
    expect(sample(text, 'policyguard_engine_evaluation_duration_seconds_count')).toBe(1);
    expect(sample(text, 'policyguard_engine_evaluation_duration_seconds_bucket{le="+Inf"}')).toBe(1);
    expect(sample(text, 'policyguard_audit_append_duration_seconds_count')).toBe(1);
    expect(sample(text, 'policyguard_http_request_duration_seconds_count{route="/mcp",method="POST",status="415"}')).toBe(1);
    expect(sample(text, 'policyguard_decisions_total{decision="allow"}')).toBe(1);
    expect(sample(text, 'policyguard_ready')).toBe(1);
    expect(sample(text, 'policyguard_leader')).toBe(1);
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(text, name).toMatch(new RegExp(`^${name} \\d`, 'm'));
    }
    // Counters with no increments yet still say what they are.
    expect(text).toMatch(/^# TYPE policyguard_audit_unavailable_denials_total counter$/m);
    expect(sample(text, 'policyguard_audit_unavailable_denials_total')).toBe(0);
  });

  it('a second server in the same process has its own registry', async () => {
    const other = await start('metrics-2', []);
    try {
      const text = await (await fetch(`${other.url}/metrics`)).text();
      expect(sample(text, 'policyguard_decision_duration_seconds_count')).toBe(0);
      expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
    } finally {
      await other.close();
    }
  });
});

describe('logs', () => {
  const lines: string[] = [];
  let pg: RunningPolicyGuard;
  beforeAll(async () => {
    pg = await start('logs', [], lines);
  });
  afterAll(() => pg.close());

  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

  it('are JSON lines, and the line about a request carries the trace id of its traceparent and its decision action_id', async () => {
    const res = await post(`${pg.url}/mcp`, validate('read_customer', 41), { traceparent: TRACEPARENT });
    const actionId = ((await res.json()) as any).result.structuredContent.action_id as string;
    expect(actionId).toMatch(/^act_[0-9a-f]{12}$/);
    const line = await eventually(async () => parsed().find((l) => l.msg === 'HTTP request' && l.route === '/mcp'), (l) => l !== undefined, 'the request to be logged');
    expect(Object.keys(line!).slice(0, 3)).toEqual(['time', 'level', 'msg']);
    expect(line).toMatchObject({ level: 'debug', method: 'POST', status: '200', trace_id: CALLER_TRACE, action_id: actionId });
    expect(Date.parse(line!.time as string)).not.toBeNaN();
  });

  it('a request without traceparent gets a trace id of its own, on every line about it, also those written deep in its handling', async () => {
    lines.length = 0;
    // Decided (allowed), then the upstream cannot be reached: the gateway warns, after the body
    // was read, the decision made and a connection tried.
    const res = await post(`${pg.url}/upstreams/default/down/mcp`, upstreamCall, { 'mcp-protocol-version': '2025-11-25' });
    expect(await res.text()).toMatch(/unreachable|could not|failed/i);
    const failed = await eventually(async () => parsed().find((l) => l.msg === 'gateway: upstream call failed'), (l) => l !== undefined, 'the failed call to be logged');
    const request = await eventually(async () => parsed().find((l) => l.msg === 'HTTP request'), (l) => l !== undefined, 'the request to be logged');
    expect(failed).toMatchObject({ level: 'warn', upstream: 'default/down' });
    expect(failed!.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(failed!.trace_id).not.toBe(CALLER_TRACE);
    expect(failed!.action_id).toMatch(/^act_[0-9a-f]{12}$/);
    expect(request).toMatchObject({ trace_id: failed!.trace_id, action_id: failed!.action_id });
    // A request that makes no decision has no action id.
    lines.length = 0;
    await (await fetch(`${pg.url}/healthz`)).text();
    const health = await eventually(async () => parsed().find((l) => l.msg === 'HTTP request'), (l) => l !== undefined, 'the health check to be logged');
    expect(health).toMatchObject({ route: '/healthz', status: '200' });
    expect(health).not.toHaveProperty('action_id');
  });

  it('work a request only sets off logs without its ids: the auto-registration of an unknown agent, and the snapshot that follows', async () => {
    lines.length = 0;
    const res = await post(`${pg.url}/mcp`, JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target: 'read_customer', agent_id: 'brand-new-bot' } } }), { traceparent: TRACEPARENT });
    expect(res.status).toBe(200);
    const compiled = await eventually(async () => parsed().find((l) => l.msg === 'policy snapshot compiled'), (l) => l !== undefined, 'the registration to be compiled');
    expect(compiled).not.toHaveProperty('trace_id');
    expect(compiled).not.toHaveProperty('action_id');
  });

  it('the gateway sends the request trace on to the upstream, so the upstream logs the same trace id', async () => {
    lines.length = 0;
    upstream.seen.length = 0;
    const res = await post(`${pg.url}/upstreams/default/files/mcp`, upstreamCall, { 'mcp-protocol-version': '2025-11-25' });
    expect(res.status).toBe(200);
    await res.text();
    const line = await eventually(async () => parsed().find((l) => l.msg === 'HTTP request'), (l) => l !== undefined, 'the request to be logged');
    expect(line!.route).toBe('/upstreams/:namespace/:name/mcp');
    const sent = upstream.seen.at(-1)!.traceparent as string;
    expect(sent).toMatch(new RegExp(`^00-${line!.trace_id as string}-[0-9a-f]{16}-00$`));
    // A caller's own traceparent is passed on as it came when tracing is off.
    await (await post(`${pg.url}/upstreams/default/files/mcp`, upstreamCall, { 'mcp-protocol-version': '2025-11-25', traceparent: TRACEPARENT })).text();
    expect(upstream.seen.at(-1)!.traceparent).toBe(TRACEPARENT);
  });
});

describe('tracing with --otel-endpoint', () => {
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let actionId: string;
  const lines: string[] = [];
  let metricsAfterHangUp: string;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    const pg = await start('otel', ['--otel-endpoint', receiver.url, '--replica-id', 'replica-a'], lines);
    try {
      const res = await post(`${pg.url}/mcp`, validate('delete_records', 3), { traceparent: TRACEPARENT });
      actionId = ((await res.json()) as any).result.structuredContent.action_id;
      await (await post(`${pg.url}/upstreams/default/files/mcp`, upstreamCall, { 'mcp-protocol-version': '2025-11-25', traceparent: TRACEPARENT })).text();
      await hangUpMidBody(pg.url, `00-${ABORTED_TRACE}-${CALLER_SPAN}-01`);
      metricsAfterHangUp = await eventually(
        async () => (await fetch(`${pg.url}/metrics`)).text(),
        (t) => sample(t, 'policyguard_http_request_duration_seconds_count{route="/mcp",method="POST",status="aborted"}') === 1,
        'the cut-off request to be observed',
      );
    } finally {
      await pg.close(); // flushes the spans
    }
  });
  afterAll(() => receiver.server.close());

  it('exports OTLP/HTTP JSON to <endpoint>/v1/traces, as service policyguard', () => {
    expect(receiver.paths[0]).toBe('POST /v1/traces application/json');
    expect(JSON.stringify(receiver.resources[0])).toContain('"key":"service.name","value":{"stringValue":"policyguard"}');
    expect(JSON.stringify(receiver.resources[0])).toContain('"key":"service.instance.id","value":{"stringValue":"replica-a"}');
  });

  it('the request span continues the caller trace, and the decision span is its child with the decision and action id', () => {
    const request = receiver.spans.find((s) => s.name === 'POST /mcp');
    expect(request, JSON.stringify(receiver.spans.map((s) => s.name))).toBeDefined();
    expect(request!.traceId).toBe(CALLER_TRACE);
    expect(request!.parentSpanId).toBe(CALLER_SPAN);
    expect(request!.kind).toBe(2); // SERVER
    expect(attribute(request!, 'http.response.status_code')).toBe(200);
    expect(attribute(request!, 'policyguard.action_id')).toBe(actionId);
    const decide = receiver.spans.find((s) => s.name === 'policyguard.decide' && attribute(s, 'policyguard.action_id') === actionId);
    expect(decide).toBeDefined();
    expect(decide!.traceId).toBe(CALLER_TRACE);
    expect(decide!.parentSpanId).toBe(request!.spanId);
    expect(attribute(decide!, 'policyguard.decision')).toBe('deny');
  });

  it('a caller that hangs up mid-body: a failed span without a status code, counted, logged at debug and not as an error', () => {
    const request = receiver.spans.find((s) => s.traceId === ABORTED_TRACE);
    expect(request, JSON.stringify(receiver.spans.map((s) => s.name))).toBeDefined();
    expect(request!.name).toBe('POST /mcp');
    expect(attribute(request!, 'http.response.status_code')).toBeUndefined();
    expect((request as unknown as { status: { code: number; message: string } }).status).toMatchObject({ code: 2, message: 'response not completed' });
    expect(sample(metricsAfterHangUp, 'policyguard_http_rejected_total{reason="aborted"}')).toBe(1);
    const about = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.trace_id === ABORTED_TRACE);
    expect(about.map((l) => l.level)).not.toContain('error');
    expect(about.map((l) => l.msg)).toContain('request body cut off: the caller went away');
  });

  it('the gateway calls the upstream in a CLIENT span inside its request span, and the upstream is that span\'s child', () => {
    const request = receiver.spans.find((s) => s.name === 'POST /upstreams/:namespace/:name/mcp');
    const client = receiver.spans.find((s) => s.kind === 3 && s.parentSpanId === request?.spanId);
    expect(client?.name).toBe('POST upstream');
    expect(upstream.seen.at(-1)!.traceparent).toBe(`00-${CALLER_TRACE}-${client!.spanId}-01`);
  });
});

describe('tracing off (no --otel-endpoint)', () => {
  /**
   * Starts a server in a fresh Node process that records which OpenTelemetry packages get
   * loaded, serves one request, stops, and prints them.
   */
  async function packagesLoaded(flags: string[]): Promise<string[]> {
    const src = (path: string) => JSON.stringify(fileURLToPath(new URL(`../../src/${path}`, import.meta.url)));
    const script = join(root, `otel-probe-${flags.length}.mjs`);
    await writeFile(
      script,
      `import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); const m = /node_modules\\/(@opentelemetry\\/[^/]+)/.exec(r.url); if (m) seen.add(m[1]); return r; } });
const { startServer } = await import(${src('cli/serve.ts')});
const { parseServeConfig } = await import(${src('config.ts')});
const { silentLogger } = await import(${src('log.ts')});
const pg = await startServer(parseServeConfig(['--standalone', '--config-dir', ${JSON.stringify(SAMPLES)}, '--data-dir', ${JSON.stringify(join(root, `probe-${flags.length}`))}, '--port', '0', ...${JSON.stringify(flags)}], {}), silentLogger);
await (await fetch(pg.url + '/healthz')).text();
await pg.close();
process.stdout.write(JSON.stringify([...seen].sort()));
`,
    );
    return new Promise((resolve, reject) =>
      execFile(process.execPath, ['--import', 'tsx', script], { cwd: fileURLToPath(new URL('../..', import.meta.url)) }, (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(JSON.parse(stdout) as string[]))),
    );
  }

  it('loads none of the tracing SDK or exporter (the API facade is prom-client\'s), and with the flag it does', async () => {
    const off = await packagesLoaded([]);
    expect(off.filter((p) => p !== '@opentelemetry/api')).toEqual([]);
    const receiver = await startOtlpReceiver();
    try {
      expect(await packagesLoaded(['--otel-endpoint', receiver.url])).toEqual(expect.arrayContaining(['@opentelemetry/sdk-trace', '@opentelemetry/exporter-trace-otlp-http']));
    } finally {
      receiver.server.close();
    }
  });
});
