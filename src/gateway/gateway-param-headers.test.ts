/**
 * `Mcp-Param-*` headers through the gateway (protocol revision 2026-07-28, SEP-2243;
 * docs/decisions.md, "The gateway"): a real upstream built with the official SDK (which refuses
 * a call whose headers are missing or disagree with its body) and the official SDK client, over
 * loopback HTTP, with an in-memory store and pipeline (our own interfaces) as in gateway.test.ts;
 * and a hand-written upstream for what the SDK server does not do (paged lists, a list_changed
 * notification in a call's stream, a tools/list that fails, is answered with an error, is too
 * large, keeps its stream open, or differs in an upstream session).
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { fromJsonSchema, McpServer, type JsonSchemaType } from '@modelcontextprotocol/server';
import { API_VERSION, type GuardUpstream } from '../api/schemas.js';
import { ANONYMOUS } from '../auth/authenticate.js';
import { openAuthorizer } from '../auth/authorize.js';
import type { DecisionInput, DecisionPipeline } from '../decide/pipeline.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import { classifyMcpRequest, createMcpEndpoint, MODERN_REVISION } from '../mcp/revisions.js';
import type { PolicyStore } from '../store/store.js';
import { Gateway } from './gateway.js';
import { sealSession, sessionKey } from './session.js';

const UPSTREAM_SECRET = 'Bearer upstream-secret';

/** Every request an upstream got: its headers and its parsed body. */
interface Seen {
  headers: IncomingHttpHeaders;
  body: { id?: unknown; method?: string; params?: { name?: string; arguments?: unknown; cursor?: string; _meta?: Record<string, any> } };
}

/** Read a request's JSON body, keep it with its headers in `log`, and hand it on. */
function recording(log: Seen[], handle: (req: IncomingMessage, res: ServerResponse, body: Seen['body']) => void): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Seen['body']) : {};
      log.push({ headers: req.headers, body });
      handle(req, res, body);
    });
  });
}

const schema = (properties: Record<string, unknown>) => fromJsonSchema({ type: 'object', properties } as JsonSchemaType);
/** The tools of the SDK upstream: each answers with the arguments it got. */
const TOOLS: Record<string, Record<string, unknown>> = {
  create_issue: {
    region: { type: 'string', 'x-mcp-header': 'Region' },
    priority: { type: 'integer', 'x-mcp-header': 'Priority' },
    urgent: { type: 'boolean', 'x-mcp-header': 'Urgent' },
    repo: { type: 'object', properties: { owner: { type: 'string', 'x-mcp-header': 'Owner' } } },
    title: { type: 'string' },
  },
  transfer: { account: { type: 'string', 'x-mcp-header': 'Account' }, amount: { type: 'integer' } },
  plain: { text: { type: 'string' } },
  // Invalid: an annotation under items, and a name declared twice ignoring case.
  tagged: { tags: { type: 'array', items: { type: 'string', 'x-mcp-header': 'Tag' } } },
  twice: { a: { type: 'string', 'x-mcp-header': 'Zone' }, b: { type: 'string', 'x-mcp-header': 'zone' } },
};

function sdkServer(): McpServer {
  const server = new McpServer({ name: 'sdk-upstream', version: '1.0.0' });
  for (const [name, properties] of Object.entries(TOOLS)) {
    server.registerTool(name, { description: name, inputSchema: schema(properties) }, async (args) => ({ content: [{ type: 'text', text: JSON.stringify(args) }] }));
  }
  return server;
}

const sdkSeen: Seen[] = [];
const endpoint = createMcpEndpoint(sdkServer, () => undefined);
const sdkUpstream = recording(sdkSeen, (req, res, body) => void endpoint.serve(req, res, body, classifyMcpRequest(req, body), ANONYMOUS));

