/**
 * The inline gateway with real upstreams and the official clients (docs/decisions.md, "The
 * gateway"): a Python MCPServer (stateless JSON) and server-everything (sessions, SSE,
 * progress), behind a standalone PolicyGuard with `--auth token`; and an upstream that records
 * the bytes it gets, for what a tools/call forwards.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { readResult } from './clients.js';
import { eventually } from './eventually.js';
import { smugglingShapes } from '../../src/gateway/smuggling-fixture.js';
import { connect, startTestServer, writeTokenFile, type TestServer } from './harness.js';
import { pythonAvailability } from './python-client.js';
import { freePort, startEverythingUpstream, startPythonUpstream, type Upstream } from './upstreams.js';

const python = pythonAvailability();
const TOKENS = { bot: 'bot-token-0001', other: 'other-token-0002', frozen: 'frozen-token-0003', teamb: 'teamb-token-0004' };
const UPSTREAM_SECRET = 'up-secret-42';

let root: string;
let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
let py: Upstream;
let everything: Upstream;
let auditKey: string;

/**
 * Every request the recording upstream got, but for tools/list: its headers and its body, byte
 * for byte. It lists its tools (with no Mcp-Param headers) to the gateway, which lists them
 * before its first 2026-07-28 call (src/gateway/param-headers.ts).
 */
const recorded: { headers: IncomingHttpHeaders; body: string }[] = [];
const recorder = createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (body += c));
  req.on('end', () => {
    const message = JSON.parse(body) as { id?: unknown; method?: string };
    const id = message.id ?? null;
    const tools = ['echo', 'refund', 'delete_repo'].map((name) => ({ name, inputSchema: { type: 'object' } }));
    if (message.method === 'tools/list') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id, result: { tools } }));
    recorded.push({ headers: req.headers, body });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'ran' }] } }));
  });
});

/** Manifests: an agent per token, three upstreams (one that nobody listens on), and policies on them. */
async function writeFixture(dir: string, downUrl: string, recorderUrl: string): Promise<void> {
  await writeFile(join(dir, 'upstream-secret'), `${UPSTREAM_SECRET}\n`);
  await writeFile(
    join(dir, 'gateway.yaml'),
    `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: bot}
spec:
  trustLevel: medium
  identities: [{user: "token:bot"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: other}
spec:
  identities: [{user: "token:other"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: frozen}
spec:
  suspended: true
  identities: [{user: "token:frozen"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: teamb, namespace: team-b}
spec:
  identities: [{user: "token:teamb"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: shared}
spec:
  url: ${py.url}
  allowedNamespaces: [team-b]
  headers:
    - {name: Authorization, prefix: "Bearer ", valueFrom: {file: ${join(dir, 'upstream-secret')}}}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: py}
spec:
  url: ${py.url}
  headers:
    - {name: Authorization, prefix: "Bearer ", valueFrom: {file: ${join(dir, 'upstream-secret')}}}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: everything}
spec:
  url: ${everything.url}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: wrong-path}
spec:
  url: ${py.url.replace(/\/mcp$/, '/nothing-here')}
  headers:
    - {name: Authorization, prefix: "Bearer ", valueFrom: {file: ${join(dir, 'upstream-secret')}}}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: down}
spec:
  url: ${downUrl}
  timeout: 2s
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: recorder}
spec:
  url: ${recorderUrl}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: gateway-rules}
spec:
  rules:
    - name: no-repo-deletes
      match: {tools: ["delete_repo"], upstreams: ["default/py", "default/recorder"]}
      action: deny
      message: Repositories are deleted by people, not agents
    - name: big-refunds
      match: {tools: ["refund"], arguments: [{path: amount, operator: GreaterThan, values: ["500"]}]}
      action: require_approval
      message: Refunds above 500 need a person
    - name: no-env
      match: {tools: ["get-env"]}
      action: deny
`,
  );
}

let s: TestServer;
const gatewayUrl = (upstream: string) => `${s.pg.url}/upstreams/default/${upstream}`;
/** The audit log as written: a restart closes the server, which flushes it. */
const auditEntries = async (server: TestServer) => {
  await server.restart();
  const dir = join(server.dataDir, 'audit');
  let text = '';
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.jsonl'))) text += await readFile(join(dir, f), 'utf8');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as any);
};

