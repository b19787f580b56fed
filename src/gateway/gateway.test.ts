/**
 * The gateway's own refusals, before anything reaches an upstream, how it takes upstreams
 * that misbehave (redirects, answers too large, long GET streams), and what reaches an upstream
 * (the message it decided, byte for byte): served over real HTTP on loopback, with an in-memory
 * store (our own PolicyStore interface) whose readiness the test sets and, for what is
 * forwarded, an in-memory pipeline (our own interface) that records what it decided.
 * Well-behaved upstreams are tests/standalone/gateway.test.ts's subject.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, type GuardUpstream } from '../api/schemas.js';
import { smugglingShapes } from './smuggling-fixture.js';
import { ANONYMOUS } from '../auth/authenticate.js';
import { openAuthorizer } from '../auth/authorize.js';
import type { DecisionInput, DecisionPipeline } from '../decide/pipeline.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { createLogger, silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { attribute, spanWhere, startOtlpReceiver, type OtlpSpan } from '../telemetry/otlp-receiver-fixture.js';
import { requestContext, type RequestContext, type SpanHandle, type Tracer } from '../telemetry/request-context.js';
import { newSpanId, newTraceId, parseTraceparent } from '../telemetry/trace-context.js';
import { startTracing } from '../telemetry/tracing.js';
import { Gateway } from './gateway.js';
import { foldedDuplicate, TASKS_REFUSED } from './message.js';
import { sessionKey } from './session.js';

let ready = false;
const upstreamAt = (name: string, url: string): GuardUpstream => ({
  apiVersion: API_VERSION,
  kind: 'GuardUpstream',
  metadata: { name, namespace: 'default' },
  spec: { url, headers: [], timeout: '1s', allowedNamespaces: [], keyMatching: 'CaseInsensitive' },
});
/** `default/x` (nobody listens on port 9) and, once started, `default/<path>` of the misbehaving upstream below. */
const upstreams = new Map<string, GuardUpstream>([['default/x', upstreamAt('x', 'http://127.0.0.1:9/mcp')]]);
const store = {
  notReady: () => (ready ? undefined : 'the first load has not compiled yet'),
  snapshot: () => PolicySnapshot.empty(),
  upstream: (ref: string) => upstreams.get(ref),
} as unknown as PolicyStore;
const unused = () => {
  throw new Error('not reached');
};
const gateway = new Gateway({
  store,
  pipeline: { decide: unused } as never,
  authorizer: openAuthorizer(),
  audit: { append: unused } as never,
  credentials: { headersFor: async () => ({}) },
  sessionKey: sessionKey(undefined),
  metrics: new Metrics(),
  log: silentLogger,
  options: { denyAs: 'tool-error', approvalHoldMs: 0, responseLimitBytes: 1024 },
});

/** What the deciding gateway below decided: a deny for delete_repo and for an amount over 500, else allow. */
const decided: DecisionInput[] = [];
const pipeline = {
  decide: async (input: DecisionInput) => {
    decided.push(input);
    const deny = input.target === 'delete_repo' || Number(input.parameters.amount) > 500;
    const decision = deny ? 'deny' : 'allow';
    return { ok: true, decision: { decision, allowed: !deny, reason: deny ? 'not this one' : 'fine', action_id: `act_${decided.length}`, agent: { id: 'anonymous' } } };
  },
} as unknown as DecisionPipeline;
const warnings: string[] = [];
const deciderMetrics = new Metrics();
const deciding = new Gateway({
  store,
  pipeline,
  authorizer: openAuthorizer(),
  audit: { append: () => ({ ok: true }) } as never,
  credentials: { headersFor: async () => ({}) },
  sessionKey: sessionKey(undefined),
  metrics: deciderMetrics,
  log: createLogger('warn', (line) => warnings.push(line)),
  options: { denyAs: 'tool-error', approvalHoldMs: 0, responseLimitBytes: 1024 },
});

/** An upstream that keeps every body it gets, byte for byte, and answers a call with a result. */
const received: string[] = [];
const recorder = createServer((req, res) => {
  let text = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (text += c));
  req.on('end', () => {
    received.push(text);
    const id = (JSON.parse(text) as { id?: unknown }).id ?? null;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'ran' }] } }));
  });
});

