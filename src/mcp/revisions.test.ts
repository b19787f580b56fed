/**
 * Revision detection must agree with the SDK's own classifier (the code `createMcpHandler`
 * routes with) on every request, including the ones our shortcut answers without it; and the
 * header check the fast path relies on accepts only headers that mirror the body exactly.
 */
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classifyInboundRequest } from '@modelcontextprotocol/server';
import { classifyMcpRequest, eraOf, headersMirrorBody, memoizedEnvelopes, MODERN_REVISION, standardHeaderMismatch } from './revisions.js';

function request(headers: Record<string, string>, method = 'POST'): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  req.method = method;
  req.headers = headers;
  return req;
}

const sdkClassification = (headers: Record<string, string>, body: unknown, method = 'POST') =>
  classifyInboundRequest({
    httpMethod: method,
    ...(headers['mcp-protocol-version'] !== undefined && { protocolVersionHeader: headers['mcp-protocol-version'] }),
    ...(headers['mcp-method'] !== undefined && { mcpMethodHeader: headers['mcp-method'] }),
    ...(headers['mcp-name'] !== undefined && { mcpNameHeader: headers['mcp-name'] }),
    ...(body !== undefined && { body }),
  });

const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN_REVISION,
  'io.modelcontextprotocol/clientInfo': { name: 't', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {},
};

const version = fc.oneof(fc.constant('2025-11-25'), fc.constant('2025-06-18'), fc.constant('2024-11-05'), fc.constant(MODERN_REVISION), fc.constant('2099-01-01'), fc.string());
const headers = fc.record(
  { 'mcp-protocol-version': version, 'mcp-method': fc.oneof(fc.constant('tools/call'), fc.string()), 'mcp-name': fc.oneof(fc.constant('validate_action'), fc.string()) },
  { requiredKeys: [] },
);
const id = fc.oneof(fc.integer(), fc.string(), fc.double(), fc.constant(null), fc.constant(2 ** 53 + 2), fc.constant(undefined));
/** The valid envelope, and ones that differ from it in one place: each must be classified as the SDK does (the shortcut asks it once per distinct envelope). */
const envelopeVariant = fc.constantFrom<Record<string, unknown>>(
  {},
  { progressToken: 1 },
  { progressToken: {} },
  { 'io.modelcontextprotocol/clientInfo': { name: 1, version: '1' } },
  { 'io.modelcontextprotocol/clientInfo': { name: 't' } },
  { 'io.modelcontextprotocol/clientInfo': 'bench' },
  { 'io.modelcontextprotocol/clientCapabilities': { sampling: 1 } },
  { 'io.modelcontextprotocol/clientCapabilities': { roots: { listChanged: true }, elicitation: {} } },
  { 'io.modelcontextprotocol/clientCapabilities': undefined },
  { 'io.modelcontextprotocol/protocolVersion': ' 2026-07-28' },
  { extra: [1, 2] },
).map((change) => JSON.parse(JSON.stringify({ ...ENVELOPE, ...change })) as Record<string, unknown>);
const meta = fc.oneof(fc.constant(ENVELOPE), envelopeVariant, fc.constant({ progressToken: 1 }), fc.constant({ ...ENVELOPE, 'io.modelcontextprotocol/protocolVersion': '2025-11-25' }), fc.jsonValue());
const params = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 1 },
  { arbitrary: fc.jsonValue(), weight: 1 },
  { arbitrary: fc.record({ name: fc.oneof(fc.constant('validate_action'), fc.string()), arguments: fc.jsonValue(), _meta: meta }, { requiredKeys: ['name'] }), weight: 4 },
);
/** JSON-RPC-ish bodies: mostly close to real requests, with every field sometimes wrong or missing. */
const body = fc.oneof(
  { arbitrary: fc.jsonValue(), weight: 1 },
  {
    arbitrary: fc.record(
      {
        jsonrpc: fc.oneof({ arbitrary: fc.constant('2.0'), weight: 4 }, { arbitrary: fc.constant('1.0'), weight: 1 }),
        id,
        method: fc.oneof(fc.constant('tools/call'), fc.constant('initialize'), fc.constant('tools/list'), fc.constant('notifications/initialized'), fc.string()),
        params,
        extra: fc.jsonValue(),
      },
      { requiredKeys: ['jsonrpc', 'method', 'id'] },
    ),
    weight: 3,
  },
  {
    arbitrary: fc.record({ jsonrpc: fc.constant('2.0'), id, method: fc.string(), params }, { requiredKeys: ['jsonrpc', 'method', 'params'] }),
    weight: 3,
  },
);