beforeAll(async () => {
  if (!python.ok) return;
  root = await mkdtemp(join(tmpdir(), 'pg-gateway-'));
  tokens = await writeTokenFile(TOKENS);
  py = await startPythonUpstream(join(root, 'upstream.log'), `Bearer ${UPSTREAM_SECRET}`);
  everything = await startEverythingUpstream();
  const fixture = join(root, 'fixture');
  await rm(fixture, { recursive: true, force: true });
  await (await import('node:fs/promises')).mkdir(fixture);
  await new Promise<void>((r) => recorder.listen(0, '127.0.0.1', r));
  await writeFixture(fixture, `http://127.0.0.1:${await freePort()}/mcp`, `http://127.0.0.1:${(recorder.address() as AddressInfo).port}/mcp`);
  auditKey = join(root, 'audit.key');
  await writeFile(auditKey, `${'k'.repeat(48)}\n`);
  // Held calls are tests/standalone/approvals.test.ts's subject; here a call that needs approval is answered at once.
  s = await startTestServer(fixture, ['--auth', 'token', '--token-file', tokens.file, '--audit-key-file', auditKey, '--approval-hold', '0s'], { token: TOKENS.bot });
}, 180_000);
afterAll(async () => {
  await s?.close();
  await py?.stop();
  await everything?.stop();
  if (recorder.listening) await new Promise((r) => recorder.close(r));
  await tokens?.remove();
  if (root) await rm(root, { recursive: true, force: true });
});