/** An upstream that misbehaves, one way per path. */
const bad = createServer((req, res) => {
  const event = (data: string) => `event: message\ndata: ${data}\n\n`;
  switch (req.url) {
    case '/headers':
      // Answers with the headers it got: what the gateway passes on.
      return void res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { got: { 'content-type': req.headers['content-type'] ?? null, 'mcp-method': req.headers['mcp-method'] ?? null, 'mcp-name': req.headers['mcp-name'] ?? null } } }));
    case '/trace-headers':
      // Answers with the trace headers it got.
      return void res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { got: { traceparent: req.headers.traceparent ?? null, tracestate: req.headers.tracestate ?? null } } }));
    case '/redirect':
      return void res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    case '/huge-json':
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { pad: 'x'.repeat(2048) } }));
    case '/huge-event':
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      return void res.end(event(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { pad: 'x'.repeat(2048) } })));
    case '/foreign-id':
      // Answers request 1 as "1": a loose client would take it as its answer, unfiltered.
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: '1', result: { tools: [{ name: 'delete_repo', inputSchema: { type: 'object' } }] } }));
    case '/batch-answer':
      // An array: clients take a batch, and the list in it would pass unfiltered.
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([{ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'delete_repo', inputSchema: { type: 'object' } }] } }]));
    case '/upper-type':
      // Media types ignore case: a client reads this as JSON.
      return void res.writeHead(200, { 'content-type': 'Application/JSON' }).end(JSON.stringify({ jsonrpc: '2.0', id: '1', result: { tools: [] } }));
    case '/odd-stream':
      // A byte order mark first and LF-CRLF blank lines: both are valid SSE.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      return void res.end(`\ufeffevent: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: '1', result: { tools: [] } })}\n\r\ndata: {}\n\r\n`);
    case '/wide-event':
      // 400 characters, 1,200 bytes: over the 1,024-byte limit in bytes only.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      return void res.end(event(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { pad: '€'.repeat(400) } })));
    case '/slow-stream':
      // A GET stream whose first message comes after the upstream's 1 s timeout.
      res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
      return void setTimeout(() => res.end(event(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'late' } }))), 1500);
  }
  res.writeHead(404).end();
});

/**
 * `gw` on a loopback port: `/<namespace>/<name>` is the upstream, the body is parsed as JSON;
 * with `contextOf`, each request is handled in the context it gives, as the HTTP edge does.
 */