/**
 * A hand-written upstream: tools/list in two pages (the first an event stream with a
 * notification before the answer, the second JSON), `paged_tool` declared on the second; a
 * tools/call answered as a stream that says the tools changed. `/failing` answers tools/list
 * with HTTP 500, `/erring` with an error; `/big` with endless pages of 300 kB; `/lingering`
 * with one page as an event stream it keeps open; `/session`, in an upstream session, with a
 * list of its own (`paged_tool` declaring nothing).
 */
const handSeen: Seen[] = [];
const event = (message: unknown) => `event: message\ndata: ${JSON.stringify(message)}\n\n`;
const PAGED_TOOL = { name: 'paged_tool', inputSchema: { type: 'object', properties: { site: { type: 'string', 'x-mcp-header': 'Site' } } } };
/** Resolves when the upstream sees the gateway close the stream `/lingering` kept open. */
let lingeringClosed: Promise<void> | undefined;
const handUpstream = recording(handSeen, (req, res, body) => {
  const answer = (result: unknown) => ({ jsonrpc: '2.0', id: body.id, result });
  if (req.url === '/failing') return void res.writeHead(500).end();
  if (req.url === '/erring') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, error: { code: -32601, message: 'Method not found' } }));
  if (req.url === '/big' && body.method === 'tools/list') {
    const tools = [{ name: 'filler', description: 'x'.repeat(300_000), inputSchema: { type: 'object' } }];
    return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer({ tools, nextCursor: `after-${handSeen.length}` })));
  }
  if (req.url === '/lingering' && body.method === 'tools/list') {
    lingeringClosed = new Promise((resolve) => res.on('close', resolve));
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    return void res.write(event({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing' } }) + event(answer({ tools: [PAGED_TOOL] })));
  }
  if (req.url === '/session' && body.method === 'tools/list' && req.headers['mcp-session-id'] === 'up-1') {
    return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer({ tools: [{ name: 'paged_tool', inputSchema: { type: 'object' } }] })));
  }
  if (body.method === 'tools/list' && body.params?.cursor === undefined) {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    return void res.end(event({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing' } }) + event(answer({ tools: [{ name: 'other', inputSchema: { type: 'object' } }], nextCursor: 'page-2' })));
  }
  if (body.method === 'tools/list') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer({ tools: [PAGED_TOOL] })));
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.end(event({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' }) + event(answer({ content: [{ type: 'text', text: 'ran' }], resultType: 'complete' })));
});

const upstreams = new Map<string, GuardUpstream>();
const addUpstream = (name: string, url: string, timeout = '5s') =>
  upstreams.set(`default/${name}`, { apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name, namespace: 'default' }, spec: { url, headers: [], timeout, allowedNamespaces: [], keyMatching: 'Exact' } });
let sdkUrl: string;
let handUrl: string;
let fresh = 0;
/** A new GuardUpstream for the upstream at `url` (the SDK's by default), of which the gateway has learned nothing yet. */
const freshRef = (url = sdkUrl, timeout?: string) => {
  const name = `fresh-${++fresh}`;
  addUpstream(name, url, timeout);
  return `default/${name}`;
};

/**
 * What the pipeline decided: a deny for a transfer over 500; a transfer from account `approved`
 * as a call a person approved once (allowed the first time it is decided, its approval then
 * used: denied after); else allow.
 */
const decided: DecisionInput[] = [];
let approvalUsed = false;
const pipeline = {
  decide: async (input: DecisionInput) => {
    decided.push(input);
    const transfer = input.target === 'transfer';
    const used = transfer && input.parameters.account === 'approved' && approvalUsed;
    if (transfer && input.parameters.account === 'approved') approvalUsed = true;
    const deny = used || (transfer && Number(input.parameters.amount) > 500);
    const reason = used ? 'its approval is used already' : deny ? 'too much' : 'fine';
    return { ok: true, decision: { decision: deny ? 'deny' : 'allow', allowed: !deny, reason, action_id: `act_${decided.length}`, agent: { id: 'anonymous' } } };
  },
} as unknown as DecisionPipeline;
/** What the gateway audited besides the decisions (which the pipeline stub does not record): outcome records. */
const audited: Array<{ action_id: string; action: { type: string; parameters: Record<string, unknown> } }> = [];
const outcomeOf = (actionId: string) => audited.find((r) => r.action_id === actionId && r.action.type === 'upstream_outcome')?.action.parameters;
const SESSION_KEY = sessionKey(undefined);
const gateway = new Gateway({
  store: { notReady: () => undefined, snapshot: () => PolicySnapshot.empty(), upstream: (ref: string) => upstreams.get(ref) } as unknown as PolicyStore,
  pipeline,
  authorizer: openAuthorizer(),
  audit: { append: (entry: (typeof audited)[number]) => (audited.push(entry), { ok: true }) } as never,
  credentials: { headersFor: async () => ({ authorization: UPSTREAM_SECRET }) },
  sessionKey: SESSION_KEY,
  metrics: new Metrics(),
  log: silentLogger,
  options: { denyAs: 'tool-error', approvalHoldMs: 0, responseLimitBytes: 1 << 20 },
});
/** The gateway: `/<namespace>/<name>/mcp` is the upstream `<namespace>/<name>`. */
const gatewayServer = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => void gateway.handle(req, res, req.url!.slice(1).replace(/\/mcp$/, ''), ANONYMOUS, chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined));
});

