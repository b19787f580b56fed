/**
 * The gateway's own refusals, before anything reaches an upstream, and how it takes upstreams
 * that misbehave (redirects, answers too large, long GET streams): served over real HTTP on
 * loopback, with an in-memory store (our own PolicyStore interface) whose readiness the test
 * sets. Well-behaved upstreams are tests/standalone/gateway.test.ts's subject.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, type GuardUpstream } from '../api/schemas.js';
import { ANONYMOUS } from '../auth/authenticate.js';
import { openAuthorizer } from '../auth/authorize.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { silentLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { Gateway } from './gateway.js';
import { sessionKey } from './session.js';

let ready = false;
const upstreamAt = (name: string, url: string): GuardUpstream => ({
  apiVersion: API_VERSION,
  kind: 'GuardUpstream',
  metadata: { name, namespace: 'default' },
  spec: { url, headers: [], timeout: '1s', allowedNamespaces: [] },
});
/** `default/x` (nobody listens on port 9) and, once started, `default/<path>` of the misbehaving upstream below. */
const upstreams = new Map<string, GuardUpstream>([['default/x', upstreamAt('x', 'http://127.0.0.1:9/mcp')]]);
const store = {
  ready: () => ready,
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
  sessionKey: sessionKey(undefined).key,
  metrics: new Metrics(),
  log: silentLogger,
  options: { denyAs: 'tool-error', approvalHoldMs: 0, responseLimitBytes: 1024 },
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
    case '/redirect':
      return void res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    case '/huge-json':
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { pad: 'x'.repeat(2048) } }));
    case '/huge-event':
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      return void res.end(event(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { pad: 'x'.repeat(2048) } })));
    case '/slow-stream':
      // A GET stream whose first message comes after the upstream's 1 s timeout.
      res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
      return void setTimeout(() => res.end(event(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'late' } }))), 1500);
  }
  res.writeHead(404).end();
});

let server: Server;
let url: string;
beforeAll(async () => {
  await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r));
  const badUrl = `http://127.0.0.1:${(bad.address() as AddressInfo).port}`;
  for (const name of ['headers', 'redirect', 'huge-json', 'huge-event', 'slow-stream']) upstreams.set(`default/${name}`, upstreamAt(name, `${badUrl}/${name}`));
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void gateway.handle(req, res, req.url!.slice(1), ANONYMOUS, chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  await new Promise((r) => bad.close(r));
});

const post = (ref: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${url}/${ref}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

describe('the gateway refuses before any upstream is called', () => {
  it('503 until the first load has compiled', async () => {
    ready = false;
    const r = await post('default/x', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(r.status).toBe(503);
    expect(((await r.json()) as any).error.message).toMatch(/not ready/);
    ready = true;
  });
  it('404 for an upstream that is not there (or not usable)', async () => {
    const r = await post('default/nope', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(r.status).toBe(404);
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
    const lying = { 'content-type': 'application/json; charset=utf-16le', 'mcp-method': 'tools/call', 'mcp-name': 'delete_everything' };
    expect(await got({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, lying)).toEqual({ 'content-type': 'application/json', 'mcp-method': null, 'mcp-name': null });
    expect(await got({ jsonrpc: '2.0', method: 'notifications/initialized' }, { ...lying, 'mcp-protocol-version': '2025-11-25' })).toMatchObject({ 'mcp-method': null, 'mcp-name': null });
    const modern = { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///a', _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } } };
    expect(await got(modern, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'resources/read', 'mcp-name': 'file:///a' })).toMatchObject({ 'mcp-method': 'resources/read', 'mcp-name': 'file:///a' });
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
  it('a GET stream is not cut at the upstream timeout: it passes messages for as long as it lasts', async () => {
    const r = await fetch(`${url}/default/slow-stream`, { headers: { accept: 'text/event-stream' } });
    expect(r.status).toBe(200);
    expect(await r.text()).toContain('"data":"late"');
  });
});
