/**
 * Real upstream MCP servers for the gateway tests, started as child processes on free loopback
 * ports: the Python SDK's MCPServer (stateless, JSON answers; tests/fixtures/python/
 * upstream_server.py) and `@modelcontextprotocol/server-everything` in its Streamable HTTP
 * mode (sessions, SSE, progress, server-to-client requests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { ROOT } from './cli.js';
import { pythonWithMcp } from './python-client.js';

export interface Upstream {
  url: string;
  /** Lines the upstream wrote about the requests it got (Python upstream only). */
  log(): Promise<string[]>;
  stop(): Promise<void>;
}

/** A loopback port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function started(child: ChildProcess, ready: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready:\n${out}`)));
  });
}

const stopper = (child: ChildProcess) => () =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });

/**
 * The Python upstream. `logFile` receives one line per request (`method tool auth=…`);
 * `expectedAuthorization`, when set, is the only Authorization header it accepts.
 */
export async function startPythonUpstream(logFile: string, expectedAuthorization?: string): Promise<Upstream> {
  const python = await pythonWithMcp();
  const port = await freePort();
  const child = spawn(python, [new URL('../fixtures/python/upstream_server.py', import.meta.url).pathname, String(port)], {
    env: { ...process.env, UPSTREAM_LOG: logFile, ...(expectedAuthorization ? { EXPECTED_AUTHORIZATION: expectedAuthorization } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await started(child, /session manager started/, 'the Python upstream');
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    log: async () => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').filter(Boolean),
    stop: stopper(child),
  };
}

/** `@modelcontextprotocol/server-everything streamableHttp` (the v1 SDK, with sessions). */
export async function startEverythingUpstream(): Promise<Upstream> {
  const port = await freePort();
  const child = spawn(process.execPath, [`${ROOT}node_modules/@modelcontextprotocol/server-everything/dist/index.js`, 'streamableHttp'], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await started(child, /listening on port/, 'server-everything');
  return { url: `http://127.0.0.1:${port}/mcp`, log: async () => [], stop: stopper(child) };
}
