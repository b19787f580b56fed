/**
 * Server configuration, parsed once from flags and environment and passed down. Every flag
 * `--some-flag` can also be set as `POLICYGUARD_SOME_FLAG`; a flag wins over the environment.
 * Nothing else in the code reads `process.env`.
 */
import { isAbsolute, relative, resolve } from 'node:path';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { z } from 'zod';
import { TrustLevelSchema, trustRank } from './api/schemas.js';
import { parseRate } from './auth/rate-limit.js';
import { didYouMean } from './did-you-mean.js';
import { DURATION_HINT, parseDuration } from './duration.js';

/**
 * A flag's text read by `read`, or an issue saying what was expected and what was given
 * (parseServeConfig adds which flag and variable): an empty or mistyped value is refused, never
 * taken as 0 or false.
 */
const flagText = <T>(expected: string, read: (text: string) => T | undefined) =>
  z.string().transform((text, ctx) => {
    const value = read(text);
    if (value !== undefined) return value;
    ctx.addIssue({ code: 'custom', message: `expected ${expected}, got ${JSON.stringify(text)}` });
    return z.NEVER;
  });
/** Digits only, from `min` to `max`: `z.coerce.number()` would read "" as 0 (a random port) and accept " 1e3 ". */
const WholeNumber = (expected: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  flagText(expected, (text) => (/^\d{1,15}$/.test(text) && Number(text) >= min && Number(text) <= max ? Number(text) : undefined));
const BOOLEANS = new Map([['true', true], ['false', false], ['1', true], ['0', false]]);
/** true, false, 1 or 0; a flag given bare (`--standalone`) is already a boolean. */
const Bool = z.preprocess((v) => (typeof v === 'boolean' ? String(v) : v), flagText('true or false', (text) => BOOLEANS.get(text)));
const Port = WholeNumber('a port number (0 to 65535)', 0, 65535);
const Count = WholeNumber('a whole number (0 or more)', 0);
const SIZE = /^(\d{1,9})(b|kb|mb|gb)$/i;
const SIZE_UNITS = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 } as const;
/** Bytes of a size like `16mb` (units of 1,024, as --body-limit's). */
export const sizeInBytes = (v: string): number => {
  const [, n, unit] = SIZE.exec(v)!;
  return Number(n) * SIZE_UNITS[unit!.toLowerCase() as keyof typeof SIZE_UNITS];
};
/** "15s", "500ms", "2m", "24h" → milliseconds (src/duration.ts). */
const Duration = z
  .string()
  .refine((v) => parseDuration(v) !== undefined, DURATION_HINT)
  .transform((v) => parseDuration(v)!);
/** A duration of at least `minMs` (or 0 when `zeroOff`: off), as `minText` says. */
const DurationAtLeast = (minMs: number, minText: string, zeroOff = false) =>
  Duration.refine((ms) => ms >= minMs || (zeroOff && ms === 0), `must be at least ${minText}${zeroOff ? ', or 0s for off' : ''}`);
const List = z.string().transform((v) => v.split(',').map((x) => x.trim()).filter(Boolean));
/** An unsigned number as JSON writes it (and Helm renders a value: 0.1, 1, 1e-05). */
const DECIMAL = /^(?:0|[1-9]\d{0,14})(?:\.\d{1,15})?(?:[eE][+-]?\d{1,3})?$/;
const Dns1123 = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a lowercase DNS-1123 label');

/** The decision flags `serve` and `check` share. */
export const EngineFlags = z.object({
  defaultDecision: z.enum(['allow', 'deny']).default('allow'),
  unknownAgentTrust: TrustLevelSchema.default('low'),
});

