/**
 * The fast path must be indistinguishable from the SDK path, in both protocol revisions: for
 * every request of a corpus (valid calls, handler-level failures, invalid arguments, wrong
 * types, missing fields, unknown tools, extra fields, other methods, odd headers; as 2025-11-25
 * requests and as 2026-07-28 requests with `_meta` and `Mcp-Method`/`Mcp-Name` headers) both
 * answer with the same status, headers (but Date) and body, byte for byte. Ids are made
 * deterministic so action_id can be compared too.
 */
import { mkdtemp } from 'node:fs/promises';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { ANONYMOUS } from '../auth/authenticate.js';
import type { AuditSink } from '../audit/sink.js';
import { createLogger, silentLogger } from '../log.js';
import { requestContext } from '../telemetry/request-context.js';
import { Metrics } from '../metrics.js';
import { answerWriter, createFastPath, FAST_TOOLS, MAX_QUEUED_ANSWERS, type AnswerTarget, type FastPath } from './fast-path.js';
import { sdkEndpoint } from './http.js';
import { classifyMcpRequest, MODERN_REVISION } from './revisions.js';
import { openSampleTools, type SampleTools } from './sample-tools-fixture.js';
import { TOOL_SPECS } from './server.js';
import { Tools } from './tools.js';

// Random ids (action_id, entry_id, incident_id) come from newId: count instead, and restart the
// count before each request, so both paths hand out the same ids.
const ids = vi.hoisted(() => ({ next: 0 }));
vi.mock('../audit/record.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../audit/record.js')>();
  return { ...actual, newId: (prefix: string) => prefix + (ids.next++).toString(16).padStart(12, '0') };
});

let sample: SampleTools;
let audit: AuditSink;
let metrics: Metrics;
let fast: FastPath;
let tools: Tools;
const servers: Server[] = [];
let sdkUrl: string;
let fastUrl: string;

async function serve(app: express.Express): Promise<string> {
  app.disable('x-powered-by'); // as http.ts does
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
}

beforeAll(async () => {
  // No auto-registration: it would change the snapshot between the two requests of a pair.
  sample = await openSampleTools(await mkdtemp(join(tmpdir(), 'policyguard-fast-path-')));
  ({ audit, metrics, tools } = sample);
  fast = createFastPath({ tools, metrics, log: silentLogger });
  // http.ts's SDK path: a new McpServer per request, both revisions.
  const sdk = sdkEndpoint(tools, metrics, 'none', silentLogger);

  const sdkApp = express();
  sdkApp.post('/mcp', express.json(), (req, res) => void sdk.serve(req, res, req.body, classifyMcpRequest(req, req.body), ANONYMOUS));
  const fastApp = express();
  fastApp.post('/mcp', express.json(), (req, res) => {
    const route = classifyMcpRequest(req, req.body);
    if (fast.handle(req, res, req.body, route, { principal: ANONYMOUS })) return;
    void sdk.serve(req, res, req.body, route, ANONYMOUS);
  });
  sdkUrl = await serve(sdkApp);
  fastUrl = await serve(fastApp);
});

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
  await sample?.close();
});

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

interface Answer {
  status: number;
  /** Every response header but Date. */
  headers: Array<[string, string]>;
  body: string;
}

async function post(url: string, body: unknown, headers: Record<string, string>): Promise<Answer> {
  ids.next = 0;
  const res = await fetch(url, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, headers: [...res.headers.entries()].filter(([k]) => k !== 'date'), body: await res.text() };
}

const call = (args: unknown, extra: Record<string, unknown> = {}, id: unknown = 1) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'validate_action', arguments: args }, ...extra });
const va = (target: string, agent_id = 'support-bot', more: Record<string, unknown> = {}) => call({ action_type: 'tool_call', target, agent_id, ...more });

// ---- 2026-07-28 ------------------------------------------------------------------------------

const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN_REVISION,
  'io.modelcontextprotocol/clientInfo': { name: 'corpus', version: '1.0.0' },
  'io.modelcontextprotocol/clientCapabilities': {},
};

