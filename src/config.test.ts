import { describe, expect, it } from 'vitest';
import { parseServeConfig, unknownEnvironment, weakenedProtections } from './config.js';

describe('size flags', () => {
  const limit = (v: string) => parseServeConfig(['--gateway-response-limit', v, '--data-dir', '/tmp/x'], {}).gatewayResponseLimit;
  it('--gateway-response-limit is bytes, in units of 1,024, 16 MiB by default', () => {
    expect(parseServeConfig(['--data-dir', '/tmp/x'], {}).gatewayResponseLimit).toBe(16 * 1024 * 1024);
    expect(limit('512kb')).toBe(512 * 1024);
    expect(limit('1GB')).toBe(1024 ** 3);
    expect(limit('100b')).toBe(100);
  });
  it.each(['16', '16 mb', '1.5mb', 'lots', '16tb'])('%j is refused, saying what a size looks like', (v) => {
    expect(() => limit(v)).toThrow(/--gateway-response-limit.*use a size like 512kb, 16mb or 1gb/);
  });
});

describe('number and boolean flags', () => {
  const parse = (env: Record<string, string>, argv: string[] = []) => parseServeConfig(['--data-dir', '/tmp/x', ...argv], env);

  it.each([
    ['port', '', 'a port number (0 to 65535)'],
    ['port', 'eighty', 'a port number (0 to 65535)'],
    ['port', ' 8000', 'a port number (0 to 65535)'],
    ['port', '1e3', 'a port number (0 to 65535)'],
    ['port', '65536', 'a port number (0 to 65535)'],
    ['auto-register-limit', '', 'a whole number (0 or more)'],
    ['auto-register-limit', '-1', 'a whole number (0 or more)'],
    ['auto-register-per-caller', '1.5', 'a whole number (0 or more)'],
    ['approval-pending-limit', '0', 'a whole number from 1 to 10000'],
    ['max-connections', '0', 'a whole number from 1 to 1000000'],
    ['auto-register', '', 'true or false'],
    ['auto-register', 'yes', 'true or false'],
    ['standalone', '', 'true or false'],
    ['otel-sample-ratio', '', 'a number from 0 to 1, like 0.1'],
    ['otel-sample-ratio', '1.5', 'a number from 0 to 1, like 0.1'],
    ['otel-sample-ratio', '-0.1', 'a number from 0 to 1, like 0.1'],
    ['otel-sample-ratio', '10%', 'a number from 0 to 1, like 0.1'],
    ['otel-sample-ratio', ' 0.5', 'a number from 0 to 1, like 0.1'],
    ['otel-sample-ratio', '.5', 'a number from 0 to 1, like 0.1'],
  ])('--%s %j is refused, naming the flag, its variable, what it takes and what it got, as flag and as variable', (flag, value, expected) => {
    const variable = `POLICYGUARD_${flag.toUpperCase().replaceAll('-', '_')}`;
    const line = `  --${flag} (${variable}): expected ${expected}, got ${JSON.stringify(value)}`;
    expect(() => parse({ [variable]: value })).toThrow(`invalid configuration:\n${line}`);
    // --standalone takes no value on the command line: only its variable can be mistyped.
    if (flag !== 'standalone') expect(() => parse({}, [`--${flag}=${value}`])).toThrow(line);
  });

  it('takes digits as numbers and true, false, 1 and 0 as booleans; a bare boolean flag is true', () => {
    expect(parse({ POLICYGUARD_PORT: '0', POLICYGUARD_AUTO_REGISTER_LIMIT: '0', POLICYGUARD_APPROVAL_PENDING_LIMIT: '10000' })).toMatchObject({ port: 0, autoRegisterLimit: 0, approvalPendingLimit: 10_000 });
    expect(parse({}, ['--port', '08000'])).toMatchObject({ port: 8000, autoRegisterLimit: 1000, approvalPendingLimit: 20, maxConnections: 4096 });
    expect(parse({ POLICYGUARD_AUTO_REGISTER: 'false', POLICYGUARD_LEADER_ELECTION: '0', POLICYGUARD_ACCEPT_API_SERVER_AUDIENCE: '1' })).toMatchObject({ autoRegister: false, leaderElection: false, acceptApiServerAudience: true });
    expect(parse({ POLICYGUARD_STANDALONE: 'true', POLICYGUARD_CONFIG_DIR: 'c' }).standalone).toBe(true);
    expect(parse({}, ['--standalone', '--config-dir', 'c']).standalone).toBe(true);
  });

  it('--otel-sample-ratio is a share from 0 to 1, 1 by default; as the chart renders small ones too (1e-05)', () => {
    expect(parse({}).otelSampleRatio).toBe(1);
    expect(parse({ POLICYGUARD_OTEL_SAMPLE_RATIO: '0.1' }).otelSampleRatio).toBe(0.1);
    expect(parse({ POLICYGUARD_OTEL_SAMPLE_RATIO: '0.1' }, ['--otel-sample-ratio', '0.25']).otelSampleRatio).toBe(0.25);
    expect(['0', '1', '1.0', '0.001', '1e-05'].map((v) => parse({}, ['--otel-sample-ratio', v]).otelSampleRatio)).toEqual([0, 1, 1, 0.001, 0.00001]);
  });

  it('an empty --token-audiences is refused: it would accept tokens minted for the API server', () => {
    expect(() => parse({ POLICYGUARD_TOKEN_AUDIENCES: '' })).toThrow('--token-audiences (POLICYGUARD_TOKEN_AUDIENCES): name at least one audience, e.g. policyguard');
  });
});

