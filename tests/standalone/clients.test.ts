/**
 * The two protocol revisions on one /mcp, as clients see them (README, "MCP protocol
 * revisions"): how a client picks a revision, what `server/discover` says, which answers carry
 * the 2026-07-28 cache hints (and for whom), and the README's Inspector CLI example. The seed
 * scenarios through each of the four real clients are in ./seed-scenarios.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIST_TTL_MS, TOOL_NAMES } from '../../src/mcp/server.js';
import { inspector } from './clients.js';
import { callAs, connect, SAMPLES, startTestServer, writeTokenFile, type TestServer } from './harness.js';

const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'clients-test', version: '1.0.0' },
  'io.modelcontextprotocol/clientCapabilities': {},
};

/** One JSON-RPC POST; `modern` adds the 2026-07-28 envelope and the headers that mirror the body. */
async function rpc(url: string, method: string, params: Record<string, unknown> = {}, opts: { modern?: boolean; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  let body: Record<string, unknown> = { jsonrpc: '2.0', id: 1, method, params };
  if (opts.modern) {
    body = { ...body, params: { ...params, _meta: ENVELOPE } };
    Object.assign(headers, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': method }, typeof params.name === 'string' ? { 'mcp-name': params.name } : {});
  }
  const res = await fetch(`${url}/mcp`, { method: 'POST', headers: { ...headers, ...opts.headers }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
}

const CACHE_FIELDS = ['ttlMs', 'cacheScope'];

describe('two revisions on one /mcp (--auth none)', () => {
  let s: TestServer;
  let home: string;
  beforeAll(async () => {
    s = await startTestServer(SAMPLES);
    home = await mkdtemp(join(tmpdir(), 'policyguard-inspector-'));
  });
  afterAll(async () => {
    await s?.close();
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('server/discover names 2026-07-28 as the revision, the tools capability and who we are; shared caches may keep it', async () => {
    const { status, body } = await rpc(s.pg.url, 'server/discover', {}, { modern: true });
    expect(status).toBe(200);
    expect(body.result).toMatchObject({
      supportedVersions: ['2026-07-28'],
      capabilities: { tools: { listChanged: false } },
      resultType: 'complete',
      ttlMs: LIST_TTL_MS,
      cacheScope: 'public',
      _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'policyguard' } },
    });
    expect(body.result.instructions).toMatch(/Call validate_action BEFORE/);
  });

  it('a negotiating v2 client picks 2026-07-28 from server/discover', async () => {
    const client = await connect(s.pg.url);
    try {
      expect(client.getProtocolEra()).toBe('modern');
      expect(client.getDiscoverResult()?.supportedVersions).toEqual(['2026-07-28']);
    } finally {
      await client.close();
    }
  });

  it('initialize answers with a 2025 revision: 2025-11-25, or the older 2025 revision asked for', async () => {
    for (const [asked, answered] of [
      ['2025-11-25', '2025-11-25'],
      ['2025-06-18', '2025-06-18'],
      // initialize is the 2025 handshake: a later revision asked for there gets the latest 2025 one.
      ['2026-07-28', '2025-11-25'],
    ]) {
      const { body } = await rpc(s.pg.url, 'initialize', { protocolVersion: asked, capabilities: {}, clientInfo: { name: 'old', version: '1' } });
      expect(body.result.protocolVersion, asked).toBe(answered);
    }
  });

  it('an envelope naming a revision we do not speak is refused with -32022 and the revisions we do', async () => {
    const { status, body } = await rpc(s.pg.url, 'tools/list', { _meta: { ...ENVELOPE, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } }, { headers: { 'mcp-protocol-version': '2099-01-01', 'mcp-method': 'tools/list' } });
    expect(status).toBe(400);
    expect(body.error).toMatchObject({ code: -32022, data: { supported: ['2026-07-28'], requested: '2099-01-01' } });
  });

  it('tools/list carries the cache hints in 2026-07-28 and is unchanged in 2025', async () => {
    const modern = await rpc(s.pg.url, 'tools/list', {}, { modern: true });
    expect(modern.body.result).toMatchObject({ ttlMs: LIST_TTL_MS, cacheScope: 'public' });
    expect(modern.body.result.tools.map((t: { name: string }) => t.name)).toEqual([...TOOL_NAMES]);
    const legacy = await rpc(s.pg.url, 'tools/list');
    expect(Object.keys(legacy.body.result)).toEqual(['tools']);
    expect(legacy.body.result.tools).toEqual(modern.body.result.tools);
  });

  it('tool results carry no cache hints in either revision: every validate_action is a new decision', async () => {
    const args = { name: 'validate_action', arguments: { action_type: 'tool_call', target: 'read_customer', agent_id: 'support-bot' } };
    const first = await rpc(s.pg.url, 'tools/call', args, { modern: true });
    const second = await rpc(s.pg.url, 'tools/call', args, { modern: true });
    const legacy = await rpc(s.pg.url, 'tools/call', args);
    for (const r of [first, second, legacy]) for (const f of CACHE_FIELDS) expect(r.body.result, f).not.toHaveProperty(f);
    expect(first.body.result.structuredContent.action_id).not.toBe(second.body.result.structuredContent.action_id);
  });

  it('a 2026-07-28 request nested past the bound is refused saying so; within it, the SDK path answers it, not an internal error', async () => {
    // A progress token in _meta keeps it off the fast path.
    const meta = JSON.stringify({ ...ENVELOPE, progressToken: 1 });
    const call = (depth: number) =>
      fetch(`${s.pg.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'validate_action' },
        body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":${meta},"name":"validate_action","arguments":{"action_type":"x","target":"read_x","agent_id":"support-bot","parameters":${'{"a":'.repeat(depth)}"bottom"${'}'.repeat(depth)}}}}`,
      });
    const deep = await call(100_000);
    expect(deep.status).toBe(400);
    expect(((await deep.json()) as any).error).toEqual({ code: -32600, message: 'Invalid Request: the JSON nests deeper than 64 levels' });
    const within = await call(60);
    expect(within.status).toBe(200);
    expect(((await within.json()) as any).result.structuredContent.decision).toBe('allow');
  });

  it("the README's Inspector CLI examples work (the CLI's default, 2025, and negotiating, 2026-07-28)", async () => {
    for (const era of [[], ['--protocol-era', 'auto']]) {
      const listed = await inspector(s.pg.url, home, [...era, '--method', 'tools/list']);
      expect(listed.tools.map((t: { name: string }) => t.name)).toEqual([...TOOL_NAMES]);
      const called = await inspector(s.pg.url, home, [
        ...era,
        ...['--method', 'tools/call', '--tool-name', 'validate_action', '--tool-arg', 'action_type=tool_call', '--tool-arg', 'target=issue_refund'],
        ...['--tool-arg', 'agent_id=support-bot', '--tool-arg', 'parameters={"amount": 900}'],
      ]);
      expect(called.structuredContent).toMatchObject({ decision: 'require_approval', reason: 'Refunds above 500 need human approval' });
    }
  });
});

describe('cache hints under --auth token', () => {
  const TOKEN = 'clients-test-token-1';
  let s: TestServer;
  let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
  beforeAll(async () => {
    tokens = await writeTokenFile({ ci: TOKEN });
    s = await startTestServer(SAMPLES, ['--auth', 'token', '--token-file', tokens.file], { token: TOKEN });
  });
  afterAll(async () => {
    await s?.close();
    await tokens?.remove();
  });

  it('tools/list and server/discover are private to the caller: a shared cache must not answer someone we did not authenticate', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const method of ['tools/list', 'server/discover']) {
      const { status, body } = await rpc(s.pg.url, method, {}, { modern: true, headers: auth });
      expect(status, method).toBe(200);
      expect(body.result, method).toMatchObject({ ttlMs: LIST_TTL_MS, cacheScope: 'private' });
    }
    expect((await rpc(s.pg.url, 'server/discover', {}, { modern: true })).status).toBe(401);
  });

  it('the tools act for the authenticated caller in both revisions', async () => {
    for (const revision of ['legacy', 'auto'] as const) {
      const r = await callAs(s.pg.url, TOKEN, 'register_agent', { agent_id: 'sneaky', name: 'x', trust_level: 'admin' }, revision);
      expect(r.json.message, revision).toMatch(/^caller 'token:ci' may not create guardagents/);
    }
  });
});