describe('classifyMcpRequest', () => {
  it('agrees with the SDK classifier on arbitrary requests and headers', () => {
    fc.assert(
      fc.property(headers, body, (h, b) => {
        const parsed = JSON.parse(JSON.stringify(b ?? null)); // what express.json() hands over
        expect(classifyMcpRequest(request(h), parsed)).toEqual(sdkClassification(h, parsed));
      }),
      { numRuns: 3000 },
    );
  });

  it('agrees with the SDK on 2026-07-28 requests whose envelope varies (the shortcut asks it once per envelope)', () => {
    fc.assert(
      fc.property(meta, fc.constantFrom('tools/call', 'tools/list', 'initialize', 'tools/list ', ' tools/call', 'tools/call\t'), id, (m, method, i) => {
        const h = { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': method };
        const b = JSON.parse(JSON.stringify({ jsonrpc: '2.0', id: i, method, params: { name: 'x', _meta: m } })) as unknown;
        expect(classifyMcpRequest(request(h), b)).toEqual(sdkClassification(h, b));
      }),
      { numRuns: 1000 },
    );
  });

  it('remembers small envelopes only: padded ones are classified by the SDK every time, and the memo does not grow', () => {
    const h = { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list' };
    const call = (m: Record<string, unknown>) => JSON.parse(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: m } })) as unknown;
    const small = call({ ...ENVELOPE, 'io.modelcontextprotocol/clientInfo': { name: `memo-${Date.now()}`, version: '1' } });
    const before = memoizedEnvelopes();
    expect(classifyMcpRequest(request(h), small)).toEqual(sdkClassification(h, small));
    expect(memoizedEnvelopes()).toBe(before + 1);
    for (let i = 0; i < 20; i++) {
      const padded = call({ ...ENVELOPE, [`pad-${i}`]: 'x'.repeat(2_000) });
      expect(classifyMcpRequest(request(h), padded)).toEqual(sdkClassification(h, padded));
    }
    expect(memoizedEnvelopes()).toBe(before + 1);
  });

  it.each([
    ['a 2025 tools/call', {}, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: {} } }, 'legacy'],
    ['a 2025 tools/call with its revision header', { 'mcp-protocol-version': '2025-11-25' }, { jsonrpc: '2.0', id: 'a', method: 'tools/call', params: {} }, 'legacy'],
    ['initialize', {}, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'c', version: '1' } } }, 'legacy'],
    ['the 2026-07-28 envelope without its headers', {}, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: ENVELOPE } }, 'modern'],
    ['a 2025 request with a progress token in _meta', {}, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: { progressToken: 1 } } }, 'legacy'],
    ['a 2026-07-28 tools/call', { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/call', 'mcp-name': 'x' }, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: ENVELOPE } }, 'modern'],
    ['a 2026-07-28 header without the envelope', { 'mcp-protocol-version': MODERN_REVISION }, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, 'invalid'],
    ['headers naming another method', { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list' }, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: ENVELOPE } }, 'invalid'],
    ['not JSON-RPC', {}, { hello: 'world' }, 'invalid'],
  ])('%s is %s', (_name, h, b, era) => {
    const route = classifyMcpRequest(request(h as Record<string, string>), b);
    expect(route).toEqual(sdkClassification(h as Record<string, string>, b));
    expect(eraOf(route)).toBe(era);
  });

  it('a request that is not a POST is legacy (a 2025 session operation), whatever its body', () => {
    for (const b of [undefined, { jsonrpc: '2.0', id: 1, method: 'tools/list' }]) {
      expect(classifyMcpRequest(request({}, 'GET'), b)).toEqual({ kind: 'legacy', reason: 'http-method' });
      expect(classifyMcpRequest(request({}, 'DELETE'), b)).toEqual(sdkClassification({}, b, 'DELETE'));
    }
  });
});