const listen = async (srv: Server) => {
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
};
let gatewayUrl: string;
beforeAll(async () => {
  // The SDK server warns, on every tools/list, of the two tools whose declarations are invalid.
  vi.spyOn(console, 'warn').mockImplementation(() => undefined);
  sdkUrl = `${await listen(sdkUpstream)}/mcp`;
  handUrl = await listen(handUpstream);
  addUpstream('sdk', sdkUrl);
  addUpstream('failing', `${handUrl}/failing`);
  addUpstream('erring', `${handUrl}/erring`);
  addUpstream('down', 'http://127.0.0.1:9/mcp');
  gatewayUrl = await listen(gatewayServer);
});
afterAll(async () => {
  vi.restoreAllMocks();
  for (const srv of [gatewayServer, sdkUpstream, handUpstream]) {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
  }
});
beforeEach(() => {
  sdkSeen.length = 0;
  handSeen.length = 0;
});

/** The official client, speaking 2026-07-28 (or 2025-11-25) to `ref` through the gateway. */
async function client(ref: string, revision: 'modern' | 'legacy' = 'modern'): Promise<Client> {
  const c = new Client({ name: 'param-tests', version: '1.0.0' }, { versionNegotiation: { mode: revision === 'modern' ? { pin: MODERN_REVISION } : 'legacy' } });
  await c.connect(new StreamableHTTPClientTransport(new URL(`${gatewayUrl}/${ref}/mcp`)));
  return c;
}

