/**
 * The Python MCP SDK (`mcp` from PyPI, pinned) as a test client: a virtualenv cached under
 * ~/.cache/policyguard/python-mcp-<version> (created on first use, with network access to PyPI,
 * then reused), and tests/fixtures/python/mcp_client.py driven over stdin/stdout.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { policyguardCacheDir } from '../controlplane/binary.js';

/** The `mcp` release the tests install (the newest on PyPI when written). */
export const PYTHON_MCP_VERSION = '2.3.0';

const SCRIPT = new URL('../fixtures/python/mcp_client.py', import.meta.url).pathname;

/** Whether python3 with venv is here, and if not, why: tests skip with this reason. */
export function pythonAvailability(): { ok: true } | { ok: false; reason: string } {
  const r = spawnSync('python3', ['-c', 'import venv, ensurepip'], { encoding: 'utf8' });
  if (r.error) return { ok: false, reason: `python3 was not found on PATH (${r.error.message}); install Python 3.10+ with venv to run the Python client tests` };
  if (r.status !== 0) return { ok: false, reason: `python3 cannot create virtualenvs (${r.stderr.trim().split('\n').pop()}); install the venv module (e.g. apt-get install python3-venv)` };
  return { ok: true };
}

function venvDir(): string {
  return policyguardCacheDir(`python-mcp-${PYTHON_MCP_VERSION}`);
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${out.slice(-2000)}`))));
  });
}

/**
 * The cached virtualenv's python, creating it (python3 -m venv, pip install mcp==VERSION) when
 * missing. Built beside the cache folder and renamed into place, so a run that dies halfway
 * leaves nothing half-installed and two runs at once do not share a folder being written.
 */
export async function pythonWithMcp(): Promise<string> {
  const dir = venvDir();
  const python = join(dir, 'bin', 'python');
  if (existsSync(python)) return python;
  await mkdir(join(dir, '..'), { recursive: true });
  const building = `${dir}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  try {
    await run('python3', ['-m', 'venv', building]);
    await run(join(building, 'bin', 'python'), ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', `mcp==${PYTHON_MCP_VERSION}`]);
    await rename(building, dir);
  } catch (err) {
    await rm(building, { recursive: true, force: true });
    if (existsSync(python)) return python; // another run finished first
    throw err;
  }
  return python;
}

/** What the script sends back for a call: the result, or what the SDK raised. */
export type PythonReply = { content?: Array<{ type: string; text?: string }>; structuredContent?: unknown; isError?: boolean; error?: string };

export interface PythonClient {
  /** The protocol revision the Python client ended on. */
  protocolVersion: string;
  tools: Array<{ name: string; inputSchema: Record<string, unknown>; outputSchema?: Record<string, unknown>; annotations?: { readOnlyHint?: boolean } }>;
  call(name: string, args: Record<string, unknown>): Promise<PythonReply>;
  close(): Promise<void>;
}

/**
 * Start the Python client against `url` (…/mcp). `mode`: `auto` negotiates (2026-07-28 with
 * PolicyGuard), `legacy` uses the 2025 initialize.
 *
 * @example const py = await startPythonClient(await pythonWithMcp(), `${pg.url}/mcp`, 'auto');
 */
export async function startPythonClient(python: string, url: string, mode: 'auto' | 'legacy'): Promise<PythonClient> {
  const child: ChildProcessWithoutNullStreams = spawn(python, [SCRIPT, url, mode]);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<any> => {
    const line = await lines.next();
    if (line.done) throw new Error(`the Python client exited (${await exited}):\n${stderr.slice(-3000)}`);
    return JSON.parse(line.value);
  };
  const hello = await next();
  // One call at a time: replies come back in order.
  let queue = Promise.resolve();
  return {
    protocolVersion: hello.protocolVersion,
    tools: hello.tools,
    call(name, args) {
      const reply = queue.then(() => {
        child.stdin.write(JSON.stringify({ name, arguments: args }) + '\n');
        return next();
      });
      queue = reply.then(
        () => undefined,
        () => undefined,
      );
      return reply;
    },
    async close() {
      child.stdin.end();
      await exited;
    },
  };
}