/** A request as a 2026-07-28 client sends it: the envelope in params._meta and the headers that mirror the body. */
function modern(request: any, meta: Record<string, unknown> = ENVELOPE): { body: unknown; headers: Record<string, string> } {
  const body = { ...request, params: { ...request.params, _meta: meta } };
  const headers: Record<string, string> = { ...HEADERS, 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': String(request.method) };
  if (typeof request.params?.name === 'string') headers['mcp-name'] = request.params.name;
  return { body, headers };
}

/** Requests the fast path answers itself (as 2025-11-25 requests; modernised below). */
const TAKEN: Array<[string, any]> = [
  ['allow', va('read_customer')],
  ['require_approval, parameters as an object', va('issue_refund', 'support-bot', { parameters: { amount: 900 } })],
  ['require_approval, parameters as a JSON string', va('issue_refund', 'support-bot', { parameters: '{"amount": 900}' })],
  ['deny with an incident', va('delete_records')],
  ['denied tool of a restricted agent', va('drop_table', 'data-processor')],
  ['unknown agent', va('read_x', 'nobody-knows-me')],
  ['audit finding', va('send_email', 'data-processor', { parameters: { to: 'someone@elsewhere.org' } })],
  ['context and secrets in parameters', va('query_sales', 'data-processor', { context: 'password=hunter2 please', parameters: { token: 'x', nested: { apiKey: 'y' } } })],
  ['string id', { ...va('read_customer'), id: 'req-7' }],
  ['id 0', { ...va('read_customer'), id: 0 }],
  ['negative id', { ...va('read_customer'), id: -42 }],
  ['large id', { ...va('read_customer'), id: 9007199254740991 }],
  ['agent_id missing (handler error)', call({ action_type: 'tool_call', target: 'read_x' })],
  ['empty target (handler error)', va('')],
  ['empty action_type (handler error)', call({ action_type: '', target: 'read_x', agent_id: 'support-bot' })],
  ['parameters not JSON (handler error)', va('read_x', 'support-bot', { parameters: 'not json' })],
  ['parameters a JSON array (handler error)', va('read_x', 'support-bot', { parameters: '[1, 2]' })],
  ['unicode and case in the target', va('DELETE_Ünïcode', 'support-bot')],
];

/** Requests the fast path hands to the SDK, in either revision; the answers must still be the SDK's. */
const PASSED: Array<[string, any]> = [
  ['target of the wrong type', call({ action_type: 'tool_call', target: 5, agent_id: 'support-bot' })],
  // Unknown arguments are an input error naming the ones the tool takes (docs/decisions.md).
  ['unknown argument fields', va('read_customer', 'support-bot', { extra: 1, another: { x: [1] } })],
  ['__proto__ among the arguments', JSON.parse('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"tool_call","target":"read_x","agent_id":"support-bot","__proto__":{"polluted":true}}}}')],
  ['action_type missing', call({ target: 'read_x', agent_id: 'support-bot' })],
  ['parameters of the wrong type', va('read_x', 'support-bot', { parameters: 42 })],
  ['target too long', va('x'.repeat(1025))],
  ['arguments missing', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action' } }],
  ['arguments null', call(null)],
  ['arguments an array', call([1, 2])],
  ['unknown tool', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'no_such_tool', arguments: {} } }],
  ['another tool', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_audit_log', arguments: { limit: 1 } } }],
  ['params with task', { ...va('read_customer'), params: { ...va('read_customer').params, task: { ttl: 1000 } } }],
  ['extra top-level field', { ...va('read_customer'), extra: true }],
  ['fractional id', { ...va('read_customer'), id: 1.5 }],
  ['tools/list', { jsonrpc: '2.0', id: 1, method: 'tools/list' }],
  ['ping', { jsonrpc: '2.0', id: 1, method: 'ping' }],
  ['unknown method', { jsonrpc: '2.0', id: 1, method: 'no/such/method' }],
];

/** 2025-11-25 requests the fast path hands to the SDK (shapes with no 2026-07-28 form). */
const LEGACY_PASSED: Array<[string, unknown]> = [
  ['name missing', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { arguments: {} } }],
  ['params with _meta', { ...va('read_customer'), params: { ...va('read_customer').params, _meta: { progressToken: 5 } } }],
  ['null id', { ...va('read_customer'), id: null }],
  ['wrong jsonrpc version', { ...va('read_customer'), jsonrpc: '1.0' }],
  ['initialize', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } } }],
  ['initialize of an older revision', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }],
  ['notification', { jsonrpc: '2.0', method: 'notifications/initialized' }],
  ['batch of two calls', [va('read_customer'), { ...va('delete_records'), id: 2 }]],
  ['not JSON-RPC at all', { hello: 'world' }],
  ['server/discover without the envelope', { jsonrpc: '2.0', id: 1, method: 'server/discover' }],
];