describe.skipIf(!python.ok)(`the gateway${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  it('tools/list lists only the tools the agent may ever call, and marks those that may need approval', async () => {
    const client = await connect(gatewayUrl('py'), TOKENS.bot);
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(['add', 'echo', 'refund', 'slow']);
      expect(tools.find((t) => t.name === 'refund')!._meta).toMatchObject({ 'policyguard.dev/approval': 'depends-on-arguments' });
      expect(tools.find((t) => t.name === 'add')!._meta?.['policyguard.dev/approval']).toBeUndefined();
    } finally {
      await client.close();
    }
  });

  it('an allowed call is forwarded with the upstream credentials, never the caller’s, and its outcome audited', async () => {
    const client = await connect(gatewayUrl('py'), TOKENS.bot);
    try {
      expect(readResult(await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } })).json).toBe(5);
      expect(readResult(await client.callTool({ name: 'refund', arguments: { amount: 100 } })).json).toBe('refunded 100');
    } finally {
      await client.close();
    }
    const log = await py.log();
    expect(log).toContain(`tools/call add auth=Bearer ${UPSTREAM_SECRET}`);
    expect(log.join('\n')).not.toContain(TOKENS.bot);
    const entries = await auditEntries(s);
    const decision = entries.find((e) => e.action.type === 'tool_call' && e.action.target === 'add');
    expect(decision).toMatchObject({ agent_id: 'bot', caller: 'token:bot', action: { upstream: 'default/py', parameters: { a: 2, b: 3 } }, evaluation: { decision: 'allow' } });
    const outcome = entries.find((e) => e.action.type === 'upstream_outcome' && e.action_id === decision.action_id);
    expect(outcome).toMatchObject({ caller: null, action: { target: 'add', upstream: 'default/py', parameters: { status: 200, is_error: false } } });
    expect(outcome.action.parameters.bytes).toBeGreaterThan(0);
  });

  it('a denied call never reaches the upstream: the model reads the reason', async () => {
    const client = await connect(gatewayUrl('py'), TOKENS.bot);
    try {
      const r = readResult(await client.callTool({ name: 'delete_repo', arguments: { name: 'prod' } }));
      expect(r.isError).toBe(true);
      expect(r.json).toBe('Denied by PolicyGuard: Repositories are deleted by people, not agents');
    } finally {
      await client.close();
    }
    expect((await py.log()).some((l) => l.startsWith('tools/call delete_repo'))).toBe(false);
  });

  it('a call that needs approval is refused, naming what is needed, and does not reach the upstream', async () => {
    const client = await connect(gatewayUrl('py'), TOKENS.bot);
    try {
      const r = readResult(await client.callTool({ name: 'refund', arguments: { amount: 900 } }));
      expect(r.isError).toBe(true);
      expect(r.json).toMatch(/^Needs human approval before it runs \(PolicyGuard\): Refunds above 500 need a person/);
    } finally {
      await client.close();
    }
    expect((await py.log()).filter((l) => l.startsWith('tools/call refund'))).toHaveLength(1); // only the 100 above
  });

  it.each([
    { revision: 'legacy' as const, version: '2025-11-25', reaches: 'notifications/cancelled - ' },
    { revision: 'auto' as const, version: '2026-07-28', reaches: 'disconnected tools/call slow' },
  ])('cancellation passes through ($version): an aborted call reaches the upstream as "$reaches"', async ({ revision, version, reaches }) => {
    const client = await connect(gatewayUrl('py'), TOKENS.bot, revision);
    const seen = async () => (await py.log()).filter((l) => l.startsWith(reaches)).length;
    try {
      expect(client.getNegotiatedProtocolVersion()).toBe(version);
      const before = await seen();
      const calls = (await py.log()).filter((l) => l.startsWith('tools/call slow')).length;
      const abort = new AbortController();
      const call = client.callTool({ name: 'slow', arguments: { seconds: 10 } }, { signal: abort.signal });
      await eventually(() => py.log(), (log) => log.filter((l) => l.startsWith('tools/call slow')).length > calls, 'the call to reach the upstream');
      abort.abort(new Error('the user changed their mind'));
      await expect(call).rejects.toThrow('the user changed their mind');
      await eventually(seen, (n) => n > before, `"${reaches}" to reach the upstream`);
    } finally {
      await client.close();
    }
  });

  it('speaks both revisions: the v2 client negotiates through it, the v1 client initializes through it', async () => {
    const v2 = await connect(gatewayUrl('py'), TOKENS.bot);
    const v1 = new V1Client({ name: 'v1', version: '1' });
    await v1.connect(new V1Transport(new URL(`${gatewayUrl('py')}/mcp`), { requestInit: { headers: { authorization: `Bearer ${TOKENS.bot}` } } }));
    try {
      expect(v2.getNegotiatedProtocolVersion()).toBe('2026-07-28');
      expect(readResult(await v2.callTool({ name: 'echo', arguments: { text: 'modern' } })).json).toBe('modern');
      expect((await v1.listTools()).tools.map((t) => t.name)).not.toContain('delete_repo');
      expect(readResult(await v1.callTool({ name: 'echo', arguments: { text: 'legacy' } }) as never).json).toBe('legacy');
      const denied = readResult((await v1.callTool({ name: 'delete_repo', arguments: { name: 'x' } })) as never);
      expect(denied.isError).toBe(true);
    } finally {
      await v2.close();
      await v1.close();
    }
  });

  it('passes sessions, SSE streams and progress notifications through (server-everything)', async () => {
    const client = await connect(gatewayUrl('everything'), TOKENS.bot, 'legacy');
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toContain('echo');
      expect(tools.map((t) => t.name)).not.toContain('get-env');
      const progress: number[] = [];
      const r = await client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } },
        { onprogress: (p: { progress: number }) => progress.push(p.progress) } as never,
      );
      expect(r.isError).toBeFalsy();
      expect(progress).toEqual([1, 2, 3]);
      const denied = readResult(await client.callTool({ name: 'get-env', arguments: {} }));
      expect(denied.isError).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('passes resources, prompts and a server-to-client request (sampling) through, in the upstream session', async () => {
    const client = new V1Client({ name: 'sampler', version: '1' }, { capabilities: { sampling: {} } });
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({ model: 'test-model', role: 'assistant', content: { type: 'text', text: 'sampled through the gateway' } }));
    await client.connect(new V1Transport(new URL(`${gatewayUrl('everything')}/mcp`), { requestInit: { headers: { authorization: `Bearer ${TOKENS.bot}` } } }));
    try {
      expect((await client.listResources()).resources.length).toBeGreaterThan(0);
      expect((await client.listPrompts()).prompts.length).toBeGreaterThan(0);
      const r = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hello', maxTokens: 10 } });
      expect(JSON.stringify(r.content)).toContain('sampled through the gateway');
    } finally {
      await client.close();
    }
  });

  it('an upstream that answers a call with an HTTP error: passed back, and audited as an error', async () => {
    const raw = await fetch(`${gatewayUrl('wrong-path')}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${TOKENS.bot}`, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: { text: 'lost' } } }),
    });
    expect(raw.status).toBe(404);
    await raw.text();
    const entries = await auditEntries(s);
    const decision = entries.find((e) => e.action.upstream === 'default/wrong-path' && e.action.type === 'tool_call');
    const outcome = entries.find((e) => e.action.type === 'upstream_outcome' && e.action_id === decision.action_id);
    expect(outcome.action.parameters).toMatchObject({ status: 404, is_error: true, error: 'upstream default/wrong-path answered HTTP 404 with no JSON-RPC response to the call' });
  });

  it('an unreachable upstream: the call is an error result that says so, and other methods a 502', async () => {
    const raw = await fetch(`${gatewayUrl('down')}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${TOKENS.bot}`, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }),
    });
    const body = (await raw.json()) as any;
    expect(body.result.isError).toBe(true);
    expect(body.result.content[0].text).toBe("The tool's server did not answer: upstream default/down failed: the connection was refused");
    const list = await fetch(`${gatewayUrl('down')}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${TOKENS.bot}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/list' }),
    });
    expect(list.status).toBe(502);
    expect(((await list.json()) as any).error).toMatchObject({ code: -32603, message: expect.stringMatching(/^upstream default\/down failed/) });
  });
});