const ENVELOPE = { 'io.modelcontextprotocol/protocolVersion': MODERN_REVISION, 'io.modelcontextprotocol/clientCapabilities': {} };
/** A 2026-07-28 tools/call sent as it is, with the standard headers and `headers`. */
async function call(ref: string, name: string, args: Record<string, unknown>, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(`${gatewayUrl}/${ref}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/call', 'mcp-name': name, ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: args, _meta: ENVELOPE } }),
  });
  const text = await r.text();
  // An SSE answer (the hand-written upstream's) carries the response in its last event.
  const data = text.startsWith('{') ? text : /data: (.*)\n\n$/.exec(text)![1]!;
  return { status: r.status, body: JSON.parse(data) };
}

/** The requests of `seen` with `method`. */
const requests = (seen: Seen[], method: string) => seen.filter((s) => s.body.method === method);
/** The `mcp-param-*` headers of a request. */
const paramHeadersOf = (s: Seen) => Object.fromEntries(Object.entries(s.headers).filter(([k]) => k.startsWith('mcp-param-')));

describe('a tool with x-mcp-header parameters, called through the gateway', () => {
  it('succeeds: the upstream gets each declared header, built by the gateway from the arguments it decided (Base64 for non-ASCII, integer, boolean, nested)', async () => {
    const c = await client('default/sdk');
    try {
      const listed = (await c.listTools()).tools.map((t) => t.name);
      // The SDK client leaves out the tools whose declarations are invalid.
      expect(listed).toEqual(['create_issue', 'transfer', 'plain']);
      const args = { region: 'Zürich', priority: 3, urgent: true, repo: { owner: 'acme' }, title: 'Hello' };
      const result = await c.callTool({ name: 'create_issue', arguments: args });
      expect(result.isError).toBeFalsy();
      expect(JSON.parse((result.content as { text: string }[])[0]!.text)).toEqual(args);
    } finally {
      await c.close();
    }
    const [sent] = requests(sdkSeen, 'tools/call');
    expect(paramHeadersOf(sent!)).toEqual({ 'mcp-param-region': '=?base64?WsO8cmljaA==?=', 'mcp-param-priority': '3', 'mcp-param-urgent': 'true', 'mcp-param-owner': 'acme' });
    expect(decided.at(-1)).toMatchObject({ target: 'create_issue', parameters: { region: 'Zürich', priority: 3 } });
    // Learned from the client's own tools/list as it passed: the gateway listed nothing itself.
    expect(requests(sdkSeen, 'tools/list')).toHaveLength(1);
  });

  it('the client\'s headers are checked, never passed on: the upstream gets the gateway\'s encoding, and no header it did not build', async () => {
    const r = await call('default/sdk', 'create_issue', { region: 'eu', priority: 42 }, { 'mcp-param-region': '=?base64?ZXU=?=', 'mcp-param-priority': '42.0', 'mcp-param-extra': 'x', 'mcp-param-urgent': 'true' });
    expect(r.status).toBe(200);
    expect(r.body.result.isError).toBeFalsy();
    const [sent] = requests(sdkSeen, 'tools/call');
    expect(paramHeadersOf(sent!)).toEqual({ 'mcp-param-region': 'eu', 'mcp-param-priority': '42' });
  });

  it.each<{ shape: string; headers: Record<string, string>; message: string }>([
    { shape: 'a header that disagrees with the body', headers: { 'mcp-param-region': 'us', 'mcp-param-priority': '1' }, message: 'the Mcp-Param-Region header says "us" but the body carries arguments.region="eu"' },
    { shape: 'an invalid Base64 sentinel', headers: { 'mcp-param-region': '=?base64?ZXU?=', 'mcp-param-priority': '1' }, message: 'the Mcp-Param-Region header carries an invalid Base64 sentinel value' },
    { shape: 'a nested value that disagrees', headers: { 'mcp-param-region': 'eu', 'mcp-param-priority': '1', 'mcp-param-owner': 'evil' }, message: 'the Mcp-Param-Owner header says "evil" but the body carries arguments.repo.owner="acme"' },
  ])('is refused as a server refuses it, and not forwarded: $shape (400, -32020; its outcome audited after the decision)', async ({ headers, message }) => {
    const before = decided.length;
    const r = await call('default/sdk', 'create_issue', { region: 'eu', priority: 1, repo: { owner: 'acme' } }, headers);
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ jsonrpc: '2.0', id: 7, error: { code: -32020, message: `Header mismatch: ${message}` } });
    expect(decided.length).toBe(before + 1);
    expect(outcomeOf(`act_${decided.length}`)).toEqual({ status: 0, is_error: true, duration_ms: 0, bytes: 0, error: `Header mismatch: ${message}` });
    expect(requests(sdkSeen, 'tools/call')).toEqual([]);
  });

  it('a header the client did not send is no error (unlike at a server): the upstream gets every header, built by the gateway, and the call is decided once', async () => {
    const before = decided.length;
    const r = await call('default/sdk', 'create_issue', { region: 'eu', priority: 1, repo: { owner: 'acme' } }, { 'mcp-param-region': 'eu' });
    expect(r.status).toBe(200);
    expect(r.body.result.isError).toBeFalsy();
    expect(decided.length).toBe(before + 1);
    expect(paramHeadersOf(requests(sdkSeen, 'tools/call')[0]!)).toEqual({ 'mcp-param-region': 'eu', 'mcp-param-priority': '1', 'mcp-param-owner': 'acme' });
  });

  it('a header for a value the gate did not decide never reaches the upstream: none for a value not in the body, nothing on a deny', async () => {
    // No account in the body: the client's header for it is ignored, as a server ignores it, and not sent on.
    const r = await call('default/sdk', 'transfer', { amount: 100 }, { 'mcp-param-account': 'acct-attacker' });
    expect(r.body.result.isError).toBeFalsy();
    expect(paramHeadersOf(requests(sdkSeen, 'tools/call')[0]!)).toEqual({});
    sdkSeen.length = 0;
    const denied = await call('default/sdk', 'transfer', { account: 'acct-1', amount: 900 }, { 'mcp-param-account': 'acct-1' });
    expect(denied.body.result).toMatchObject({ isError: true, content: [{ text: 'Denied by PolicyGuard: too much' }] });
    expect(sdkSeen).toEqual([]);
  });

  it('a deny waits on no upstream: a call denied for a tool the gateway knows nothing of is answered without listing, whatever its headers say', async () => {
    const denied = await call(freshRef(), 'transfer', { account: 'acct-1', amount: 900 }, { 'mcp-param-account': 'someone-else' });
    expect(denied.body.result).toMatchObject({ isError: true, content: [{ text: 'Denied by PolicyGuard: too much' }] });
    expect(sdkSeen).toEqual([]);
  });

  it('2025-11-25 is unchanged: Mcp-Param headers mean nothing there, are not checked and not sent', async () => {
    const c = await client('default/sdk', 'legacy');
    try {
      const result = await c.callTool({ name: 'create_issue', arguments: { region: 'Zürich', priority: 3 } });
      expect(result.isError).toBeFalsy();
    } finally {
      await c.close();
    }
    const r = await fetch(`${gatewayUrl}/default/sdk/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25', 'mcp-param-region': 'us' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'create_issue', arguments: { region: 'eu' } } }),
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as any).result.isError).toBeFalsy();
    const calls = requests(sdkSeen, 'tools/call');
    expect(calls).toHaveLength(2);
    for (const sent of calls) expect(paramHeadersOf(sent)).toEqual({});
  });
});