const CALL = modern(va('read_customer'));
const withHeaders = (headers: Record<string, string | undefined>) => ({ body: CALL.body, headers: Object.fromEntries(Object.entries({ ...CALL.headers, ...headers }).filter(([, v]) => v !== undefined)) as Record<string, string> });

/** 2026-07-28 requests the fast path hands to the SDK: other methods, unusual envelopes, headers that do not mirror the body exactly. */
const MODERN_PASSED: Array<[string, { body: unknown; headers: Record<string, string> }]> = [
  ['server/discover', modern({ jsonrpc: '2.0', id: 1, method: 'server/discover', params: {} })],
  ['initialize with the envelope', modern({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: MODERN_REVISION, capabilities: {}, clientInfo: { name: 't', version: '1' } } })],
  ['a progress token in _meta', modern(va('read_customer'), { ...ENVELOPE, progressToken: 7 })],
  ['a log level in _meta', modern(va('read_customer'), { ...ENVELOPE, 'io.modelcontextprotocol/logLevel': 'debug' })],
  ['an envelope naming an unknown revision', { body: modern(va('read_customer'), { ...ENVELOPE, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' }).body, headers: { ...CALL.headers, 'mcp-protocol-version': '2099-01-01' } }],
  ['Mcp-Name naming another tool', withHeaders({ 'mcp-name': 'register_agent' })],
  ['Mcp-Method naming another method', withHeaders({ 'mcp-method': 'tools/list' })],
  ['Mcp-Name missing', withHeaders({ 'mcp-name': undefined })],
  ['Mcp-Method missing', withHeaders({ 'mcp-method': undefined })],
  ['MCP-Protocol-Version missing', withHeaders({ 'mcp-protocol-version': undefined })],
  ['MCP-Protocol-Version of the 2025 revision', withHeaders({ 'mcp-protocol-version': '2025-11-25' })],
  ['Mcp-Name in Base64', withHeaders({ 'mcp-name': `=?base64?${Buffer.from('validate_action').toString('base64')}?=` })],
  ['Content-Type with a charset', withHeaders({ 'content-type': 'application/json; charset=utf-8' })],
  ['the 2025 request with 2026-07-28 headers', { body: va('read_customer'), headers: CALL.headers }],
];

/** A 2025 client's headers that the fast path leaves to the SDK. */
const LEGACY_ODD_HEADERS: Array<[string, Record<string, string>]> = [
  ['Accept without text/event-stream', { ...HEADERS, accept: 'application/json' }],
  ['Content-Type with a charset', { ...HEADERS, 'content-type': 'application/json; charset=utf-8' }],
  ['unsupported protocol version', { ...HEADERS, 'mcp-protocol-version': '1999-01-01' }],
  ['Mcp-Method on a 2025 request', { ...HEADERS, 'mcp-method': 'tools/call' }],
];

/** The tool-call counter's series, as /metrics shows them. */
const toolCallSeries = async () => (await metrics.exposition()).split('\n').filter((l) => l.startsWith('policyguard_tool_calls_total')).join('\n');

/** `counted`: whether the tool call is counted (a handler that throws is counted on neither path). */
async function expectTaken(body: unknown, headers: Record<string, string>, counted = true): Promise<Answer> {
  const before = { ...fast.stats };
  const sdk = await post(sdkUrl, body, headers);
  const callsAfterSdk = await toolCallSeries();
  const ours = await post(fastUrl, body, headers);
  expect(fast.stats.taken).toBe(before.taken + 1);
  expect(ours).toEqual(sdk);
  expect(sdk.status).toBe(200);
  // The tool-call metric moved the same way on both paths.
  expect((await toolCallSeries()) !== callsAfterSdk).toBe(counted);
  return ours;
}

async function expectPassed(body: unknown, headers: Record<string, string>): Promise<Answer> {
  const before = { ...fast.stats };
  const sdk = await post(sdkUrl, body, headers);
  const ours = await post(fastUrl, body, headers);
  expect(fast.stats.taken).toBe(before.taken);
  expect(ours).toEqual(sdk);
  return ours;
}

describe('2025-11-25: the fast path answers exactly as the SDK path', () => {
  it.each(TAKEN)('%s (answered on the fast path)', async (_name, body) => {
    const answer = await expectTaken(body, HEADERS);
    expect(answer.headers).toContainEqual(['content-length', String(Buffer.byteLength(answer.body))]);
  });
  it('with a supported MCP-Protocol-Version header (answered on the fast path)', async () => {
    await expectTaken(va('read_customer'), { ...HEADERS, 'mcp-protocol-version': '2025-06-18' });
  });
  it.each([...PASSED, ...LEGACY_PASSED])('%s (handed to the SDK)', async (_name, body) => {
    await expectPassed(body, HEADERS);
  });
  it.each(LEGACY_ODD_HEADERS)('%s (handed to the SDK)', async (_name, headers) => {
    await expectPassed(va('read_customer'), headers);
  });
});

describe('2026-07-28: the fast path answers exactly as the SDK path', () => {
  it.each(TAKEN)('%s (answered on the fast path)', async (_name, request) => {
    const { body, headers } = modern(request);
    const answer = await expectTaken(body, headers);
    expect(JSON.parse(answer.body).result).toMatchObject({ resultType: 'complete', _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'policyguard' } } });
  });
  it.each([
    ['client capabilities and a titled client', modern(va('read_customer'), { ...ENVELOPE, 'io.modelcontextprotocol/clientInfo': { name: 'c', title: 'C', version: '2' }, 'io.modelcontextprotocol/clientCapabilities': { elicitation: {}, roots: {} } })],
    // The revision makes client info optional, and the 2026-07-28 transport does not check Accept.
    ['an envelope without client info', modern(va('read_customer'), { 'io.modelcontextprotocol/protocolVersion': MODERN_REVISION, 'io.modelcontextprotocol/clientCapabilities': {} })],
    ['Accept without text/event-stream', withHeaders({ accept: 'application/json' })],
  ])('%s (answered on the fast path)', async (_name, { body, headers }) => {
    await expectTaken(body, headers);
  });
  it.each(PASSED)('%s (handed to the SDK)', async (_name, request) => {
    const { body, headers } = modern(request);
    await expectPassed(body, headers);
  });
  it.each(MODERN_PASSED)('%s (handed to the SDK)', async (_name, { body, headers }) => {
    await expectPassed(body, headers);
  });
  it('headers that disagree with the body are refused with -32020 (HTTP 400), naming both', async () => {
    const { status, body } = await post(fastUrl, withHeaders({ 'mcp-name': 'register_agent' }).body, withHeaders({ 'mcp-name': 'register_agent' }).headers);
    expect(status).toBe(400);
    expect(JSON.parse(body)).toEqual({
      jsonrpc: '2.0',
      id: 1,
      error: {
        code: -32020,
        message: 'Bad Request: the request headers and body disagree: the body carries params.name="validate_action" but the Mcp-Name header names "register_agent"',
        data: { mismatch: { header: 'register_agent', body: 'the body carries params.name="validate_action" but the Mcp-Name header names "register_agent"' } },
      },
    });
  });
});

/** The response as it arrives on the socket: status line, headers in order (Date blanked) and body. */
function rawPost(url: string, body: unknown, headers: Record<string, string>): Promise<string> {
  ids.next = 0;
  const { port } = new URL(url);
  const text = JSON.stringify(body);
  const head = Object.entries({ ...headers, host: '127.0.0.1', 'content-length': String(Buffer.byteLength(text)), connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.end(`POST /mcp HTTP/1.1\r\n${head.join('')}\r\n${text}`));
    let received = '';
    socket.on('data', (d) => (received += d));
    socket.on('error', reject);
    socket.on('end', () => resolve(received.replace(/^Date: .*$/m, 'Date: -')));
  });
}

