/**
 * Start a real PolicyGuard (standalone mode) on a free loopback port and connect the official
 * MCP SDK client (v2) to it over Streamable HTTP. The client negotiates the protocol revision
 * (`auto`: 2026-07-28 with this server); `revision: 'legacy'` makes it a 2025-11-25 client.
 */
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { sha256 } from '../../src/auth/authenticate.js';
import { parseServeConfig } from '../../src/config.js';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { silentLogger } from '../../src/log.js';

export interface TestServer {
  pg: RunningPolicyGuard;
  client: Client;
  configDir: string;
  dataDir: string;
  /** Call a tool and return its parsed JSON text and the raw result. */
  call(name: string, args?: Record<string, unknown>): Promise<{ json: any; isError: boolean; structured: unknown }>;
  /** Restart the server on the same folders (a new process would see the same). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** How the harness client picks a protocol revision: negotiate (ends on 2026-07-28 here) or the 2025 `initialize`. */
export type ClientRevision = 'auto' | 'legacy';

export interface TestServerOptions {
  /** The bearer token the harness client sends (for servers started with `--auth token`). */
  token?: string;
  revision?: ClientRevision;
}

export async function startTestServer(fixture: string, extraFlags: string[] = [], opts: TestServerOptions = {}): Promise<TestServer> {
  const root = await mkdtemp(join(tmpdir(), 'policyguard-test-'));
  const configDir = join(root, 'config');
  const dataDir = join(root, 'data');
  await cp(fixture, configDir, { recursive: true });
  const config = parseServeConfig(
    ['--standalone', '--config-dir', configDir, '--data-dir', dataDir, '--port', '0', ...extraFlags],
    {},
  );
  let pg = await startServer(config, silentLogger);
  let client = await connect(pg.url, opts.token, opts.revision);

  const server: TestServer = {
    get pg() {
      return pg;
    },
    get client() {
      return client;
    },
    configDir,
    dataDir,
    async call(name, args = {}) {
      const res = await client.callTool({ name, arguments: args });
      const text = (res.content as Array<{ type: string; text: string }>)[0]!.text;
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      return { json, isError: res.isError === true, structured: res.structuredContent };
    },
    async restart() {
      await client.close();
      await pg.close();
      pg = await startServer(config, silentLogger);
      client = await connect(pg.url, opts.token, opts.revision);
    },
    async close() {
      await client.close();
      await pg.close();
      await rm(root, { recursive: true, force: true });
    },
  };
  return server;
}

/** A token file for `--auth token` (`<sha256 of token> <name>` per line) in a new temporary folder. */
export async function writeTokenFile(tokens: Record<string, string>): Promise<{ file: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'policyguard-tokens-'));
  const file = join(dir, 'tokens');
  await writeFile(file, Object.entries(tokens).map(([name, t]) => `${sha256(t)}  ${name}`).join('\n') + '\n');
  return { file, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A tool result as tests read it: the JSON of its text (or the text itself) and whether it is an error. */
export interface ToolAnswer {
  json: any;
  isError: boolean;
}

/** One tool call by a fresh official MCP client that sends `token` as its bearer token. */
export async function callAs(url: string, token: string | undefined, name: string, args: Record<string, unknown>, revision: ClientRevision = 'auto'): Promise<ToolAnswer> {
  const client = await connect(url, token, revision);
  try {
    const res = await client.callTool({ name, arguments: args });
    const text = (res.content as Array<{ text: string }>)[0]!.text;
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch {
      // plain error text
    }
    return { json, isError: res.isError === true };
  } finally {
    await client.close();
  }
}

/** The official v2 client, connected to `url`/mcp; with `auto` it must end on 2026-07-28 against this server. */
export async function connect(url: string, token?: string, revision: ClientRevision = 'auto'): Promise<Client> {
  const client = new Client({ name: 'policyguard-tests', version: '1.0.0' }, { versionNegotiation: { mode: revision } });
  const requestInit = token ? { headers: { authorization: `Bearer ${token}` } } : undefined;
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), requestInit ? { requestInit } : {}));
  return client;
}

export const SEED_FIXTURE = new URL('../fixtures/seed', import.meta.url).pathname;
export const SAMPLES = new URL('../../config-samples', import.meta.url).pathname;

/**
 * Servers over config folders written from `files` (names may hold subfolders), one at a time,
 * for tests that change those files while the server runs; call `closeAll` in `afterEach`.
 *
 * @example
 *   const servers = folderServers('policyguard-loading-');
 *   afterEach(() => servers.closeAll());
 *   const srv = await servers.serve({ 'deny.yaml': text });
 */
export function folderServers(prefix: string): { serve(files: Record<string, string>): Promise<TestServer>; closeAll(): Promise<void> } {
  let current: TestServer | undefined;
  const roots: string[] = [];
  return {
    async serve(files) {
      const dir = await mkdtemp(join(tmpdir(), prefix));
      roots.push(dir);
      for (const [name, text] of Object.entries(files)) {
        await mkdir(join(dir, name, '..'), { recursive: true });
        await writeFile(join(dir, name), text);
      }
      current = await startTestServer(dir);
      return current;
    },
    async closeAll() {
      await current?.close();
      current = undefined;
      for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * A signed audit log as a real server leaves it, for tests that then edit its files: a server
 * over the seed fixture, with a fresh audit key written in `root`, makes six decisions (three
 * denied) and stops, which flushes the log and anchors its last record.
 *
 * @example const { key, server, auditDir } = await writeSignedLog(root);
 */
export async function writeSignedLog(root: string): Promise<{ key: string; server: TestServer; auditDir: string }> {
  const key = join(root, 'audit.key');
  await writeFile(key, `${randomBytes(48).toString('base64')}\n`);
  const server = await startTestServer(SEED_FIXTURE, ['--audit-key-file', key]);
  for (const target of ['read_a', 'delete_b', 'read_c', 'delete_d', 'read_e', 'read_f']) {
    await server.call('validate_action', { action_type: 'tool_call', target, agent_id: 'test-low' });
  }
  await server.pg.close();
  return { key, server, auditDir: join(server.dataDir, 'audit') };
}