describe('headersMirrorBody', () => {
  const exact = { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/call', 'mcp-name': 'validate_action' };
  it('accepts headers equal to the revision, method and name', () => {
    expect(headersMirrorBody(exact, MODERN_REVISION, 'tools/call', 'validate_action')).toBe(true);
    expect(headersMirrorBody({ 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list' }, MODERN_REVISION, 'tools/list')).toBe(true);
  });
  it.each([
    ['another revision', { ...exact, 'mcp-protocol-version': '2025-11-25' }],
    ['another method', { ...exact, 'mcp-method': 'tools/list' }],
    ['another name', { ...exact, 'mcp-name': 'register_agent' }],
    ['no name', { 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/call' }],
    ['a Base64 name', { ...exact, 'mcp-name': `=?base64?${Buffer.from('validate_action').toString('base64')}?=` }],
    ['no revision', { 'mcp-method': 'tools/call', 'mcp-name': 'validate_action' }],
  ])('refuses %s', (_name, h) => {
    expect(headersMirrorBody(h, MODERN_REVISION, 'tools/call', 'validate_action')).toBe(false);
  });
  it('refuses a name on a method that has none', () => {
    expect(headersMirrorBody({ 'mcp-protocol-version': MODERN_REVISION, 'mcp-method': 'tools/list', 'mcp-name': 'x' }, MODERN_REVISION, 'tools/list')).toBe(false);
  });
});

describe('standardHeaderMismatch (what a forwarding proxy checks before deciding on the body)', () => {
  const h = (extra: Record<string, string>) => ({ 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', ...extra });
  const b64 = (s: string) => `=?base64?${Buffer.from(s).toString('base64')}?=`;
  it.each<[string, Record<string, string | undefined>, string, unknown, RegExp | undefined]>([
    ['headers that mirror the body', h({ 'mcp-name': 'delete_repo' }), 'tools/call', { name: 'delete_repo' }, undefined],
    ['surrounding whitespace', h({ 'mcp-name': ' delete_repo\t' }), 'tools/call', { name: 'delete_repo' }, undefined],
    ['the Base64 form of a name', h({ 'mcp-name': b64('déjà_vu') }), 'tools/call', { name: 'déjà_vu' }, undefined],
    ['a name the body does not carry', h({ 'mcp-name': 'harmless' }), 'tools/call', { name: 'delete_repo' }, /names "harmless"/],
    ['no Mcp-Name on a tools/call', h({}), 'tools/call', { name: 'delete_repo' }, /Mcp-Name header is absent/],
    ['a broken Base64 sentinel', h({ 'mcp-name': '=?base64?!!!?=' }), 'tools/call', { name: 'x' }, /invalid Base64/],
    ['another method in Mcp-Method', { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list', 'mcp-name': 'x' }, 'tools/call', { name: 'x' }, /Mcp-Method header names "tools\/list"/],
    ['no protocol version header', { 'mcp-method': 'tools/call', 'mcp-name': 'x' }, 'tools/call', { name: 'x' }, /MCP-Protocol-Version header is absent/],
    ['resources/read mirrors the uri', { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'resources/read', 'mcp-name': 'file:///etc/passwd' }, 'resources/read', { uri: 'file:///tmp/x' }, /params\.uri/],
    ['a method without a name', { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' }, 'tools/list', {}, undefined],
  ])('%s', (_what, headers, method, params, expected) => {
    const got = standardHeaderMismatch(headers, method, params);
    if (expected) expect(got).toMatch(expected);
    else expect(got).toBeUndefined();
  });
});