describe('weakenedProtections', () => {
  const TOKEN = ['--auth', 'token', '--token-file', '/tmp/tokens'];
  const warnings = (argv: string[], env: Record<string, string> = {}) => weakenedProtections(parseServeConfig(['--data-dir', '/tmp/x', ...argv], env));

  it('none for the defaults with authentication on', () => {
    expect(warnings(TOKEN)).toEqual([]);
    expect(warnings(['--auth', 'kubernetes', '--host', '0.0.0.0'])).toEqual([]);
  });

  it('one line for each protection switched off, as the outside tester started it', () => {
    expect(warnings([], { POLICYGUARD_AUDIT_FAILURE_MODE: 'open', POLICYGUARD_RATE_LIMIT: '0', POLICYGUARD_AUTH_FAILURE_LIMIT: '0', POLICYGUARD_AUTH: 'token', POLICYGUARD_TOKEN_FILE: '/tmp/t' })).toEqual([
      '--auth-failure-limit 0: failed authentications are not limited, so tokens can be guessed as fast as the server answers',
      '--rate-limit 0: callers are not rate-limited; one caller can take all of the server\'s capacity',
      '--audit-failure-mode open: decisions are answered even when their audit record may be lost (a full disk or a failing audit sink drops records instead of denying)',
    ]);
  });

  it.each([
    [['--auth', 'none'], /^--auth none: callers are not authenticated and may act as any agent; use this only on a trusted machine$/],
    [['--auth', 'none', '--host', '::1'], /^--auth none: callers are not authenticated/],
    [['--auth', 'none', '--host', '0.0.0.0'], /^--auth none on --host 0\.0\.0\.0, which is not loopback: anyone who can reach the port is unauthenticated/],
    [[...TOKEN, '--rate-limit', '0'], /^--rate-limit 0: /],
    [[...TOKEN, '--auth-failure-limit', '0'], /^--auth-failure-limit 0: /],
    [[...TOKEN, '--audit-failure-mode', 'open'], /^--audit-failure-mode open: decisions are answered even when their audit record may be lost/],
    [[...TOKEN, '--unknown-agents', 'evaluate'], /^--unknown-agents evaluate: /],
    [[...TOKEN, '--unknown-agent-trust', 'high'], /^--unknown-agent-trust high: .* at trust 'high'/],
    [[...TOKEN, '--unknown-agent-trust', 'admin'], /^--unknown-agent-trust admin: /],
    [['--auth', 'kubernetes', '--accept-api-server-audience', 'true'], /^--accept-api-server-audience true: tokens minted for the Kubernetes API server/],
    [[...TOKEN, '--allowed-hosts', ''], /^--allowed-hosts is empty: /],
  ])('%j: one line saying what is given up', (argv, line) => {
    expect(warnings(argv)).toEqual([expect.stringMatching(line)]);
  });

  it('settings that weaken nothing in their mode are not warned of', () => {
    // No authentication to fail, and every id is evaluated: the --auth none line says it all.
    expect(warnings(['--auth-failure-limit', '0', '--unknown-agents', 'evaluate'])).toHaveLength(1);
    // Audiences matter only to TokenReview.
    expect(warnings([...TOKEN, '--accept-api-server-audience', 'true', '--unknown-agent-trust', 'medium'])).toEqual([]);
  });
});

