/**
 * What a user sees when the CLI cannot do what was asked: one line saying what to fix, never a
 * stack trace; and the flags a user looks for (`--help`, `--version`).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
  it('with --log-format json, a server that cannot start says why in one JSON line, as its other lines are', async () => {
    const r = await runCli(['serve', '--standalone', '--config-dir', SAMPLES, '--data-dir', join(root, 'port-json'), '--port', String(port), '--log-format', 'json']);
    expect(r.code).toBe(2);
    const last = r.stderr.trimEnd().split('\n').at(-1)!;
    expect(JSON.parse(last)).toMatchObject({ level: 'error', msg: expect.stringMatching(new RegExp(`^cannot start: 127\\.0\\.0\\.1:${port} is already in use .*--port`)) });
    // A flag the server refuses, with JSON asked for by the environment (as the image does): one JSON line too.
    const bad = await runCli(['serve', '--standalone', '--config-dir', SAMPLES, '--data-dir', join(root, 'port-json'), '--port', 'nope'], { ...process.env, POLICYGUARD_LOG_FORMAT: 'json' });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(bad.stderr)).toMatchObject({ level: 'error', msg: expect.stringMatching(/^cannot start: invalid configuration:\n +--port \(POLICYGUARD_PORT\): expected a port number/) });
    // A flag serve does not know (a typo in the chart's extraArgs), JSON asked for by the flag.
    const unknown = await runCli(['serve', '--log-format=json', '--prot', '8000']);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stderr)).toMatchObject({ level: 'error', msg: "cannot start: Unknown option '--prot'; did you mean --port?" });
  });
  it('a missing file to verify says so without a stack trace', async () => {
    const r = await runCli(['audit', 'verify', join(root, 'no-such-audit')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/no such file or folder: .*no-such-audit/);
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });
});

const HINT = 'Run `policyguard help` for the flags.\n';

describe('a usage error is one line and the hint, never the whole help', () => {
  it.each([
    ['serve --prot', ['serve', '--prot', '18301'], "Unknown option '--prot'; did you mean --port?"],
    ['check --tagret', ['check', '--tagret', 'drop_table'], "Unknown option '--tagret'; did you mean --target?"],
    ['approvals --data-dri', ['approvals', 'list', '--data-dri', 'x'], "Unknown option '--data-dri'; did you mean --data-dir?"],
    ['crds --writ', ['crds', '--writ'], "Unknown option '--writ'; did you mean --write?"],
    ['crds --write=DIR (DIR is a positional)', ['crds', '--write=out'], "Option '--write' does not take an argument"],
    ['crds with two modes', ['crds', '--admission', '--write'], 'usage: policyguard crds [--write [DIR] | --admission]'],
    ['an option near no flag', ['serve', '--frobnicate'], "Unknown option '--frobnicate'"],
    ['an unknown short option', ['approvals', 'list', '-x'], "Unknown option '-x'"],
    ['a misspelt command', ['serv'], 'unknown command "serv"; did you mean serve?'],
    ['a command name an object inherits', ['constructor'], 'unknown command "constructor"'],
    ['check without --target', ['check', '--config-dir', SAMPLES, '--agent-id', 'a'], 'check needs --target'],
    ['check with --parameters that are not JSON', ['check', '--config-dir', SAMPLES, '--agent-id', 'a', '--target', 't', '--parameters', '{oops'], "--parameters is not valid JSON: Expected property name or '}' in JSON at position 1 (line 1 column 2)"],
    ['serve with a flag value missing (its hint not repeated)', ['serve', '--port'], "Option '--port <value>' argument missing"],
    // Checked against serve's own flag types: -1 is --port's value, and parseArgs says how to write it.
    ['serve with a value that starts with a dash', ['serve', '--port', '-1'], "Option '--port' argument is ambiguous.\nDid you forget to specify the option argument for '--port'?\nTo specify an option argument starting with a dash use '--port=-XYZ'."],
  ])('%s', async (_what, args, message) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`policyguard: ${message}\n${HINT}`);
  });
});

describe('Kubernetes connection failures are one line', () => {
  let port: number;
  let kubeconfig: string;
  beforeAll(async () => {
    // A port nothing listens on: taken, then freed.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    kubeconfig = join(root, 'kubeconfig');
    await writeFile(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:${port}"}}]\nusers: [{name: u, user: {token: t}}]\n` +
        'contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n',
    );
  });
  /** No kubeconfig anywhere: an empty home, no KUBECONFIG. */
  const noKubeconfig = (): NodeJS.ProcessEnv => {
    const { KUBECONFIG: _unset, ...env } = process.env;
    return { ...env, HOME: root };
  };

  it.each([
    ['approvals list', ['approvals', 'list']],
    // Not a refusal (exit 1): there was no cluster to ask.
    ['approvals approve', ['approvals', 'approve', 'apr-3f9c2a1b7d4e', '-n', 'team-a']],
    ['audit verify --configmap', ['audit', 'verify', '--configmap', '--namespace', 'ns', '--replica', 'r']],
  ])('%s: an API server nobody answers on names it and the cause, without a stack', async (_what, args) => {
    const reason = `cannot reach the Kubernetes API server https://127.0.0.1:${port}`;
    const flag = await runCli([...args, '--kubeconfig', kubeconfig]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe(`policyguard: ${reason} (from --kubeconfig): ECONNREFUSED\n`);
    const env = await runCli(args, { ...noKubeconfig(), KUBECONFIG: kubeconfig });
    expect(env.code).toBe(2);
    expect(env.stderr).toBe(`policyguard: ${reason} (from KUBECONFIG or ~/.kube/config): ECONNREFUSED\n`);
  });
  it('with no kubeconfig at all, says so and how to work standalone', async () => {
    const r = await runCli(['approvals', 'list'], noKubeconfig());
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`policyguard: no kubeconfig found (no --kubeconfig, KUBECONFIG unset, no ~/.kube/config, not in a pod); for standalone pass --data-dir DIR\n${HINT}`);
  });
});