describe.skipIf(!python.ok)('gateway sessions and identity', () => {
  const post = (base: string, token: string, body: unknown, session?: string) =>
    fetch(`${base}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${token}`,
        'mcp-protocol-version': '2025-11-25',
        ...(session ? { 'mcp-session-id': session } : {}),
      },
      body: JSON.stringify(body),
    });
  /** The JSON-RPC message of an answer that may be JSON or one SSE event. */
  const message = async (r: Response): Promise<any> => {
    const text = await r.text();
    if ((r.headers.get('content-type') ?? '').includes('text/event-stream')) {
      const data = text.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
      return JSON.parse(data.at(-1)!);
    }
    return JSON.parse(text);
  };

  it('a session of a stateful upstream is served alternately by two gateway processes', async () => {
    const second = await startTestServer(s.configDir, ['--auth', 'token', '--token-file', tokens.file, '--audit-key-file', auditKey], { token: TOKENS.bot });
    try {
      const a = `${s.pg.url}/upstreams/default/everything`;
      const b = `${second.pg.url}/upstreams/default/everything`;
      const init = await post(a, TOKENS.bot, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } } });
      expect(init.status).toBe(200);
      const session = init.headers.get('mcp-session-id')!;
      expect(session).toMatch(/^pgs1\./);
      await init.text();
      expect((await post(b, TOKENS.bot, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status).toBe(202);
      const listed = await message(await post(b, TOKENS.bot, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, session));
      expect(listed.result.tools.map((t: any) => t.name)).toContain('echo');
      const echoed = await message(await post(a, TOKENS.bot, { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } }, session));
      expect(echoed.result.content[0].text).toMatch(/hi/);
      // Another caller cannot use that session id, on either replica.
      expect((await post(b, TOKENS.other, { jsonrpc: '2.0', id: 4, method: 'tools/list' }, session)).status).toBe(404);
    } finally {
      await second.close();
    }
  });

  it('--gateway-deny-as unknown-tool answers a denied call as an unknown tool', async () => {
    const strict = await startTestServer(s.configDir, ['--auth', 'token', '--token-file', tokens.file, '--gateway-deny-as', 'unknown-tool'], { token: TOKENS.bot });
    try {
      const r = await message(await post(`${strict.pg.url}/upstreams/default/py`, TOKENS.bot, { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'delete_repo', arguments: { name: 'x' } } }));
      expect(r.error).toEqual({ code: -32602, message: 'Unknown tool: delete_repo' });
    } finally {
      await strict.close();
    }
  });

  it('a suspended agent: its tools/call is decided (a deny), anything else is refused before the upstream', async () => {
    const before = (await py.log()).length;
    const list = await post(gatewayUrl('py'), TOKENS.frozen, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(list.status).toBe(403);
    expect(((await list.json()) as any).error.message).toBe("agent 'frozen' is suspended by its spec; the gateway refuses all of its requests");
    const stream = await fetch(`${gatewayUrl('py')}/mcp`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${TOKENS.frozen}` } });
    expect(stream.status).toBe(403);
    const call = await message(await post(gatewayUrl('py'), TOKENS.frozen, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }));
    expect(call.result).toMatchObject({ isError: true, content: [{ text: expect.stringMatching(/^Denied by PolicyGuard: Agent 'frozen' is suspended by its spec/) }] });
    expect((await py.log()).length).toBe(before);
  });

  it('an upstream serves the agents of its own namespace and of those it allows: another namespace is refused', async () => {
    const before = (await py.log()).length;
    const r = await post(gatewayUrl('py'), TOKENS.teamb, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } });
    expect(r.status).toBe(403);
    expect(((await r.json()) as any).error.message).toBe(
      "agent 'teamb' (namespace team-b) may not use GuardUpstream default/py: an upstream serves the agents of its own namespace and of the namespaces its spec.allowedNamespaces lists",
    );
    expect((await py.log()).length).toBe(before);
    const shared = await message(await post(gatewayUrl('shared'), TOKENS.teamb, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'from team-b' } } }));
    expect(shared.result.content[0].text).toBe('from team-b');
  });

  it('a path under /upstreams that is no gateway path is a JSON-RPC 404 saying which paths are', async () => {
    // post() adds /mcp: /upstreams/mcp, /upstreams/default/mcp, …
    for (const path of ['/upstreams', '/upstreams/default', '/upstreams/default/py/mcp/extra', '/upstreams/a/b/c']) {
      const r = await post(`${s.pg.url}${path}`, TOKENS.bot, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      expect(r.status, path).toBe(404);
      expect(((await r.json()) as any).error, path).toEqual({ code: -32000, message: 'Not found: the gateway serves /upstreams/<namespace>/<name>/mcp' });
    }
  });

  it('a caller bound to no agent is refused; the upstream is never called', async () => {
    const stranger = await writeTokenFile({ stranger: 'stranger-token' });
    const before = (await py.log()).length;
    try {
      const srv = await startTestServer(s.configDir, ['--auth', 'token', '--token-file', stranger.file], { token: 'stranger-token' }).catch((e: Error) => e);
      if (srv instanceof Error) throw srv;
      try {
        const r = await post(`${srv.pg.url}/upstreams/default/py`, 'stranger-token', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
        expect(r.status).toBe(403);
        expect(((await r.json()) as any).error.message).toMatch(/bound to 0 GuardAgents; the gateway acts for exactly one/);
      } finally {
        await srv.close();
      }
    } finally {
      await stranger.remove();
    }
    await eventually(async () => (await py.log()).length, (n) => n === before, 'no new upstream request');
  });
});

describe.skipIf(!python.ok)('a tools/call reaches an upstream as decided, whatever its JSON decoder (docs/decisions.md, "The gateway")', () => {
  /** POST `text` as it is (keys and escapes as an attacker writes them) to the recording upstream, as the agent `bot`. */
  const send = async (text: string, headers: Record<string, string> = {}) => {
    const r = await fetch(`${gatewayUrl('recorder')}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${TOKENS.bot}`, ...headers },
      body: text,
    });
    return { status: r.status, body: (await r.json()) as any };
  };
  const call = (params: string, id = 1) => `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":${params}}`;

  it('the legitimate calls are forwarded as the gateway built them, the 2026-07-28 envelope and routing headers included', async () => {
    recorded.length = 0;
    expect((await send(call('{"name":"refund","arguments":{"amount":100}}', 1))).body.result.content[0].text).toBe('ran');
    const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 't', version: '1' } };
    const modern = call(`{"name":"echo","arguments":{"text":"hi"},"_meta":${JSON.stringify(meta)}}`, 2);
    expect((await send(modern, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'echo' })).body.result.content[0].text).toBe('ran');
    expect(recorded.map((r) => r.body)).toEqual(['{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"amount":100}}}', modern]);
    expect(recorded[1]!.headers).toMatchObject({ 'mcp-method': 'tools/call', 'mcp-name': 'echo' });
  });

  // What a Go upstream reads otherwise (src/gateway/smuggling-fixture.ts): delete_repo (denied
  // here), an amount of 900 (needs approval here).
  it.each(smugglingShapes('refund'))('refused before deciding, naming both keys: $shape', async ({ params, where, keys }) => {
    recorded.length = 0;
    const r = await send(call(params, 3));
    expect(r.body.error).toMatchObject({ code: -32602, message: expect.stringContaining(`${where} holds the keys ${JSON.stringify(keys[0])} and ${JSON.stringify(keys[1])}, which are equal ignoring case`) });
    expect(recorded).toEqual([]);
  });

  it.each([
    { method: '"Tools/Call"', error: 'Invalid Request: method "Tools/Call" is not "tools/call" but equals it ignoring case' },
    { method: '"tools/call "', error: 'Invalid Request: method "tools/call " has a space, a control or a non-ASCII character' },
    { method: '"ping","Method":"tools/call"', error: 'Invalid Request: the message has the key "Method", which is not "method" but equals it ignoring case' },
  ])('a method spelled like tools/call is refused, never passed through undecided: $method', async ({ method, error }) => {
    recorded.length = 0;
    const r = await send(call('{"name":"delete_repo","arguments":{}}', 4).replace('"tools/call"', method));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: -32600, message: expect.stringContaining(error) });
    expect(recorded).toEqual([]);
  });

  it('the refusals are counted by outcome in policyguard_gateway_requests_total', async () => {
    await send(call('{"name":"read_file","Name":"delete_repo","arguments":{}}', 5));
    await send(call('{"name":"delete_repo","arguments":{}}', 6).replace('"tools/call"', '"Tools/Call"'));
    const metrics = await (await fetch(`${s.pg.url}/metrics`)).text();
    expect(metrics).toMatch(/policyguard_gateway_requests_total\{method="tools\/call",outcome="ambiguous_key"\} [1-9]/);
    expect(metrics).toMatch(/policyguard_gateway_requests_total\{method="any",outcome="lookalike_method"\} [1-9]/);
  });
});