describe('on the socket', () => {
  it.each([
    ['2025-11-25', { body: va('issue_refund', 'support-bot', { parameters: { amount: 900 } }), headers: HEADERS }],
    ['2026-07-28', modern(va('issue_refund', 'support-bot', { parameters: { amount: 900 } }))],
  ])('a %s answer is the same bytes, headers in the same order', async (_revision, { body, headers }) => {
    const taken = fast.stats.taken;
    const sdk = await rawPost(sdkUrl, body, headers);
    const ours = await rawPost(fastUrl, body, headers);
    expect(fast.stats.taken).toBe(taken + 1);
    expect(ours).toBe(sdk);
    expect(ours).toMatch(/^HTTP\/1\.1 200 OK\r\ncontent-type: application\/json\r\ncontent-length: \d+\r\n/);
  });
});

describe('answers are written at the end of the turn, together', () => {
  /** A response that records what was written to it, or throws on writeHead. */
  const target = (written: string[], opts: { destroyed?: boolean; throws?: boolean } = {}) => {
    const res: AnswerTarget & { destroyed: boolean } = {
      destroyed: opts.destroyed ?? false,
      writeHead(status, headers) {
        if (opts.throws) throw new Error('headers already sent');
        return { end: (text: string) => written.push(`${status} ${headers['content-length']} ${text}`) };
      },
      destroy: () => (res.destroyed = true),
    };
    return res;
  };
  const turn = () => new Promise((resolve) => setImmediate(resolve));

  it('nothing is written while the turn runs; then every answer, in order, with its length in bytes', async () => {
    const written: string[] = [];
    const answers = answerWriter(silentLogger);
    answers.send(target(written), '{"a":"é"}');
    answers.send(target(written), '{"b":1}');
    expect(written).toEqual([]);
    await turn();
    expect(written).toEqual(['200 10 {"a":"é"}', '200 7 {"b":1}']);
    // The next turn's answers go out in the next batch.
    answers.send(target(written), '{"c":2}');
    await turn();
    expect(written).toHaveLength(3);
  });

  it(`a turn with more than ${MAX_QUEUED_ANSWERS} answers writes them in batches of that many, in order`, async () => {
    const written: string[] = [];
    const answers = answerWriter(silentLogger);
    for (let i = 0; i < 2 * MAX_QUEUED_ANSWERS + 1; i++) {
      answers.send(target(written), `{"n":${i}}`);
      // Written as soon as a batch is full, not before.
      expect(written).toHaveLength(Math.floor((i + 1) / MAX_QUEUED_ANSWERS) * MAX_QUEUED_ANSWERS);
    }
    await turn();
    expect(written.map((w) => JSON.parse(w.split(' ')[2]!).n)).toEqual([...Array(2 * MAX_QUEUED_ANSWERS + 1).keys()]);
  });

  it('an answer whose caller went away is skipped, and one that cannot be written does not stop the rest', async () => {
    const written: string[] = [];
    const lines: string[] = [];
    const answers = answerWriter(createLogger('error', (line) => lines.push(line)));
    const gone = target(written, { destroyed: true });
    const broken = target(written, { throws: true });
    // Each in its own request's context, as the HTTP layer runs them; the batch runs in the first's.
    requestContext.run({ trace_id: 'trace-of-gone', action_id: 'act_gone' }, () => answers.send(gone, '{"gone":true}'));
    requestContext.run({ trace_id: 'trace-of-broken', action_id: 'act_broken' }, () => answers.send(broken, '{"broken":true}'));
    answers.send(target(written), '{"ok":true}');
    await turn();
    expect(written).toEqual(['200 11 {"ok":true}']);
    expect(broken.destroyed).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/MCP fast path could not write an answer.*headers already sent/);
    // The line names the request whose answer failed, not the turn's first.
    expect(lines[0]).toMatch(/trace_id=trace-of-broken/);
    expect(lines[0]).toMatch(/action_id=act_broken/);
    expect(lines[0]).not.toMatch(/gone/);
  });

  it('pipelined requests on one connection are answered in order, each by its own answer', async () => {
    const bodies = ['read_customer', 'delete_records', 'get_ticket'].map((target, i) =>
      JSON.stringify({ jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: 'support-bot' } } }),
    );
    const { host, port } = new URL(fastUrl);
    const taken = fast.stats.taken;
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), host.replace(/:\d+$/, ''));
      const requests = bodies.map((body, i) =>
        [`POST /mcp HTTP/1.1`, `Host: ${host}`, 'Content-Type: application/json', 'Accept: application/json, text/event-stream', `Content-Length: ${Buffer.byteLength(body)}`, ...(i === bodies.length - 1 ? ['Connection: close'] : []), '', body].join('\r\n'),
      );
      socket.on('connect', () => socket.write(requests.join(''))); // one write: the server reads all three in one turn
      let received = '';
      socket.on('data', (d) => (received += d));
      socket.on('error', reject);
      socket.on('end', () => resolve(received));
    });
    expect(fast.stats.taken).toBe(taken + 3);
    const answers = text.split('HTTP/1.1 ').slice(1).map((a) => JSON.parse(a.slice(a.indexOf('\r\n\r\n') + 4)) as { id: number; result: { structuredContent: { decision: string } } });
    expect(answers.map((a) => [a.id, a.result.structuredContent.decision])).toEqual([
      [1, 'allow'],
      [2, 'deny'],
      [3, 'allow'],
    ]);
  });
});

