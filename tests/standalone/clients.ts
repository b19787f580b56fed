/**
 * The real MCP clients the server is tested with, behind one small interface, so the same
 * scenarios run through each: the official TypeScript SDK v2 (negotiating, so it ends on
 * 2026-07-28), the v1 SDK (1.32.x, what agents written for the original project use: the
 * 2025-11-25 initialize), the Python SDK from PyPI, and the MCP Inspector CLI.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ROOT } from './cli.js';
import { connect, type ToolAnswer } from './harness.js';
import { pythonWithMcp, startPythonClient } from './python-client.js';

export type ClientKind = 'sdk-v2' | 'sdk-v1' | 'python' | 'inspector';

/** What the scenarios need from a tool listing. */
export interface ListedTool {
  name: string;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  annotations?: { readOnlyHint?: boolean };
}

export interface TestClient {
  /** The protocol revision the client ended on, when the client says (the Inspector CLI does not). */
  revision?: string;
  listTools(): Promise<ListedTool[]>;
  call(name: string, args?: Record<string, unknown>): Promise<ToolAnswer & { structured: unknown }>;
  close(): Promise<void>;
}

/** A tools/call result as tests read it: the JSON of its first text (or the text itself). */
export function readResult(res: { content?: unknown; isError?: unknown; structuredContent?: unknown }): ToolAnswer & { structured: unknown } {
  const text = (res.content as Array<{ text?: string }> | undefined)?.[0]?.text ?? '';
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // plain error text
  }
  return { json, isError: res.isError === true, structured: res.structuredContent };
}

async function sdkV2(url: string): Promise<TestClient> {
  const client = await connect(url);
  return {
    revision: client.getNegotiatedProtocolVersion(),
    listTools: async () => (await client.listTools()).tools,
    call: async (name, args = {}) => readResult(await client.callTool({ name, arguments: args })),
    close: () => client.close(),
  };
}

async function sdkV1(url: string): Promise<TestClient> {
  const client = new V1Client({ name: 'policyguard-tests-v1', version: '1.0.0' });
  const transport = new V1Transport(new URL(`${url}/mcp`));
  await client.connect(transport);
  return {
    revision: transport.protocolVersion,
    listTools: async () => (await client.listTools()).tools,
    // v1's result type also admits the 2024 `toolResult` shape, which this server never sends.
    call: async (name, args = {}) => readResult((await client.callTool({ name, arguments: args })) as { content?: unknown }),
    close: () => client.close(),
  };
}

async function python(url: string): Promise<TestClient> {
  const py = await startPythonClient(await pythonWithMcp(), `${url}/mcp`, 'auto');
  return {
    revision: py.protocolVersion,
    listTools: async () => py.tools,
    async call(name, args = {}) {
      const reply = await py.call(name, args);
      if (reply.error) throw new Error(`the Python client raised ${reply.error}`);
      return readResult(reply);
    },
    close: () => py.close(),
  };
}

const INSPECTOR = join(ROOT, 'node_modules', '.bin', 'mcp-inspector');

/**
 * One Inspector CLI run against `url`/mcp (`--format json`); resolves with the `result` it
 * prints. The CLI keeps settings under $HOME/.mcp-inspector, so it runs with a throwaway HOME.
 *
 * @example const { tools } = await inspector(url, home, ['--method', 'tools/list']);
 */
export function inspector(url: string, home: string, args: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    execFile(INSPECTOR, ['--cli', `${url}/mcp`, '--transport', 'http', '--format', 'json', '--quiet', ...args], { cwd: ROOT, env: { ...process.env, HOME: home } }, (err, stdout, stderr) => {
      let printed: { result?: unknown } | undefined;
      try {
        printed = JSON.parse(stdout);
      } catch {
        // reported below
      }
      if (printed && 'result' in printed) resolve(printed.result);
      else reject(new Error(`mcp-inspector ${args.join(' ')} failed (${err?.message ?? 'no result'}):\n${stdout}\n${stderr}`));
    });
  });
}

async function inspectorCli(url: string): Promise<TestClient> {
  const home = await mkdtemp(join(tmpdir(), 'policyguard-inspector-'));
  const era = ['--protocol-era', 'auto'];
  return {
    listTools: async () => (await inspector(url, home, [...era, '--method', 'tools/list'])).tools,
    call: async (name, args = {}) => readResult(await inspector(url, home, [...era, '--method', 'tools/call', '--tool-name', name, '--tool-args-json', JSON.stringify(args)])),
    close: () => rm(home, { recursive: true, force: true }),
  };
}

/**
 * Connect a client of `kind` to the PolicyGuard at `url` (without /mcp).
 *
 * @example const c = await openClient('sdk-v1', s.pg.url); await c.call('validate_action', {...});
 */
export function openClient(kind: ClientKind, url: string): Promise<TestClient> {
  switch (kind) {
    case 'sdk-v2':
      return sdkV2(url);
    case 'sdk-v1':
      return sdkV1(url);
    case 'python':
      return python(url);
    case 'inspector':
      return inspectorCli(url);
  }
}