describe('a tool whose declarations the gateway has not seen', () => {
  it('before any tools/list: the gateway lists the upstream itself (its URL, credentials, 2026-07-28), checks and forwards the call', async () => {
    const ref = freshRef();
    const r = await call(ref, 'create_issue', { region: 'eu', priority: 5 }, { 'mcp-param-region': 'eu', 'mcp-param-priority': '5' });
    expect(r.body.result.isError).toBeFalsy();
    expect(sdkSeen.map((s) => s.body.method)).toEqual(['tools/list', 'tools/call']);
    expect(sdkSeen[0]!.headers).toMatchObject({ authorization: UPSTREAM_SECRET, 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list' });
    expect(paramHeadersOf(sdkSeen[1]!)).toEqual({ 'mcp-param-region': 'eu', 'mcp-param-priority': '5' });
    // Learned once: the next call lists nothing.
    await call(ref, 'plain', { text: 'x' });
    expect(requests(sdkSeen, 'tools/list')).toHaveLength(1);
  });

  it('the SDK client, calling before it listed, sends no headers: its call goes through at once, decided once, so an approval is not used up by a retry', async () => {
    const c = await client(freshRef());
    const before = decided.length;
    try {
      // Approved once (see the pipeline): a refusal for want of headers, then the client's retry, would find the approval used.
      const result = await c.callTool({ name: 'transfer', arguments: { account: 'approved', amount: 100 } });
      expect(result.isError).toBeFalsy();
    } finally {
      await c.close();
    }
    expect(decided.length).toBe(before + 1);
    // The gateway's own listing, and the call with the headers the gateway built.
    expect(sdkSeen.map((s) => [s.body.method, s.body.params?._meta?.['io.modelcontextprotocol/clientInfo']?.name])).toEqual([
      ['server/discover', 'param-tests'],
      ['tools/list', 'policyguard-gateway'],
      ['tools/call', 'param-tests'],
    ]);
    expect(paramHeadersOf(sdkSeen[2]!)).toEqual({ 'mcp-param-account': 'approved' });
  });

  it('follows nextCursor through pages, JSON or an event stream, to learn a tool listed on a later page', async () => {
    const r = await call(freshRef(`${handUrl}/paged`), 'paged_tool', { site: 'b' }, { 'mcp-param-site': 'b' });
    expect(r.body.result.content[0].text).toBe('ran');
    expect(handSeen.map((s) => [s.body.method, s.body.params?.cursor])).toEqual([['tools/list', undefined], ['tools/list', 'page-2'], ['tools/call', undefined]]);
    expect(paramHeadersOf(handSeen[2]!)).toEqual({ 'mcp-param-site': 'b' });
  });

  it('lists again once the upstream says its tools changed (notifications/tools/list_changed in a stream)', async () => {
    const ref = freshRef(`${handUrl}/paged`);
    // The first call's answer carries list_changed: the second call learns the tools again.
    await call(ref, 'paged_tool', { site: 'b' }, { 'mcp-param-site': 'b' });
    await call(ref, 'paged_tool', { site: 'c' }, { 'mcp-param-site': 'c' });
    expect(handSeen.map((s) => s.body.method)).toEqual(['tools/list', 'tools/list', 'tools/call', 'tools/list', 'tools/list', 'tools/call']);
  });

  it.each([
    { upstream: 'an upstream whose tools/list fails', ref: () => 'default/failing', why: 'the gateway could not list the upstream\'s tools to learn which Mcp-Param headers it takes: it answered tools/list with HTTP 500' },
    { upstream: 'an upstream that answers tools/list with an error', ref: () => 'default/erring', why: 'the gateway could not list the upstream\'s tools to learn which Mcp-Param headers it takes: it answered tools/list with error -32601' },
    { upstream: 'an unreachable upstream', ref: () => 'default/down', why: 'the gateway could not list the upstream\'s tools to learn which Mcp-Param headers it takes: the connection was refused' },
  ])('fails closed when they cannot be learned, $upstream: the allowed call is not made, saying why, and its outcome is audited', async ({ ref, why }) => {
    const target = ref();
    const r = await call(target, 'paged_tool', { site: 'a' }, { 'mcp-param-site': 'a' });
    const message = `Tool "paged_tool" of upstream ${target} is not called: ${why}; the gateway forwards a 2026-07-28 call only with the Mcp-Param headers its tool declares`;
    expect(r.status).toBe(200);
    expect(r.body.error).toEqual({ code: -32603, message });
    expect(outcomeOf(`act_${decided.length}`)).toMatchObject({ is_error: true, error: message });
    expect(requests(handSeen, 'tools/call')).toEqual([]);
  });

  it('a failed listing stands for a few seconds: the calls meanwhile are told why at once, without listing again', async () => {
    const ref = freshRef(`${handUrl}/failing`);
    const first = await call(ref, 'paged_tool', { site: 'a' });
    const second = await call(ref, 'paged_tool', { site: 'a' });
    expect(first.body.error.message).toMatch(/it answered tools\/list with HTTP 500/);
    expect(second.body.error).toEqual(first.body.error);
    expect(requests(handSeen, 'tools/list')).toHaveLength(1);
  });

  it('reads the pages of a listing up to the response limit, all together: an upstream cannot make it read 20 large pages', async () => {
    const ref = freshRef(`${handUrl}/big`);
    const r = await call(ref, 'paged_tool', { site: 'a' });
    expect(r.body.error.message).toContain('the gateway could not list the upstream\'s tools to learn which Mcp-Param headers it takes: its tools/list answers together are larger than --gateway-response-limit (1048576 bytes)');
    // Pages of 300 kB: the fourth takes it past 1 MiB.
    expect(requests(handSeen, 'tools/list')).toHaveLength(4);
    expect(requests(handSeen, 'tools/call')).toEqual([]);
  });

  it('reads an event stream to the answer to its listing and closes it: an upstream that keeps the stream open costs no timeout', async () => {
    const ref = freshRef(`${handUrl}/lingering`, '20s');
    const started = Date.now();
    const r = await call(ref, 'paged_tool', { site: 'b' }, { 'mcp-param-site': 'b' });
    expect(r.body.result.content[0].text).toBe('ran');
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(paramHeadersOf(requests(handSeen, 'tools/call')[0]!)).toEqual({ 'mcp-param-site': 'b' });
    await lingeringClosed;
  });

  it('learns nothing from a tools/list answered in an upstream session (it may be the session\'s own): a call without one is checked against the upstream\'s own list', async () => {
    const ref = freshRef(`${handUrl}/session`);
    const listed = await fetch(`${gatewayUrl}/${ref}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list', 'mcp-session-id': sealSession(SESSION_KEY, ref, 'up-1', ANONYMOUS.subject) },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: ENVELOPE } }),
    });
    // The session's list: paged_tool declares nothing there.
    expect(((await listed.json()) as any).result.tools).toEqual([{ name: 'paged_tool', inputSchema: { type: 'object' } }]);
    const r = await call(ref, 'paged_tool', { site: 'b' }, { 'mcp-param-site': 'b' });
    expect(r.body.result.content[0].text).toBe('ran');
    expect(handSeen.map((s) => [s.body.method, s.headers['mcp-session-id']])).toEqual([
      ['tools/list', 'up-1'],
      ['tools/list', undefined],
      ['tools/list', undefined],
      ['tools/call', undefined],
    ]);
    expect(paramHeadersOf(requests(handSeen, 'tools/call')[0]!)).toEqual({ 'mcp-param-site': 'b' });
  });

  it('a tool the listing does not name goes with no Mcp-Param headers (the client\'s are not passed on): the upstream answers for it', async () => {
    const ref = freshRef();
    const r = await call(ref, 'nowhere', { site: 'a' }, { 'mcp-param-site': 'a' });
    expect(JSON.stringify(r.body.error ?? r.body.result)).toMatch(/nowhere/);
    expect(sdkSeen.map((s) => s.body.method)).toEqual(['tools/list', 'tools/call']);
    expect(paramHeadersOf(sdkSeen[1]!)).toEqual({});
    // Not listed again for the next call while the listing is fresh.
    await call(ref, 'nowhere', {});
    expect(requests(sdkSeen, 'tools/list')).toHaveLength(1);
  });

  it.each([
    { tool: 'tagged', why: 'its inputSchema\'s x-mcp-header declarations are invalid: tags.<items>: x-mcp-header is allowed only on a property reached through properties alone' },
    { tool: 'twice', why: 'its inputSchema\'s x-mcp-header declarations are invalid: b: x-mcp-header "zone" is declared twice, ignoring case (also as "Zone")' },
  ])('a tool whose declarations are invalid is not called, not guessed at: $tool', async ({ tool, why }) => {
    const r = await call('default/sdk', tool, {});
    const message = `Tool "${tool}" of upstream default/sdk is not called: ${why}; the gateway forwards a 2026-07-28 call only with the Mcp-Param headers its tool declares`;
    expect(r.body.error).toEqual({ code: -32603, message });
    expect(outcomeOf(`act_${decided.length}`)).toMatchObject({ is_error: true, error: message });
    expect(requests(sdkSeen, 'tools/call')).toEqual([]);
  });
});