describe('a handler that misbehaves gets the same tool error on both paths', () => {
  const cases: Array<[string, () => void, boolean]> = [
    ['a result that breaks the output schema', () => vi.spyOn(tools, 'validateAction').mockResolvedValue({ ok: true, value: { allowed: 'yes', decision: 'maybe' } as never }), true],
    ['a result without structured content', () => vi.spyOn(tools, 'validateAction').mockResolvedValue({ ok: true, value: undefined as never }), true],
    ['a handler that throws', () => vi.spyOn(tools, 'validateAction').mockRejectedValue(new Error('store exploded')), false],
  ];
  it.each(cases)('%s', async (_name, misbehave, counted) => {
    misbehave();
    try {
      for (const revision of ['2025-11-25', MODERN_REVISION]) {
        const { body, headers } = revision === MODERN_REVISION ? modern(va('read_customer')) : { body: va('read_customer'), headers: HEADERS };
        const answer = await expectTaken(body, headers, counted);
        expect(JSON.parse(answer.body).result.isError, revision).toBe(true);
      }
    } finally {
      vi.restoreAllMocks();
    }
  });
});

describe('what the answers carry', () => {
  it('a complete validate_action result, its JSON text equal to structuredContent', async () => {
    const { body } = await post(fastUrl, va('issue_refund', 'support-bot', { parameters: { amount: 900 } }), HEADERS);
    const res = JSON.parse(body);
    expect(res).toMatchObject({ jsonrpc: '2.0', id: 1, result: { structuredContent: { decision: 'require_approval', action_id: 'act_000000000000' } } });
    expect(JSON.parse(res.result.content[0].text)).toEqual(res.result.structuredContent);
  });

  it('every fast answer is audited once, in both revisions', async () => {
    await audit.flush();
    const written = audit.stats.written;
    await post(fastUrl, va('read_customer'), HEADERS);
    await post(fastUrl, va('delete_records'), HEADERS);
    const { body, headers } = modern(va('read_customer'));
    await post(fastUrl, body, headers);
    await audit.flush();
    expect(audit.stats.written).toBe(written + 3);
  });
});