async function serve(gw: Gateway, contextOf?: (req: IncomingMessage, res: ServerResponse) => RequestContext): Promise<{ server: Server; url: string }> {
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const handle = () => void gw.handle(req, res, req.url!.slice(1), ANONYMOUS, chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined);
      if (contextOf) requestContext.run(contextOf(req, res), handle);
      else handle();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { server: srv, url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` };
}

const listening = async (srv: Server) => {
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
};

/**
 * The request contexts of the HTTP edge (src/mcp/http.ts, observeRequests): with tracing off,
 * the trace of a valid caller `traceparent` (and that header) or a new one; with tracing on, a
 * request span, the caller's child when it sent a valid `traceparent`, as OpenTelemetry makes it.
 */
const edge = {
  off(req: IncomingMessage): RequestContext {
    const parent = parseTraceparent(req.headers.traceparent);
    return { trace_id: parent?.traceId ?? newTraceId(), ...(parent ? { traceparent: req.headers.traceparent as string } : {}) };
  },
  on(req: IncomingMessage): RequestContext {
    const parent = parseTraceparent(req.headers.traceparent);
    const span: SpanHandle = { traceId: parent?.traceId ?? newTraceId(), spanId: newSpanId(), sampled: parent?.sampled ?? true, setAttributes() {}, rename() {}, fail() {}, end() {}, child: () => span };
    return { trace_id: span.traceId, span };
  },
  /** With a real tracer (./tracing.ts): the request span ends when the response does, as at the edge. */
  traced: (tracer: Tracer) => (req: IncomingMessage, res: ServerResponse): RequestContext => {
    const span = tracer.startRequest(`${req.method} /upstreams/:namespace/:name/mcp`, parseTraceparent(req.headers.traceparent), { 'http.request.method': req.method! });
    res.once('close', () => span.end());
    return { trace_id: span.traceId, span };
  },
};

let servers: Server[] = [];
let url: string;
let decidingUrl: string;
let tracingOffUrl: string;
let tracingOnUrl: string;
beforeAll(async () => {
  const badUrl = await listening(bad);
  for (const name of ['headers', 'trace-headers', 'redirect', 'huge-json', 'huge-event', 'wide-event', 'foreign-id', 'batch-answer', 'upper-type', 'odd-stream', 'slow-stream']) upstreams.set(`default/${name}`, upstreamAt(name, `${badUrl}/${name}`));
  const recorderUrl = `${await listening(recorder)}/mcp`;
  upstreams.set('default/recorder', upstreamAt('recorder', recorderUrl));
  // The same server declared as one that matches keys exactly (GuardUpstream spec.keyMatching).
  upstreams.set('default/exact', { ...upstreamAt('exact', recorderUrl), spec: { ...upstreamAt('exact', recorderUrl).spec, keyMatching: 'Exact' } });
  const plain = await serve(gateway);
  const decider = await serve(deciding);
  const tracingOff = await serve(gateway, edge.off);
  const tracingOn = await serve(gateway, edge.on);
  servers = [plain.server, decider.server, tracingOff.server, tracingOn.server, bad, recorder];
  url = plain.url;
  decidingUrl = decider.url;
  tracingOffUrl = tracingOff.url;
  tracingOnUrl = tracingOn.url;
});
afterAll(async () => {
  for (const srv of servers) await new Promise((r) => srv.close(r));
});

const post = (ref: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${url}/${ref}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

describe('the gateway refuses before any upstream is called', () => {
  it('503 until the first load has compiled', async () => {
    ready = false;
    const r = await post('default/x', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(r.status).toBe(503);
    expect(((await r.json()) as any).error.message).toBe('PolicyGuard is not ready: the first load has not compiled yet');
    ready = true;
  });
  it('404 for an upstream that is not there (or not usable)', async () => {
    const r = await post('default/nope', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(r.status).toBe(404);
  });
  it.each(['PUT', 'PATCH'])('%s is refused with 405, not passed to the upstream', async (method) => {
    const r = await fetch(`${url}/default/recorder`, { method, headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('GET, POST, DELETE');
    expect(((await r.json()) as any).error.message).toBe(`Method not allowed: ${method} (the MCP endpoint takes GET, POST and DELETE)`);
  });
  it('a batch is refused: one message per request, so nothing is smuggled past the gate', async () => {
    const r = await post('default/x', [{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'rm' } }]);
    expect(r.status).toBe(400);
    expect(((await r.json()) as any).error).toMatchObject({ code: -32600, message: expect.stringMatching(/not a batch/) });
  });
  it('a session id that does not open for this caller and upstream is an unknown session', async () => {
    const r = await post('default/x', { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': 'pgs1.forged.x' });
    expect(r.status).toBe(404);
    expect(((await r.json()) as any).error.message).toBe('Session not found');
  });
  it('a 2026-07-28 call whose Mcp-Name disagrees with its body is refused (-32020)', async () => {
    const r = await post(
      'default/x',
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_everything', arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } } },
      { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'harmless' },
    );
    expect(r.status).toBe(400);
    expect(((await r.json()) as any).error.code).toBe(-32020);
  });
});

describe('upstreams that misbehave: the call fails, saying what happened and nothing of where', () => {
  const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
  it('passes on routing headers only when they say what the body says, and its own Content-Type', async () => {
    const got = async (body: unknown, headers: Record<string, string>) => ((await (await post('default/headers', body, headers)).json()) as any).result.got;
    // Headers that contradict the body are refused before this (the test below); these mirror it.
    const mirroring = { 'content-type': 'application/json; charset=utf-16le', 'mcp-method': 'tools/list' };
    expect(await got({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, mirroring)).toEqual({ 'content-type': 'application/json', 'mcp-method': null, 'mcp-name': null });
    expect(await got({ jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-protocol-version': '2025-11-25', 'mcp-method': 'notifications/initialized' })).toMatchObject({ 'mcp-method': 'notifications/initialized', 'mcp-name': null });
    const modern = { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///a', _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } } };
    expect(await got(modern, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'resources/read', 'mcp-name': 'file:///a' })).toMatchObject({ 'mcp-method': 'resources/read', 'mcp-name': 'file:///a' });
    // A GET or DELETE has no body for them to say.
    for (const method of ['GET', 'DELETE']) {
      const r = await fetch(`${url}/default/headers`, { method, headers: { accept: 'application/json, text/event-stream', 'mcp-method': 'tools/call', 'mcp-name': 'delete_everything' } });
      expect(((await r.json()) as any).result.got).toMatchObject({ 'mcp-method': null, 'mcp-name': null });
    }
  });
  it('a 2025 request whose Mcp-Method or Mcp-Name header contradicts its body is refused (-32020), as on /mcp', async () => {
    for (const [body, headers] of [
      [{ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-method': 'tools/call', 'mcp-name': 'delete_everything' }],
      [{ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'delete_repo', arguments: {} } }, { 'mcp-name': 'read_file' }],
    ] as const) {
      const r = await post('default/headers', body, headers);
      expect(r.status).toBe(400);
      expect(((await r.json()) as any).error.code).toBe(-32020);
    }
  });
  it('an unreachable upstream: 502 naming the kind of failure, not its address', async () => {
    const r = await post('default/x', list);
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error).toEqual({ code: -32603, message: 'upstream default/x failed: the connection was refused' });
  });
  it('a redirect is not followed, and where it pointed is not told', async () => {
    const r = await post('default/redirect', list);
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error.message).toBe('upstream default/redirect failed: it answered HTTP 307, a redirect, which the gateway does not follow');
  });
  it('a JSON answer over --gateway-response-limit is not taken', async () => {
    const r = await post('default/huge-json', list);
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error.message).toBe('upstream default/huge-json failed: its answer is larger than --gateway-response-limit (1024 bytes)');
  });
  it('an event over --gateway-response-limit ends the stream', async () => {
    const r = await post('default/huge-event', list, { accept: 'application/json, text/event-stream' });
    expect(r.headers.get('content-type')).toBe('text/event-stream');
    await expect(r.text()).rejects.toThrow();
  });
  it('an event over --gateway-response-limit in UTF-8 bytes, though not in characters, ends the stream', async () => {
    const r = await post('default/wide-event', list, { accept: 'application/json, text/event-stream' });
    await expect(r.text()).rejects.toThrow();
  });
  it('an answer under another id than the request\'s becomes an error under the request\'s id, in JSON and in any valid SSE', async () => {
    const foreign = { code: -32603, message: 'the upstream answered with id "1", not this request\'s 1; the gateway passes on no answer it cannot match to its request' };
    expect(await (await post('default/foreign-id', list)).json()).toEqual({ jsonrpc: '2.0', id: 1, error: foreign });
    expect(await (await post('default/upper-type', list)).json()).toEqual({ jsonrpc: '2.0', id: 1, error: foreign });
    expect(((await (await post('default/batch-answer', list)).json()) as any).error.message).toBe('the upstream answered request 1 with a batch; the gateway passes on no answer it cannot match to its request');
    const streamed = await (await post('default/odd-stream', list, { accept: 'application/json, text/event-stream' })).text();
    expect(streamed).toBe(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 1, error: foreign })}\n\ndata: {}\n\n`);
  });
  it('a GET stream is not cut at the upstream timeout: it passes messages for as long as it lasts', async () => {
    const r = await fetch(`${url}/default/slow-stream`, { headers: { accept: 'text/event-stream' } });
    expect(r.status).toBe(200);
    expect(await r.text()).toContain('"data":"late"');
  });
});