export const ServeConfigSchema = z
  .object({
    ...EngineFlags.shape,
    standalone: Bool.default(false),
    configDir: z.string().min(1).optional(),
    dataDir: z.string().min(1).optional(),
    kubeconfig: z.string().min(1).optional(),
    host: z.string().min(1).default('127.0.0.1'),
    port: Port.default(8000),
    auth: z.enum(['none', 'token', 'kubernetes']).default('none'),
    tokenFile: z.string().min(1).optional(),
    // Empty would mean the API server's own audience: that is --accept-api-server-audience's to say.
    tokenAudiences: List.refine((l) => l.length > 0, 'name at least one audience, e.g. policyguard').default(['policyguard']),
    acceptApiServerAudience: Bool.default(false),
    authCacheTtl: Duration.default(10_000),
    allowedHosts: List.optional(),
    allowedOrigins: List.default([]),
    rateLimit: z
      .string()
      .refine((v) => v === '0' || parseRate(v) !== undefined, 'use requests/window like 1000/1s or 6000/1m, or 0 for no limit')
      .default('1000/1s'),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    /** `text` for people (the default), `json` lines for log collectors (the Helm chart sets it; docs/observability.md). */
    logFormat: z.enum(['text', 'json']).default('text'),
    /** OTLP/HTTP endpoint for traces, e.g. http://otel-collector:4318 (spans go to <endpoint>/v1/traces); unset: no tracing. */
    otelEndpoint: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL like http://otel-collector:4318' }).optional(),
    /** The share of requests traced, drawn at random whatever a caller's traceparent says (docs/observability.md); 1: every request. */
    otelSampleRatio: flagText('a number from 0 to 1, like 0.1', (text) => (DECIMAL.test(text) && Number(text) <= 1 ? Number(text) : undefined)).default(1),
    autoRegister: Bool.default(true),
    autoRegisterLimit: Count.default(1000),
    autoRegisterPerCaller: Count.default(1),
    /** What an agent id no GuardAgent claims gets (docs/decisions.md); default: deny when auth is on. */
    unknownAgents: z.enum(['deny', 'evaluate']).optional(),
    authFailureLimit: z
      .string()
      .refine((v) => v === '0' || parseRate(v) !== undefined, 'use failures/window like 20/1s, or 0 for no limit')
      .default('20/1s'),
    bodyLimit: z
      .string()
      .regex(SIZE, 'use at most 9 digits and a unit b, kb, mb or gb, e.g. 512kb or 1mb')
      .refine((v) => sizeInBytes(v) >= 1024, 'must be at least 1kb (no MCP request fits in less)')
      .default('1mb'),
    /** Connections served at once; beyond it new ones are closed at once (unauthenticated clients holding sockets open cannot exhaust file descriptors). */
    maxConnections: WholeNumber('a whole number from 1 to 1000000', 1, 1_000_000).default(4096),
    // kubernetes mode
    namespace: Dns1123.optional(),
    watchNamespaces: List.default([]),
    clusterPolicyNamespace: Dns1123.optional(),
    auditSink: z.enum(['file', 'configmap']).default('file'),
    auditFailureMode: z.enum(['closed', 'open']).default('closed'),
    auditKeyFile: z.string().min(1).optional(),
    auditAnchorInterval: Duration.default(30_000),
    /** Start once on an audit log with records but no anchor (or, with a new key, an anchor without a MAC); docs/decisions.md. */
    auditAcceptMissingAnchor: Bool.default(false),
    /** How the gateway answers a denied tools/call: a tool error with the reason, or as an unknown tool. */
    gatewayDenyAs: z.enum(['tool-error', 'unknown-tool']).default('tool-error'),
    /** The largest upstream answer (a JSON answer, or one event of a stream) the gateway takes, in bytes. */
    gatewayResponseLimit: z
      .string()
      .regex(SIZE, 'use a size like 512kb, 16mb or 1gb')
      .default('16mb')
      .transform((v) => sizeInBytes(v)),
    /** How long a GuardApproval stays valid when its rule sets no approval.ttl. */
    approvalTtl: DurationAtLeast(1_000, '1s (an approval that expires at once can never be used)').default(3_600_000),
    /** How long the gateway holds a call that needs approval for a person's decision (0: not at all). */
    approvalHold: Duration.default(20_000),
    /** Final GuardApprovals (Denied, Expired, Used) are deleted this long after; the audit log keeps them. */
    approvalRetention: Duration.default(86_400_000),
    /** Pending GuardApprovals one agent may have at once; beyond it asks are not stored (the call stays unallowed). */
    approvalPendingLimit: WholeNumber('a whole number from 1 to 10000', 1, 10_000).default(20),
    /** Policy reports per GuardAgent: which API, or `auto` (whichever report CRD is installed). */
    reports: z.enum(['auto', 'openreports', 'wgpolicyk8s', 'both', 'off']).default('auto'),
    reportsWindow: Duration.default(86_400_000),
    reportsInterval: Duration.default(30_000),
    rescanInterval: DurationAtLeast(100, '100ms (a re-read of every manifest more often only burns CPU)', true).default(10_000),
    replicaId: z.string().min(1).max(63).optional(),
    leaderElection: Bool.default(true),
    leaseDuration: Duration.default(15_000),
    renewDeadline: Duration.default(10_000),
    retryPeriod: Duration.default(2_000),
  })
  .transform((c) => ({ ...c, unknownAgents: c.unknownAgents ?? (c.auth === 'none' ? 'evaluate' : 'deny') }))
  .superRefine((c, ctx) => {
    if (c.auth === 'token' && !c.tokenFile) ctx.addIssue({ code: 'custom', path: ['tokenFile'], message: '--auth token needs --token-file (lines of "<sha256 of token> <subject>")' });
    if (c.auth === 'kubernetes' && c.standalone) ctx.addIssue({ code: 'custom', path: ['auth'], message: 'kubernetes auth (TokenReview) needs kubernetes mode; use --auth token in standalone mode' });
    if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) ctx.addIssue({ code: 'custom', path: ['tlsKey'], message: '--tls-cert and --tls-key go together' });
    if (c.standalone) {
      if (!c.configDir) ctx.addIssue({ code: 'custom', path: ['configDir'], message: '--standalone needs --config-dir, a folder of GuardAgent/GuardPolicy YAML' });
      if (!c.dataDir) ctx.addIssue({ code: 'custom', path: ['dataDir'], message: '--standalone needs --data-dir, where audit logs and written objects go' });
      else if (c.configDir && within(c.dataDir, c.configDir)) {
        ctx.addIssue({ code: 'custom', path: ['dataDir'], message: `is inside --config-dir ${c.configDir}: the server's own files (its audit anchor, first-seen.json) would be read as manifests, and every decision denied; put it elsewhere` });
      }
    } else {
      if (c.configDir) ctx.addIssue({ code: 'custom', path: ['configDir'], message: 'is for --standalone; in kubernetes mode the GuardAgent/GuardPolicy objects in the cluster are the source' });
      if (c.auditSink === 'file' && !c.dataDir) ctx.addIssue({ code: 'custom', path: ['dataDir'], message: '--audit-sink file needs --data-dir (e.g. a PersistentVolume mount); or use --audit-sink configmap' });
      if (c.renewDeadline >= c.leaseDuration) ctx.addIssue({ code: 'custom', path: ['renewDeadline'], message: 'must be shorter than --lease-duration' });
    }
  });
