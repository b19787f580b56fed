/**
 * An approved call the gateway cannot make leaves its approval unused (docs/decisions.md, "The
 * gateway", `Mcp-Param-*` headers): a real PolicyGuard (standalone, `--auth token`), a real
 * upstream built with the official MCP SDK whose tool declares an `x-mcp-header` argument (it
 * refuses a 2026-07-28 call without the header), the real CLI deciding the GuardApproval, and
 * the official client.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { fromJsonSchema, McpServer, type JsonSchemaType } from '@modelcontextprotocol/server';
import { ANONYMOUS } from '../../src/auth/authenticate.js';
import { classifyMcpRequest, createMcpEndpoint, MODERN_REVISION } from '../../src/mcp/revisions.js';
import { runCli } from './cli.js';
import { readResult } from './clients.js';
import { eventually } from './eventually.js';
import { connect, startTestServer, writeTokenFile, type TestServer } from './harness.js';

const TOKEN = 'bot-token-0001';

/** The tools/call requests the upstream got. */
const upstreamCalls: unknown[] = [];
/** While set, a tools/list at `/slow/mcp` waits for `slowListing.release()`, after telling `slowListing.arrived`. */
let slowListing: { arrived: () => void; release: Promise<void> } | undefined;
let upstream: Server;
let root: string;
let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
let s: TestServer;

function sdkServer(): McpServer {
  const server = new McpServer({ name: 'bank', version: '1.0.0' });
  const inputSchema = fromJsonSchema({ type: 'object', properties: { account: { type: 'string', 'x-mcp-header': 'Account' }, amount: { type: 'integer' } } } as JsonSchemaType);
  server.registerTool('transfer', { description: 'Move money', inputSchema }, async (args) => ({ content: [{ type: 'text', text: `moved ${JSON.stringify(args)}` }] }));
  return server;
}

beforeAll(async () => {
  const endpoint = createMcpEndpoint(sdkServer, () => undefined);
  upstream = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { method?: string };
      if (body.method === 'tools/call') upstreamCalls.push(body);
      const serve = () => void endpoint.serve(req, res, body, classifyMcpRequest(req, body), ANONYMOUS);
      if (req.url === '/slow/mcp' && body.method === 'tools/list' && slowListing) {
        slowListing.arrived();
        return void slowListing.release.then(serve);
      }
      serve();
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  root = await mkdtemp(join(tmpdir(), 'pg-approval-headers-'));
  tokens = await writeTokenFile({ bot: TOKEN });
  const fixture = join(root, 'fixture');
  await mkdir(fixture);
  await writeFile(
    join(fixture, 'bank.yaml'),
    `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: bot}
spec:
  trustLevel: medium
  identities: [{user: "token:bot"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: bank}
spec:
  url: http://127.0.0.1:${(upstream.address() as AddressInfo).port}/mcp
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: slow-bank}
spec:
  url: http://127.0.0.1:${(upstream.address() as AddressInfo).port}/slow/mcp
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: people-decide}
spec:
  rules:
    - name: transfers
      match: {tools: ["transfer"]}
      action: require_approval
      message: Transfers need a person
`,
  );
  // The SDK server warns of nothing here; its client may warn of the undeclared outputSchema.
  vi.spyOn(console, 'warn').mockImplementation(() => undefined);
  s = await startTestServer(fixture, ['--auth', 'token', '--token-file', tokens.file, '--approval-hold', '0s'], { token: TOKEN });
}, 120_000);
afterAll(async () => {
  vi.restoreAllMocks();
  await s?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
  await tokens?.remove();
  if (root) await rm(root, { recursive: true, force: true });
});