describe('what reaches an upstream is what was decided (docs/decisions.md, "The gateway")', () => {
  beforeAll(() => {
    ready = true;
  });
  /** POST `text` as it is (keys and escapes as an attacker writes them) to the recorder through the deciding gateway. */
  const send = async (text: string) => {
    const r = await fetch(`${decidingUrl}/default/recorder`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: text });
    return { status: r.status, body: (await r.json()) as any };
  };
  const call = (params: string, id = 1) => `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":${params}}`;

  it('an allowed call reaches the upstream as the message the gateway built: the decided name and arguments, and the _meta sent', async () => {
    received.length = 0;
    const r = await send(call('{"name":"issue_refund","arguments":{"amount":100,"to":"acct-1"},"_meta":{"progressToken":"p1"}}', 41));
    expect(r.body.result.content[0].text).toBe('ran');
    expect(received).toEqual(['{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"issue_refund","arguments":{"amount":100,"to":"acct-1"},"_meta":{"progressToken":"p1"}}}']);
    expect(decided.at(-1)).toMatchObject({ target: 'issue_refund', parameters: { amount: 100, to: 'acct-1' } });
  });

  it('MCP tasks are refused, never passed through: a task-augmented call, and every tasks/* request', async () => {
    received.length = 0;
    const before = decided.length;
    const asTask = await send(call('{"name":"issue_refund","arguments":{"amount":100},"task":{"ttl":60000}}', 46));
    expect(asTask.body.error).toEqual({ code: -32602, message: `Invalid params: ${TASKS_REFUSED}` });
    for (const method of ['tasks/list', 'tasks/get', 'tasks/result', 'tasks/cancel']) {
      const r = await send(`{"jsonrpc":"2.0","id":47,"method":"${method}","params":{"taskId":"t-1"}}`);
      expect(r.body.error).toEqual({ code: -32601, message: `Method not found: ${method}: ${TASKS_REFUSED}` });
    }
    expect(decided.length).toBe(before);
    expect(received).toEqual([]);
  });

  it('an upstream that matches keys exactly (keyMatching: Exact) gets arguments whose keys differ only in case; params\' own keys are still checked', async () => {
    received.length = 0;
    const headers = '{"name":"http_get","arguments":{"headers":{"X-Request-Id":"1","x-request-id":"2"}}}';
    const exact = await fetch(`${decidingUrl}/default/exact`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: call(headers, 43) });
    expect(((await exact.json()) as any).result.content[0].text).toBe('ran');
    expect(received).toEqual([call(headers, 43)]);
    expect((await send(call(headers, 44))).body.error.message).toMatch(/params\.arguments\.headers holds the keys "X-Request-Id" and "x-request-id"/);
    const renamed = await fetch(`${decidingUrl}/default/exact`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: call('{"name":"read_file","NAME":"delete_repo","arguments":{}}', 45) });
    expect(((await renamed.json()) as any).error.message).toMatch(/params holds the key "NAME", which is not "name"/);
  });

  it('the forwarded text is the gateway’s own: members in its order, and the arguments decided ({} when none were sent)', async () => {
    received.length = 0;
    await send('{"params":{"name":"read_file"},"method":"tools/call","id":"a-1","jsonrpc":"2.0"}');
    expect(received).toEqual(['{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"read_file","arguments":{}}}']);
  });

  // The shapes of the finding (./smuggling-fixture.ts).
  it.each(smugglingShapes('issue_refund'))('refused before deciding, naming both keys: $shape', async ({ params, where, keys }) => {
    received.length = 0;
    const before = decided.length;
    const r = await send(call(params, 42));
    expect(r.status).toBe(200);
    expect(r.body.error).toEqual({
      code: -32602,
      message: `Invalid params: ${where} holds the keys ${JSON.stringify(keys[0])} and ${JSON.stringify(keys[1])}, which are equal ignoring case; an upstream that matches keys ignoring case (as Go's encoding/json does) could read either, so the gateway refuses the message`,
    });
    expect(decided.length).toBe(before);
    expect(received).toEqual([]);
  });

  it.each([
    { shape: 'params.NAME alone', params: '{"NAME":"delete_repo","arguments":{}}', text: 'params holds the key "NAME", which is not "name" but equals it ignoring case' },
    { shape: 'params.Arguments alone', params: '{"name":"issue_refund","Arguments":{"amount":900}}', text: 'params holds the key "Arguments", which is not "arguments" but equals it ignoring case' },
    { shape: 'a key the gateway does not decide', params: '{"name":"issue_refund","arguments":{"amount":100},"input":{"amount":900}}', text: 'tools/call params hold only name, arguments and _meta; "input" would reach the upstream undecided' },
  ])('a params key the gateway does not decide is refused, not forwarded: $shape', async ({ params, text }) => {
    received.length = 0;
    const r = await send(call(params));
    expect(r.body.error.code).toBe(-32602);
    expect(r.body.error.message).toContain(text);
    expect(received).toEqual([]);
  });

  it.each([
    { shape: 'method ping, Method tools/call', text: '{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"delete_repo","arguments":{}}}', error: /key "Method", which is not "method"/ },
    { shape: 'a Params beside params', text: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}},"Params":{"name":"delete_repo"}}', error: /key "Params", which is not "params"/ },
    { shape: 'Tools/Call', text: call('{"name":"delete_repo","arguments":{}}').replace('tools/call', 'Tools/Call'), error: /method "Tools\/Call" is not "tools\/call" but equals it ignoring case/ },
    { shape: 'a trailing space', text: call('{"name":"delete_repo","arguments":{}}').replace('tools/call', 'tools/call '), error: /method "tools\/call " has a space, a control or a non-ASCII character/ },
    { shape: 'a zero-width space', text: call('{"name":"delete_repo","arguments":{}}').replace('tools/call', 'tools/\\u200bcall'), error: /has a space, a control or a non-ASCII character/ },
    { shape: 'a tools/call notification', text: '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read_file","arguments":{}}}', error: /a tools\/call is a request and needs an id/ },
  ])('refused, never passed through: $shape', async ({ text, error }) => {
    received.length = 0;
    const before = decided.length;
    const r = await send(text);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: -32600, message: expect.stringMatching(error) });
    expect(decided.length).toBe(before);
    expect(received).toEqual([]);
  });

  it('refusals of ambiguous keys and look-alike methods are counted by outcome and logged at warn', async () => {
    const count = async (method: string, outcome: string) => Number(new RegExp(`policyguard_gateway_requests_total\\{method="${method}",outcome="${outcome}"\\} (\\d+)`).exec(await deciderMetrics.exposition())?.[1] ?? 0);
    const ambiguous = await count('tools/call', 'ambiguous_key');
    const lookalike = await count('any', 'lookalike_method');
    warnings.length = 0;
    await send(call('{"name":"read_file","Name":"delete_repo","arguments":{}}'));
    await send(call('{"name":"delete_repo","arguments":{}}').replace('tools/call', 'TOOLS/CALL'));
    expect(await count('tools/call', 'ambiguous_key')).toBe(ambiguous + 1);
    expect(await count('any', 'lookalike_method')).toBe(lookalike + 1);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/WARN +gateway: refused a message an upstream could read otherwise than the gate upstream=default\/recorder caller=anonymous reason=.*"name\\" and \\"Name\\"/);
  });

  it('nothing the upstream received holds a key in two spellings, or a key the gateway did not build', async () => {
    received.length = 0;
    await send(call('{"name":"read_file","arguments":{"path":"/a","opts":{"depth":1}}}'));
    await send(call('{"name":"read_file","NAME":"delete_repo"}'));
    await send(call('{"name":"issue_refund","arguments":{"amount":100,"Amount":900}}'));
    expect(received).toHaveLength(1);
    for (const text of received) {
      const m = JSON.parse(text) as { params: object };
      expect(Object.keys(m)).toEqual(['jsonrpc', 'id', 'method', 'params']);
      expect(Object.keys(m.params)).toEqual(['name', 'arguments']);
      expect(foldedDuplicate(m, 'message')).toBeUndefined();
    }
  });
});