/** Whether `path` is `folder` or inside it, as written (symbolic links are not followed). */
function within(path: string, folder: string): boolean {
  const rel = relative(resolve(folder), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

export type ServeConfig = z.infer<typeof ServeConfigSchema> & {
  /**
   * The environment the server was started with: where a standalone GuardUpstream's `env`
   * header sources are read (this module is the only one that reads process.env).
   */
  environment: Readonly<Record<string, string | undefined>>;
};

/** `serve`'s flags as parseArgs takes them (the CLI checks a command line against them first). */
export const SERVE_FLAGS = {
  standalone: { type: 'boolean' },
  'config-dir': { type: 'string' },
  'data-dir': { type: 'string' },
  kubeconfig: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  auth: { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'otel-endpoint': { type: 'string' },
  'otel-sample-ratio': { type: 'string' },
  'default-decision': { type: 'string' },
  'unknown-agent-trust': { type: 'string' },
  'auto-register': { type: 'string' },
  'auto-register-limit': { type: 'string' },
  'auto-register-per-caller': { type: 'string' },
  'unknown-agents': { type: 'string' },
  'auth-failure-limit': { type: 'string' },
  'body-limit': { type: 'string' },
  'max-connections': { type: 'string' },
  'token-file': { type: 'string' },
  'token-audiences': { type: 'string' },
  'accept-api-server-audience': { type: 'string' },
  'auth-cache-ttl': { type: 'string' },
  'allowed-hosts': { type: 'string' },
  'allowed-origins': { type: 'string' },
  'rate-limit': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  namespace: { type: 'string' },
  'watch-namespaces': { type: 'string' },
  'cluster-policy-namespace': { type: 'string' },
  'audit-sink': { type: 'string' },
  'audit-failure-mode': { type: 'string' },
  'audit-key-file': { type: 'string' },
  'audit-anchor-interval': { type: 'string' },
  'audit-accept-missing-anchor': { type: 'boolean' },
  'rescan-interval': { type: 'string' },
  'gateway-deny-as': { type: 'string' },
  'gateway-response-limit': { type: 'string' },
  'approval-ttl': { type: 'string' },
  'approval-hold': { type: 'string' },
  'approval-retention': { type: 'string' },
  'approval-pending-limit': { type: 'string' },
  reports: { type: 'string' },
  'reports-window': { type: 'string' },
  'reports-interval': { type: 'string' },
  'replica-id': { type: 'string' },
  'leader-election': { type: 'string' },
  'lease-duration': { type: 'string' },
  'renew-deadline': { type: 'string' },
  'retry-period': { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

/** Every `serve` flag, without the leading `--` (help and the chart's tests check against it). */
export const SERVE_FLAG_NAMES = Object.keys(SERVE_FLAGS);

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
const envName = (flag: string) => `POLICYGUARD_${flag.toUpperCase().replace(/-/g, '_')}`;

/** The flag a config key is set by: `defaultDecision` → `default-decision`. */
export const flagOf = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * Parse `serve` flags (argv after the command) with environment fallbacks.
 *
 * @example parseServeConfig(['--standalone', '--config-dir', 'config-samples', '--data-dir', '/tmp/pg'], {})
 */
export function parseServeConfig(argv: string[], env: Record<string, string | undefined>): ServeConfig {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options: SERVE_FLAGS, allowPositionals: false, strict: true }));
  } catch (err) {
    throw new ConfigError((err as Error).message, { cause: err });
  }
  const raw: Record<string, unknown> = {};
  for (const flag of Object.keys(SERVE_FLAGS)) {
    const v = values[flag] ?? env[envName(flag)];
    if (v !== undefined) raw[camel(flag)] = v;
  }
  const parsed = ServeConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const flag = flagOf(String(i.path[0] ?? ''));
      return `  --${flag} (${envName(flag)}): ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return { ...parsed.data, environment: env };
}

/**
 * One line for each `POLICYGUARD_*` variable in `env` that sets no flag: a typo there would
 * otherwise leave the default in force without a word. Warned, not refused: a GuardUpstream
 * header may be read from any variable (`valueFrom.env`), whatever its name.
 *
 * @example unknownEnvironment({ POLICYGUARD_DEFAULT_DECISON: 'deny' })
 *   // ['POLICYGUARD_DEFAULT_DECISON sets no flag; did you mean POLICYGUARD_DEFAULT_DECISION? (ignored as a setting)']
 */
export function unknownEnvironment(env: Record<string, string | undefined>): string[] {
  const known = Object.keys(SERVE_FLAGS).map(envName);
  return Object.keys(env)
    .filter((name) => name.startsWith('POLICYGUARD_') && !known.includes(name))
    .map((name) => `${name} sets no flag${didYouMean(name, known)} (ignored as a setting)`);
}

/** Host names that reach only this machine (what `--host` binds). */
export const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/**
 * One line for each setting of `config` that turns a protection off or weakens it, saying what
 * is given up; empty when none does. The server logs them at start (`--auth none` included),
 * so a weakened server says so every time it starts.
 *
 * @example
 *   weakenedProtections(parseServeConfig(['--data-dir', '/tmp/pg', '--rate-limit', '0'], {}));
 *   // ['--auth none: callers are not authenticated …', '--rate-limit 0: callers are not rate-limited …']
 */
export function weakenedProtections(
  config: Pick<ServeConfig, 'auth' | 'host' | 'allowedHosts' | 'rateLimit' | 'authFailureLimit' | 'auditFailureMode' | 'unknownAgents' | 'unknownAgentTrust' | 'acceptApiServerAudience'>,
): string[] {
  const warnings: string[] = [];
  if (config.auth === 'none') {
    warnings.push(
      LOOPBACK_HOSTS.has(config.host)
        ? '--auth none: callers are not authenticated and may act as any agent; use this only on a trusted machine'
        : `--auth none on --host ${config.host}, which is not loopback: anyone who can reach the port is unauthenticated and may act as any agent`,
    );
  } else {
    if (config.authFailureLimit === '0') warnings.push('--auth-failure-limit 0: failed authentications are not limited, so tokens can be guessed as fast as the server answers');
    // Under --auth none every id is evaluated anyway: the line above says so.
    if (config.unknownAgents === 'evaluate') warnings.push('--unknown-agents evaluate: an agent id no GuardAgent claims is judged by the policies instead of denied, so a caller is not held to the agents it is bound to');
  }
  if (config.auth === 'kubernetes' && config.acceptApiServerAudience) {
    warnings.push('--accept-api-server-audience true: tokens minted for the Kubernetes API server (and legacy token Secrets that never expire) are accepted, not only tokens for --token-audiences');
  }
  if (config.allowedHosts?.length === 0) warnings.push('--allowed-hosts is empty: a request with any Host header is served (no DNS-rebinding check)');
  if (config.rateLimit === '0') warnings.push('--rate-limit 0: callers are not rate-limited; one caller can take all of the server\'s capacity');
  if (config.auditFailureMode === 'open') warnings.push('--audit-failure-mode open: decisions are answered even when their audit record may be lost (a full disk or a failing audit sink drops records instead of denying)');
  // Granting high or admin trust takes a privileged caller (src/auth/authorize.ts, mayGrant); this gives it to any new id.
  if (trustRank(config.unknownAgentTrust) >= trustRank('high')) {
    warnings.push(`--unknown-agent-trust ${config.unknownAgentTrust}: an agent id no GuardAgent claims is judged, and auto-registered, at trust '${config.unknownAgentTrust}', which registering an agent at takes a privileged caller`);
  }
  return warnings;
}
