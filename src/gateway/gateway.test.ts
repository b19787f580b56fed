/**
 * The gateway's own refusals, before anything reaches an upstream: served over real HTTP on
 * loopback, with an in-memory store (our own PolicyStore interface) whose readiness the test sets.
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
const upstream: GuardUpstream = { apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name: 'x', namespace: 'default' }, spec: { url: 'http://127.0.0.1:9/mcp', headers: [], timeout: '1s', allowedNamespaces: [] } };
const store = {
  ready: () => ready,
  snapshot: () => PolicySnapshot.empty(),
  upstream: (ref: string) => (ref === 'default/x' ? upstream : undefined),
} as unknown as PolicyStore;
const unused = () => {
  throw new Error('not reached');
};
const gateway = new Gateway({
  store,
  pipeline: { decide: unused } as never,
  authorizer: openAuthorizer(),
  audit: { append: unused } as never,
  credentials: { headersFor: unused },
  sessionKey: sessionKey(undefined).key,
  metrics: new Metrics(),
  log: silentLogger,
  options: { denyAs: 'tool-error', approvalHoldMs: 0 },
});

let server: Server;
let url: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void gateway.handle(req, res, req.url!.slice(1), ANONYMOUS, chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((r) => server.close(r)));

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
