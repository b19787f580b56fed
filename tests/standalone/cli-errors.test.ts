/**
 * What a user sees when the CLI cannot do what was asked: one line saying what to fix, never a
 * stack trace; and the flags a user looks for (`--help`, `--version`).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_FLAG_NAMES } from '../../src/config.js';
import { SAMPLES } from './harness.js';
import { runCli } from './cli.js';

const STACK_FRAME = /\n\s+at /;
let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-cli-errors-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('help and version', () => {
  it('`serve --help` exits 0 and lists every serve flag', async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.code).toBe(0);
    for (const flag of SERVE_FLAG_NAMES) expect(r.stdout, `--${flag} in the help`).toContain(`--${flag}`);
  });
  it('`--version` prints the package version', async () => {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`policyguard ${pkg.version}\n`);
  });
});

describe('errors a user meets get one line with a hint', () => {
  let busy: Server;
  let port: number;
  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    port = (busy.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((r) => busy.close(r));
  });

  it('a port in use names the address and suggests --port', async () => {
    const r = await runCli(['serve', '--standalone', '--config-dir', SAMPLES, '--data-dir', join(root, 'port'), '--port', String(port)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`policyguard: 127\\.0\\.0\\.1:${port} is already in use .*--port`));
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });
  it('a missing config folder says so without a stack trace', async () => {
    const r = await runCli(['serve', '--standalone', '--config-dir', join(root, 'nope'), '--data-dir', join(root, 'd'), '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--config-dir .*nope is not a folder/);
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });
  it('a missing file to verify says so without a stack trace', async () => {
    const r = await runCli(['audit', 'verify', join(root, 'no-such-audit')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/no such file or folder: .*no-such-audit/);
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });
});