describe('trace headers reach an upstream only as valid W3C Trace Context (docs/observability.md, "Traces")', () => {
  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const SPAN = '00f067aa0ba902b7';
  const TRACEPARENT = `00-${TRACE}-${SPAN}-01`;
  const TRACESTATE = 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7';
  /** The trace headers the upstream got for a tools/list sent through the gateway at `base` with `headers`. */
  const got = async (base: string, headers: Record<string, string>): Promise<{ traceparent: string | null; tracestate: string | null }> => {
    const r = await fetch(`${base}/default/trace-headers`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
    return ((await r.json()) as any).result.got;
  };

  it('tracing off: a valid traceparent and its tracestate go on as they came', async () => {
    expect(await got(tracingOffUrl, { traceparent: TRACEPARENT, tracestate: TRACESTATE })).toEqual({ traceparent: TRACEPARENT, tracestate: TRACESTATE });
  });

  it('tracing off: a later version\'s traceparent goes on as version 00, without what was appended; an oversized tracestate is dropped', async () => {
    const appended = `01-${TRACE}-${SPAN}-01-${'x'.repeat(3000)}`;
    const oversized = Array.from({ length: 30 }, (_, i) => `k${i}=${'v'.repeat(100)}`).join(',');
    expect(await got(tracingOffUrl, { traceparent: appended, tracestate: TRACESTATE })).toEqual({ traceparent: TRACEPARENT, tracestate: TRACESTATE });
    expect(await got(tracingOffUrl, { traceparent: TRACEPARENT, tracestate: oversized })).toEqual({ traceparent: TRACEPARENT, tracestate: null });
  });

  it.each([
    ['off', () => tracingOffUrl],
    ['on', () => tracingOnUrl],
  ])('tracing %s: an invalid traceparent starts a new trace, and the caller\'s tracestate, which says nothing about it, is dropped', async (_tracing, base) => {
    for (const traceparent of [`00-${TRACE}-${SPAN}-01-${'x'.repeat(3000)}`, `00-${TRACE.toUpperCase()}-${SPAN}-01`]) {
      const sent = await got(base(), { traceparent, tracestate: TRACESTATE });
      expect(sent.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      expect(sent.traceparent).not.toContain(TRACE);
      expect(sent.tracestate).toBeNull();
    }
    expect(await got(base(), { tracestate: TRACESTATE })).toMatchObject({ tracestate: null });
  });

  it('tracing on: the request span replaces the caller\'s traceparent, in the caller\'s trace, and the caller\'s valid tracestate goes with it', async () => {
    const sent = await got(tracingOnUrl, { traceparent: TRACEPARENT, tracestate: TRACESTATE });
    expect(sent.traceparent).toMatch(new RegExp(`^00-${TRACE}-(?!${SPAN})[0-9a-f]{16}-01$`));
    expect(sent.tracestate).toBe(TRACESTATE);
  });
});

describe('tracing on: each request to an upstream is a CLIENT span, and the upstream is its child (docs/observability.md, "Traces")', () => {
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let tracer: Tracer;
  let base: string;
  let badUrl: string;
  let traced: { server: Server; url: string };
  /** An upstream that takes requests and never answers. */
  const silent = createServer(() => undefined);

  beforeAll(async () => {
    ready = true;
    receiver = await startOtlpReceiver();
    tracer = startTracing({ endpoint: receiver.url, instance: 'test', scheduledDelayMs: 10, log: silentLogger });
    badUrl = new URL(upstreams.get('default/trace-headers')!.spec.url).origin;
    const { hostname, port } = new URL(badUrl);
    // Credentials, a query and a fragment in the URL: none of it may reach a span. The query makes it a 404.
    upstreams.set('default/creds', upstreamAt('creds', `http://user:s3cret@${hostname}:${port}/trace-headers?token=t0ken#frag`));
    const slow = upstreamAt('silent', `${await listening(silent)}/mcp`);
    upstreams.set('default/silent', { ...slow, spec: { ...slow.spec, timeout: '300ms' } });
    const allowing = new Gateway({
      store,
      pipeline: { decide: async () => ({ ok: true, decision: { decision: 'allow', allowed: true, reason: 'fine', action_id: 'act_1', agent: { id: 'anonymous' } } }) } as unknown as DecisionPipeline,
      authorizer: openAuthorizer(),
      audit: { append: () => ({ ok: true }) } as never,
      credentials: { headersFor: async () => ({}) },
      sessionKey: sessionKey(undefined),
      metrics: new Metrics(),
      log: silentLogger,
      options: { denyAs: 'tool-error', approvalHoldMs: 0, responseLimitBytes: 1024 },
    });
    traced = await serve(allowing, edge.traced(tracer));
    base = traced.url;
  });
  afterAll(async () => {
    await tracer.shutdown();
    await receiver.close();
    silent.closeAllConnections();
    await new Promise((r) => silent.close(r));
    await new Promise((r) => traced.server.close(r));
  });

  /** Sends `body` to upstream `ref` in a new sampled trace; resolves with the trace id, the answer, and the request and CLIENT spans once exported. */
  async function through(ref: string, body: object): Promise<{ trace: string; status: number; answer: any; request: OtlpSpan; client: OtlpSpan }> {
    const trace = newTraceId();
    const r = await fetch(`${base}/${ref}`, { method: 'POST', headers: { 'content-type': 'application/json', traceparent: `00-${trace}-${newSpanId()}-01` }, body: JSON.stringify(body) });
    const text = await r.text();
    const answer: unknown = text === '' ? undefined : JSON.parse(text);
    const request = await spanWhere(receiver.spans, (s) => s.traceId === trace && s.kind === 2, `SERVER in ${trace}`);
    const client = await spanWhere(receiver.spans, (s) => s.traceId === trace && s.kind === 3, `CLIENT in ${trace}`);
    return { trace, status: r.status, answer, request, client };
  }
  const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
  const toolCall = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'read_file', arguments: {} } };

  it('a child of the request span, with the HTTP client attributes; the upstream gets its traceparent', async () => {
    const { trace, answer, request, client } = await through('default/trace-headers', list);
    expect(client.name).toBe('POST upstream');
    expect(client.parentSpanId).toBe(request.spanId);
    expect(answer.result.got.traceparent).toBe(`00-${trace}-${client.spanId}-01`);
    const { hostname, port } = new URL(badUrl);
    expect(Object.fromEntries(['http.request.method', 'server.address', 'server.port', 'url.full', 'http.response.status_code', 'policyguard.upstream', 'error.type'].map((k) => [k, attribute(client, k)]))).toEqual({
      'http.request.method': 'POST',
      'server.address': hostname,
      'server.port': Number(port),
      'url.full': `${badUrl}/trace-headers`,
      'http.response.status_code': 200,
      'policyguard.upstream': 'default/trace-headers',
      'error.type': undefined,
    });
    expect(client.status?.code ?? 0).toBe(0);
  });

  it('an upstream answering >= 400: failed, with its status; the URL without credentials, query or fragment', async () => {
    const { status, client } = await through('default/creds', list);
    expect(status).toBe(404);
    expect(attribute(client, 'url.full')).toBe(`${badUrl}/trace-headers`);
    expect(JSON.stringify(client)).not.toMatch(/s3cret|t0ken|frag/);
    expect([attribute(client, 'http.response.status_code'), attribute(client, 'error.type')]).toEqual([404, '404']);
    expect(client.status).toMatchObject({ code: 2, message: 'HTTP 404' });
  });

  it('an upstream that cannot be reached: the CLIENT span failed, and the request span too though the tool error is answered 200', async () => {
    const { status, answer, request, client } = await through('default/x', toolCall);
    expect([status, answer.result.isError]).toEqual([200, true]);
    expect(attribute(client, 'http.response.status_code')).toBeUndefined();
    expect(attribute(client, 'error.type')).toBe('ECONNREFUSED');
    expect(client.status).toMatchObject({ code: 2, message: 'the connection was refused' });
    expect(request.status).toMatchObject({ code: 2, message: 'upstream default/x failed: the connection was refused' });
  });

  it('an upstream that does not answer in time: the CLIENT span failed, saying so', async () => {
    const { status, client } = await through('default/silent', list);
    expect(status).toBe(502);
    expect(client.status).toMatchObject({ code: 2, message: 'no complete answer within 300ms' });
  });
});