describe('unknownEnvironment', () => {
  it('names each POLICYGUARD_ variable that sets no flag, with the nearest one that does; others are not its business', () => {
    expect(unknownEnvironment({ POLICYGUARD_DEFAULT_DECISON: 'deny', POLICYGUARD_PORT: '9000', POLICYGUARD_GITHUB_TOKEN: 'x', GITHUB_TOKEN: 'y' })).toEqual([
      'POLICYGUARD_DEFAULT_DECISON sets no flag; did you mean POLICYGUARD_DEFAULT_DECISION? (ignored as a setting)',
      'POLICYGUARD_GITHUB_TOKEN sets no flag (ignored as a setting)',
    ]);
  });
});

describe('folders', () => {
  it('a data dir inside the config dir is refused: its own files would be read as manifests', () => {
    const line = "  --data-dir (POLICYGUARD_DATA_DIR): is inside --config-dir policies: the server's own files (its audit anchor, first-seen.json) would be read as manifests, and every decision denied; put it elsewhere";
    expect(() => parseServeConfig(['--standalone', '--config-dir', 'policies', '--data-dir', 'policies/data'], {})).toThrow(line);
    expect(() => parseServeConfig(['--standalone', '--config-dir', 'policies/', '--data-dir', './policies'], {})).toThrow('is inside --config-dir');
    expect(parseServeConfig(['--standalone', '--config-dir', 'policies', '--data-dir', 'policies-data'], {})).toMatchObject({ dataDir: 'policies-data' });
    expect(parseServeConfig(['--standalone', '--config-dir', 'config/policies', '--data-dir', 'config/data'], {})).toMatchObject({ dataDir: 'config/data' });
  });
});

describe('values that parse but cannot work', () => {
  it.each([
    ['approval-ttl', '0s', 'must be at least 1s (an approval that expires at once can never be used)'],
    ['rescan-interval', '1ms', 'must be at least 100ms (a re-read of every manifest more often only burns CPU), or 0s for off'],
    ['body-limit', '0kb', 'must be at least 1kb (no MCP request fits in less)'],
  ])('--%s %s is refused: %s', (flag, value, why) => {
    const variable = `POLICYGUARD_${flag.toUpperCase().replaceAll('-', '_')}`;
    expect(() => parseServeConfig(['--data-dir', '/tmp/x', `--${flag}`, value], {})).toThrow(`invalid configuration:\n  --${flag} (${variable}): ${why}`);
  });
  it('the smallest that work, and 0s for no rescan, are taken', () => {
    expect(parseServeConfig(['--data-dir', '/tmp/x', '--approval-ttl', '1s', '--rescan-interval', '0s', '--body-limit', '1kb'], {})).toMatchObject({ approvalTtl: 1000, rescanInterval: 0, bodyLimit: '1kb' });
  });
});