/** A 2026-07-28 tools/call of transfer sent as it is through `upstream`, with an `Mcp-Param-Account` header. */
async function transfer(args: Record<string, unknown>, accountHeader: string, upstream = 'bank', signal?: AbortSignal): Promise<{ status: number; body: any }> {
  const r = await fetch(`${s.pg.url}/upstreams/default/${upstream}/mcp`, {
    method: 'POST',
    ...(signal ? { signal } : {}),
    headers: {
      authorization: `Bearer ${TOKEN}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': MODERN_REVISION,
      'mcp-method': 'tools/call',
      'mcp-name': 'transfer',
      'mcp-param-account': accountHeader,
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'transfer', arguments: args, _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN_REVISION, 'io.modelcontextprotocol/clientCapabilities': {} } },
    }),
  });
  return { status: r.status, body: await r.json() };
}

/** The value of one series on /metrics (`name{labels}` as exported), or undefined. */
async function metric(series: string): Promise<number | undefined> {
  const line = (await (await fetch(`${s.pg.url}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const approvals = async () => JSON.parse((await runCli(['approvals', 'list', '-o', 'json', '--data-dir', s.dataDir])).stdout) as any[];

it('an approved call refused for a header that disagrees with its body does not use the approval: the corrected call goes through on it', async () => {
  const args = { account: 'acme', amount: 900 };
  const asked = await transfer(args, 'acme');
  expect(asked.status).toBe(200);
  expect(asked.body.result.isError).toBe(true);
  const [approval] = await approvals();
  expect(approval.status?.phase ?? 'Pending').toBe('Pending');
  const name = approval.metadata.name as string;
  expect((await runCli(['approvals', 'approve', name, '--data-dir', s.dataDir])).code).toBe(0);

  const refused = await transfer(args, 'evil');
  expect(refused.status).toBe(400);
  expect(refused.body.error).toEqual({
    code: -32020,
    message: `Header mismatch: the Mcp-Param-Account header says "evil" but the body carries arguments.account="acme"; approval ${name} is not used, and allows the call once it can be made`,
  });
  expect((await approvals()).find((a) => a.metadata.name === name).status.phase).toBe('Approved');
  expect(upstreamCalls).toEqual([]);

  // The official client, corrected: the same call, allowed once on the same approval.
  const client = await connect(`${s.pg.url}/upstreams/default/bank`, TOKEN);
  try {
    const result = readResult(await client.callTool({ name: 'transfer', arguments: args }));
    expect(result.isError).toBeFalsy();
    expect(result.json).toBe('moved {"account":"acme","amount":900}');
  } finally {
    await client.close();
  }
  expect((await approvals()).find((a) => a.metadata.name === name).status.phase).toBe('Used');
  expect(upstreamCalls).toHaveLength(1);

  // The audit log: the refused call is a deny that says why and names the approval, still Approved.
  await s.restart();
  const dir = join(s.dataDir, 'audit');
  let text = '';
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.jsonl'))) text += await readFile(join(dir, f), 'utf8');
  const decisions = text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.action.type === 'tool_call');
  expect(decisions.map((r) => [r.evaluation.decision, r.approval?.phase])).toEqual([
    ['require_approval', 'Pending'],
    ['deny', 'Approved'],
    ['allow', 'Used'],
  ]);
  expect(decisions[1].evaluation.reason).toBe(`Transfers need a person; ${refused.body.error.message}`);
});

it('an approved call whose client goes away while the gateway lists the upstream does not use the approval', async () => {
  const args = { account: 'initech', amount: 50 };
  expect((await transfer(args, 'initech', 'slow-bank')).body.result.isError).toBe(true); // asks
  const name = (await approvals()).find((a) => a.spec.upstream === 'default/slow-bank').metadata.name as string;
  expect((await runCli(['approvals', 'approve', name, '--data-dir', s.dataDir])).code).toBe(0);

  let release!: () => void;
  const arrived = new Promise<void>((resolve) => (slowListing = { arrived: resolve, release: new Promise((r) => (release = r)) }));
  const abort = new AbortController();
  const call = transfer(args, 'initech', 'slow-bank', abort.signal).catch((err: unknown) => err);
  await arrived; // the gateway lists the upstream to learn transfer's headers; the approval is not used yet
  abort.abort();
  expect(await call).toBeInstanceOf(Error);
  const abortedRequests = 'policyguard_http_request_duration_seconds_count{route="/upstreams/:namespace/:name/mcp",method="POST",status="aborted"}';
  await eventually(() => metric(abortedRequests), (n) => n === 1, 'the server to see the client go away');
  release();
  slowListing = undefined;
  // Its decision is a deny, counted once the gateway has made it (nothing else here is denied).
  await eventually(() => metric('policyguard_gateway_requests_total{method="tools/call",outcome="denied"}'), (n) => n === 1, 'the gateway to refuse the call');

  // Still Approved, and the upstream was not called: the same call, made again, goes through on it.
  const before = upstreamCalls.length;
  expect((await approvals()).find((a) => a.metadata.name === name).status.phase).toBe('Approved');
  expect((await transfer(args, 'initech', 'slow-bank')).body.result).toMatchObject({ content: [{ type: 'text', text: 'moved {"account":"initech","amount":50}' }] });
  expect(upstreamCalls).toHaveLength(before + 1);
  expect((await approvals()).find((a) => a.metadata.name === name).status.phase).toBe('Used');
});