describe('the fast path stays in step with server.ts', () => {
  it('its tools are the registered ones, with the same schemas and handler', () => {
    for (const [name, tool] of Object.entries(FAST_TOOLS)) expect(tool).toBe(TOOL_SPECS[name as keyof typeof TOOL_SPECS]);
  });
});

describe('the official SDK client (v2) against the fast path', () => {
  it.each([
    ['auto', MODERN_REVISION],
    ['legacy', '2025-11-25'],
  ] as const)('negotiating %s, it ends on %s, lists tools and its validate_action calls are answered here', async (mode, revision) => {
    const client = new Client({ name: 'fast-path-test', version: '1.0.0' }, { versionNegotiation: { mode } });
    await client.connect(new StreamableHTTPClientTransport(new URL(fastUrl)));
    try {
      expect(client.getNegotiatedProtocolVersion()).toBe(revision);
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toContain('validate_action');
      const taken = fast.stats.taken;
      const res = await client.callTool({ name: 'validate_action', arguments: { action_type: 'tool_call', target: 'delete_records', agent_id: 'support-bot' } });
      expect(fast.stats.taken).toBe(taken + 1);
      expect(res.isError).toBeFalsy();
      expect(res.structuredContent).toMatchObject({ allowed: false, decision: 'deny', agent: { id: 'support-bot', trust_level: 'low', registered: true } });
      const bad = await client.callTool({ name: 'validate_action', arguments: { action_type: 'tool_call', target: 7 } });
      expect(bad.isError).toBe(true);
      expect(fast.stats.taken).toBe(taken + 1);
    } finally {
      await client.close();
    }
  });
});
