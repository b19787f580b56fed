/**
 * The fast path must be indistinguishable from the SDK path: for every request of a corpus
 * (valid calls, handler-level failures, invalid arguments, wrong types, missing fields, unknown
 * tools, extra fields, other methods, odd headers) both answer with the same status, content
 * headers (but Date) and body, byte for byte. Ids are made deterministic so action_id can be compared too.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type Request, type Response } from 'express';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ANONYMOUS } from '../auth/authenticate.js';
import { openAuthorizer } from '../auth/authorize.js';
import { openFileAuditSink } from '../audit/file-sink.js';
import { openFileIncidentLog } from '../audit/incident-file.js';
import type { AuditSink } from '../audit/sink.js';
import { silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import { StandaloneStore } from '../store/standalone.js';
import { toJsonSchemaCompat } from '@modelcontextprotocol/sdk/server/zod-json-schema-compat.js';
import { createFastPath, FAST_TOOLS, type FastPath } from './fast-path.js';
import { answerWithSdk } from './http.js';
import { Tools, type CallContext } from './tools.js';

// Random ids (action_id, entry_id, incident_id) come from newId: count instead, and restart the
// count before each request, so both paths hand out the same ids.
const ids = vi.hoisted(() => ({ next: 0 }));
vi.mock('../audit/record.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../audit/record.js')>();
  return { ...actual, newId: (prefix: string) => prefix + (ids.next++).toString(16).padStart(12, '0') };
});

const SAMPLES = new URL('../../config-samples', import.meta.url).pathname;
const ctx: CallContext = { principal: ANONYMOUS };

let root: string;
let store: StandaloneStore;
let audit: AuditSink;
let metrics: Metrics;
let fast: FastPath;
const servers: Server[] = [];
let sdkUrl: string;
let fastUrl: string;

/** http.ts's SDK path: a new McpServer and transport per request. */
function sdkAnswer(tools: Tools, req: Request, res: Response): Promise<void> {
  return answerWithSdk(tools, metrics, ctx, req, res);
}

async function serve(app: express.Express): Promise<string> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-fast-path-'));
  store = await StandaloneStore.open({ configDir: SAMPLES, dataDir: join(root, 'data'), log: silentLogger, engine: { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null }, watch: false });
  audit = await openFileAuditSink({ dir: join(root, 'data', 'audit'), log: () => {} });
  const incidents = await openFileIncidentLog(join(root, 'data', 'incidents.jsonl'), { log: () => {} });
  metrics = new Metrics();
  // Auto-registration would change the snapshot between the two requests of a pair.
  const tools = new Tools({ store, authorizer: openAuthorizer(), audit, incidents, metrics, log: silentLogger, options: { autoRegister: false, autoRegisterLimit: 0, autoRegisterPerCaller: 1, unknownAgents: 'evaluate' } });
  fast = createFastPath({ tools, metrics, log: silentLogger });

  const sdkApp = express();
  sdkApp.post('/mcp', express.json(), (req, res) => void sdkAnswer(tools, req, res));
  const fastApp = express();
  fastApp.post('/mcp', express.json(), (req, res) => {
    if (fast.handle(req, res, req.body, ctx)) return;
    void sdkAnswer(tools, req, res);
  });
  sdkUrl = await serve(sdkApp);
  fastUrl = await serve(fastApp);
});

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
  await audit?.close();
  await store?.close();
  if (root) await rm(root, { recursive: true, force: true });
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

/** Requests the fast path answers itself. */
const TAKEN: Array<[string, unknown]> = [
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
  ['supported protocol version header', va('read_customer')],
];

/** Requests the fast path hands to the SDK; the answers must still be the SDK's. */
const PASSED: Array<[string, unknown]> = [
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
  ['name missing', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { arguments: {} } }],
  ['params with _meta', { ...va('read_customer'), params: { ...va('read_customer').params, _meta: { progressToken: 5 } } }],
  ['params with task', { ...va('read_customer'), params: { ...va('read_customer').params, task: { ttl: 1000 } } }],
  ['extra top-level field', { ...va('read_customer'), extra: true }],
  ['fractional id', { ...va('read_customer'), id: 1.5 }],
  ['null id', { ...va('read_customer'), id: null }],
  ['wrong jsonrpc version', { ...va('read_customer'), jsonrpc: '1.0' }],
  ['tools/list', { jsonrpc: '2.0', id: 1, method: 'tools/list' }],
  ['initialize', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }],
  ['ping', { jsonrpc: '2.0', id: 1, method: 'ping' }],
  ['notification', { jsonrpc: '2.0', method: 'notifications/initialized' }],
  ['unknown method', { jsonrpc: '2.0', id: 1, method: 'no/such/method' }],
  ['batch of two calls', [va('read_customer'), { ...va('delete_records'), id: 2 }]],
  ['not JSON-RPC at all', { hello: 'world' }],
];

describe('fast path answers exactly as the SDK path', () => {
  it.each(TAKEN)('%s (answered on the fast path)', async (_name, body) => {
    const headers = _name === 'supported protocol version header' ? { ...HEADERS, 'mcp-protocol-version': '2025-06-18' } : HEADERS;
    const before = { ...fast.stats };
    const sdk = await post(sdkUrl, body, headers);
    const callsAfterSdk = metrics.toolCalls.render();
    const ours = await post(fastUrl, body, headers);
    expect(fast.stats.taken).toBe(before.taken + 1);
    expect(ours).toEqual(sdk);
    expect(sdk.status).toBe(200);
    // The tool-call metric moved the same way on both paths.
    expect(metrics.toolCalls.render()).not.toBe(callsAfterSdk);
  });

  it.each(PASSED)('%s (handed to the SDK)', async (_name, body) => {
    const before = { ...fast.stats };
    const sdk = await post(sdkUrl, body, HEADERS);
    const ours = await post(fastUrl, body, HEADERS);
    expect(fast.stats.taken).toBe(before.taken);
    expect(ours).toEqual(sdk);
  });

  it.each([
    ['Accept without text/event-stream', { ...HEADERS, accept: 'application/json' }],
    ['Content-Type with a charset', { ...HEADERS, 'content-type': 'application/json; charset=utf-8' }],
    ['unsupported protocol version', { ...HEADERS, 'mcp-protocol-version': '1999-01-01' }],
  ])('%s (handed to the SDK)', async (_name, headers) => {
    const before = { ...fast.stats };
    const body = va('read_customer');
    const sdk = await post(sdkUrl, body, headers);
    const ours = await post(fastUrl, body, headers);
    expect(fast.stats.taken).toBe(before.taken);
    expect(ours).toEqual(sdk);
  });

  it('the answer is a complete validate_action result', async () => {
    const { body } = await post(fastUrl, va('issue_refund', 'support-bot', { parameters: { amount: 900 } }), HEADERS);
    const res = JSON.parse(body);
    expect(res).toMatchObject({ jsonrpc: '2.0', id: 1, result: { structuredContent: { decision: 'require_approval', action_id: 'act_000000000000' } } });
    expect(JSON.parse(res.result.content[0].text)).toEqual(res.result.structuredContent);
  });

  it('every fast answer is audited once', async () => {
    await audit.flush();
    const written = audit.stats.written;
    await post(fastUrl, va('read_customer'), HEADERS);
    await post(fastUrl, va('delete_records'), HEADERS);
    await audit.flush();
    expect(audit.stats.written).toBe(written + 2);
  });
});

describe('the fast path stays in step with server.ts', () => {
  it('its schemas for each fast tool are the ones tools/list advertises', async () => {
    const { body } = await post(sdkUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, HEADERS);
    const listed = JSON.parse(body).result.tools as Array<{ name: string; inputSchema: unknown; outputSchema: unknown }>;
    for (const [name, tool] of Object.entries(FAST_TOOLS)) {
      const registered = listed.find((t) => t.name === name);
      expect(registered, name).toBeDefined();
      expect(toJsonSchemaCompat(tool!.input as never, { strictUnions: true, pipeStrategy: 'input' })).toEqual(registered!.inputSchema);
      expect(toJsonSchemaCompat(tool!.output as never, { strictUnions: true, pipeStrategy: 'output' })).toEqual(registered!.outputSchema);
    }
  });
});

describe('the official SDK client against the fast path', () => {
  it('initializes, lists tools and calls validate_action', async () => {
    const client = new Client({ name: 'fast-path-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(fastUrl)));
    try {
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
