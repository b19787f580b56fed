#!/usr/bin/env node
/**
 * `policyguard` — serve, check, audit verify, approvals, crds. Exit codes: 0 ok (allowed), 1
 * denied, broken chain, refused or incomplete, 2 usage or input error.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { ConfigError, EngineFlags, flagOf, parseServeConfig, SERVE_FLAGS } from '../config.js';
import { MAX_JSON_DEPTH, nestedDeeperThan, refusedJson, tooDeepText } from '../json-limits.js';
import { connectionFailure } from '../kube/connection.js';
import { createLogger } from '../log.js';
import { printable } from '../printable.js';
import { didYouMean } from '../did-you-mean.js';
import { VERSION } from '../version.js';

const USAGE = `policyguard — govern what AI agents may do

Usage:
  policyguard --version
  policyguard serve --standalone --config-dir DIR --data-dir DIR [--host H] [--port P]
  policyguard serve [--kubeconfig K] [--namespace NS] [--watch-namespaces a,b] [--audit-sink file|configmap]
        Serve the MCP tools at http://H:P/mcp (default 127.0.0.1:8000), from a folder of
        manifests (standalone) or as a Kubernetes operator. Every flag can also be set as
        POLICYGUARD_<FLAG>, e.g. POLICYGUARD_PORT=9000.
        Identity: --auth none|token|kubernetes, --token-file F, --token-audiences policyguard,
          --accept-api-server-audience true|false, --auth-cache-ttl 10s,
          --unknown-agents deny|evaluate (default deny when auth is on).
        Edge: --allowed-hosts, --allowed-origins, --rate-limit 1000/1s|0, --auth-failure-limit
          20/1s|0 (per address), --body-limit 1mb, --max-connections 4096, --tls-cert, --tls-key.
        Decisions: --default-decision allow|deny, --unknown-agent-trust low, --auto-register
          true|false, --auto-register-limit 1000, --auto-register-per-caller 1.
        Audit: --audit-sink file|configmap, --audit-failure-mode closed|open, --audit-key-file F,
          --audit-anchor-interval 30s, --audit-accept-missing-anchor (once: start on a log that
          has records but no anchor, or with a new key only an anchor without a MAC).
        Standalone: --rescan-interval 10s (safety net behind the folder watch; 0s = off).
        Gateway: --gateway-deny-as tool-error|unknown-tool (how a denied tools/call through
          /upstreams/<namespace>/<name>/mcp is answered), --gateway-response-limit 16mb (the
          largest upstream answer, or event of a stream, it takes; larger fails the call).
        Approvals: --approval-ttl 1h (validity when the rule sets none), --approval-hold 20s
          (how long the gateway holds a call for a decision; 0s = answer at once),
          --approval-retention 24h (decided, expired and used ones are then deleted),
          --approval-pending-limit 20 (pending approvals per agent, and per caller over all its agent ids; beyond it none is asked for).
        Reports: --reports auto|openreports|wgpolicyk8s|both|off, --reports-window 24h,
          --reports-interval 30s (one policy report per GuardAgent, written by the leader).
        Operator: --cluster-policy-namespace, --replica-id, --leader-election, --lease-duration
          15s, --renew-deadline 10s, --retry-period 2s, --data-dir (file audit sink).
        Observability: --log-level debug|info|warn|error, --log-format text|json (json: one
          object per line, what the image and the Helm chart set), --otel-endpoint URL (OTLP/HTTP
          traces, e.g. http://otel-collector:4318; off when unset), --otel-sample-ratio 1 (the
          share of requests traced, 0 to 1, drawn at random whatever a caller's traceparent says).
          Metrics at /metrics.
  policyguard check --config-dir DIR --agent-id ID --target TOOL [--action-type T] [--parameters JSON]
        [--default-decision allow|deny] [--unknown-agent-trust low]
        Evaluate one action offline against a folder of manifests and print the decision as
        JSON: the policies' answer as serve gives it with the same flags (not the identity step,
        which needs a caller). Exit 0 allowed, 1 denied or approval required, 2 error (e.g. a
        broken manifest).
  policyguard audit verify DIR [--key-file F] [--no-anchor] [--namespace NS --replica NAME [--kubeconfig K]]
  policyguard audit verify --configmap --namespace NS --replica NAME [--kubeconfig K] [--key-file F] [--no-anchor]
        Verify an audit log: the audit folder (DATA_DIR/audit) or one segment file, or the
        ConfigMap ring of one replica. Checks the hash chain; the anchor (DIR/anchor.json, or
        the ConfigMap policyguard-audit-anchor-NAME for a ring and, with --namespace/--replica,
        for a folder written in kubernetes mode), so records cut off the end are caught; with
        --key-file (the serve --audit-key-file) every record's and the anchor's MAC.
        --no-anchor checks the chain alone. Exit 0 intact, 1 broken, truncated or unreadable
        (every problem is printed, the first 100 listed), 2 usage (e.g. no audit log there).
  policyguard approvals list [--pending] [-o json] [--data-dir DIR | [--kubeconfig K] [-n NS]]
  policyguard approvals approve|deny NAME [--reason TEXT] [--data-dir DIR | [--kubeconfig K] [-n NS]]
        GuardApprovals that require_approval rules asked for: list them, or decide one. In a
        cluster as your kubeconfig's user (who needs verb approve on guardapprovals, and may not
        be the asking agent); with --data-dir, the standalone data dir's. Exit 0 done, 1
        refused (already decided, expired, not permitted) or, for list, some approval files
        left out (each named on stderr), 2 usage or no cluster to ask.
  policyguard crds [--write [DIR] | --admission]
        Print the CustomResourceDefinitions, or write them to DIR (default crds/).
        --admission prints instead the ValidatingAdmissionPolicy that refuses a spec field
        the CRDs do not declare, naming it (the chart installs it; Kubernetes >= 1.30).
`;

class UsageError extends Error {}

/** The line under every usage error: the full help would push the error off the screen. */
const HELP_HINT = 'Run `policyguard help` for the flags.';

/** Whether `serve` was asked for JSON logs (`--log-format`, else POLICYGUARD_LOG_FORMAT), read before the flags are checked. */
function jsonLogsAsked(argv: string[], env: NodeJS.ProcessEnv): boolean {
  const at = argv.findIndex((a) => a === '--log-format' || a.startsWith('--log-format='));
  const value = at < 0 ? env.POLICYGUARD_LOG_FORMAT : argv[at]!.includes('=') ? argv[at]!.slice('--log-format='.length) : argv[at + 1];
  return value === 'json';
}

async function serve(argv: string[]): Promise<number> {
  const config = parseServeConfig(argv, process.env);
  const log = createLogger(config.logLevel, undefined, config.logFormat);
  // Each command loads only what it needs: `check` and `crds` start fast, without the
  // Kubernetes client or the HTTP stack.
  const { startServer } = await import('./serve.js');
  const running = await startServer(config, log);
  // Loading the modules (the Kubernetes client alone parses hundreds) leaves garbage V8 keeps
  // committed for the life of the process: one memory-reducing GC now gives it back
  // (docs/performance.md, "What the second pass changed").
  const { releaseMemory } = await import('../memory.js');
  const released = releaseMemory();
  if ('error' in released) log.warn('could not release memory after start', released);
  else log.debug('released memory after start', { gc_ms: released.ms });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down: draining requests and flushing the audit log', { signal });
    try {
      await running.close();
    } catch (err) {
      // Records answered but never written: each line to stderr (where cluster logging keeps
      // it; appended to the log before the next start, they verify), then one line saying so.
      const { AuditRecordsUnwrittenError } = await import('../audit/sink.js');
      if (err instanceof AuditRecordsUnwrittenError) {
        for (const line of err.lines) process.stderr.write(`${line}\n`);
        log.error(`shutdown failed: ${err.message}; the ${err.lines.length} record line(s) above are those records, as they would have been stored`);
      } else {
        log.error(`shutdown failed: ${err instanceof Error ? err.message : String(err)}`);
      }
      exitWhenWritten(1);
      return;
    }
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  return new Promise<number>(() => {}); // runs until a signal
}

const CHECK_FLAGS = {
  'config-dir': { type: 'string' },
  'agent-id': { type: 'string' },
  target: { type: 'string' },
  'action-type': { type: 'string', default: 'tool_call' },
  parameters: { type: 'string', default: '{}' },
  // Defaults as serve's (config.EngineFlags).
  'default-decision': { type: 'string' },
  'unknown-agent-trust': { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

async function check(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: CHECK_FLAGS, strict: true });
  for (const f of ['config-dir', 'agent-id', 'target'] as const) if (!values[f]) throw new UsageError(`check needs --${f}`);
  let parameters: unknown;
  try {
    parameters = JSON.parse(values.parameters!);
  } catch (err) {
    throw new UsageError(`--parameters is not valid JSON: ${(err as Error).message}`);
  }
  if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) throw new UsageError('--parameters must be a JSON object');
  // The limits validate_action puts on JSON text in its `parameters` (src/mcp/tools.ts), so
  // check answers what serve answers.
  const refused = refusedJson(values.parameters!) ?? (nestedDeeperThan(parameters, MAX_JSON_DEPTH) ? tooDeepText() : undefined);
  if (refused) throw new UsageError(`--parameters: ${refused}`);
  // The serve flags of the same names, checked as serve checks them (src/config.ts).
  const options = EngineFlags.safeParse({ defaultDecision: values['default-decision'], unknownAgentTrust: values['unknown-agent-trust'] });
  if (!options.success) throw new UsageError(options.error.issues.map((i) => `--${flagOf(String(i.path[0]))}: ${i.message}`).join('; '));
  const { checkAction } = await import('./check.js');
  const result = await checkAction({
    configDir: values['config-dir']!,
    request: { agentId: values['agent-id']!, target: values.target!, actionType: values['action-type']!, parameters: parameters as Record<string, unknown> },
    options: options.data,
  });
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(`${e}\n`);
    return 2;
  }
  process.stdout.write(JSON.stringify(result.decision, null, 2) + '\n');
  return result.decision.allowed ? 0 : 1;
}

const AUDIT_USAGE =
  'usage: policyguard audit verify DIR [--key-file F] [--no-anchor] [--namespace NS --replica NAME] | ' +
  'policyguard audit verify --configmap --namespace NS --replica NAME [--kubeconfig K] [--key-file F] [--no-anchor]';

const AUDIT_FLAGS = {
  configmap: { type: 'boolean' },
  namespace: { type: 'string' },
  replica: { type: 'string' },
  kubeconfig: { type: 'string' },
  'key-file': { type: 'string' },
  'no-anchor': { type: 'boolean' },
} as const satisfies ParseArgsOptionsConfig;

async function audit(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: AUDIT_FLAGS, allowPositionals: true, strict: true });
  const [sub, path, ...rest] = positionals;
  const { namespace, replica } = values;
  if (sub !== 'verify' || rest.length > 0 || (values.configmap ? path || !namespace || !replica : !path)) throw new UsageError(AUDIT_USAGE);
  if (!namespace !== !replica) throw new UsageError('--namespace and --replica go together: they name the anchor ConfigMap of one replica');
  const { verifyAuditChain, verifyConfigMapRing, AuditLogNotFoundError } = await import('../audit/verify.js');
  const { AuditKeyError } = await import('../audit/key.js');
  const kubeConfig = () => kubeConfigFor(values.kubeconfig, 'pass --kubeconfig K');
  const opts = {
    ...(values['key-file'] ? { keyFile: values['key-file'] } : {}),
    ...(values['no-anchor'] ? { anchor: false as const } : {}),
  };
  let result;
  try {
    if (values.configmap) {
      result = await verifyConfigMapRing(await kubeConfig(), namespace!, replica!, opts);
    } else if (namespace && !values['no-anchor']) {
      // A folder written in kubernetes mode: its anchor is the replica's ConfigMap.
      const { ConfigMapAnchorStore } = await import('../audit/configmap-anchor.js');
      result = await verifyAuditChain(path!, { ...opts, anchor: new ConfigMapAnchorStore({ kubeConfig: await kubeConfig(), namespace, replica: replica! }) });
    } else {
      result = await verifyAuditChain(path!, opts);
    }
  } catch (err) {
    if (!(err instanceof AuditLogNotFoundError || err instanceof AuditKeyError)) throw err;
    process.stderr.write(`policyguard: ${err.message}\n`);
    return 2;
  }
  // What a log holds is whoever wrote it's text: escaped, so it cannot drive the terminal (a forged "ok").
  const notes = result.notes.map((note) => `${printable(`note: ${note}`)}\n`).join('');
  if (result.ok) {
    process.stdout.write(`ok: ${result.records} records in ${result.segments} segment(s), chain intact\n${notes}`);
    return 0;
  }
  const problems = result.problems.map((p) => `${printable(`BROKEN at ${p.line === undefined ? p.file : `${p.file}:${p.line}`}${p.entryId ? ` (${p.entryId})` : ''}: ${p.reason}`)}\n`);
  const unlisted = result.problemCount - result.problems.length;
  if (unlisted > 0) problems.push(`… and ${unlisted} more problem(s): only the first ${result.problems.length} are listed\n`);
  process.stdout.write(`${problems.join('')}${result.problemCount} problem(s) found; ${result.records} records verified intact\n${notes}`);
  return 1;
}

/** `--write [DIR]`: DIR is a positional, so both are booleans to parseArgs. */
const CRDS_FLAGS = { write: { type: 'boolean' }, admission: { type: 'boolean' } } as const satisfies ParseArgsOptionsConfig;

async function crds(argv: string[]): Promise<number> {
  // Strict: `--write=DIR` is refused (write's DIR is a positional), not taken as a bare `crds`.
  const { values, positionals } = parseArgs({ args: argv, options: CRDS_FLAGS, allowPositionals: true, strict: true });
  if ((values.admission && (values.write || positionals.length > 0)) || positionals.length > (values.write ? 1 : 0)) {
    throw new UsageError('usage: policyguard crds [--write [DIR] | --admission]');
  }
  if (values.admission) {
    const { specFieldsPolicyYaml } = await import('../api/spec-fields-policy.js');
    process.stdout.write(specFieldsPolicyYaml());
    return 0;
  }
  const { generateCrds } = await import('../api/crd.js');
  const generated = generateCrds();
  if (!values.write) {
    process.stdout.write(generated.map((c) => c.yaml).join('---\n'));
    return 0;
  }
  const dir = positionals[0] ?? 'crds';
  await mkdir(dir, { recursive: true });
  for (const c of generated) {
    await writeFile(join(dir, c.fileName), c.yaml);
    process.stderr.write(`wrote ${join(dir, c.fileName)}\n`);
  }
  return 0;
}

async function approvals(argv: string[]): Promise<number> {
  const { runApprovals, ApprovalsUsageError } = await import('./approvals.js');
  try {
    return await runApprovals(argv, {
      out: (t) => process.stdout.write(t),
      err: (t) => process.stderr.write(t),
      kubeConfig: (path) => kubeConfigFor(path, 'for standalone pass --data-dir DIR'),
    });
  } catch (err) {
    if (err instanceof ApprovalsUsageError) throw new UsageError(err.message);
    throw err;
  }
}

/** The API server the command talks to, named when it cannot be reached ({@link describeFailure}). */
let apiServer: { url: string; source: string } | undefined;

/**
 * The kubeconfig a command talks to the cluster with: `--kubeconfig`, else KUBECONFIG or
 * ~/.kube/config, else the pod's. With none of them client-node falls back to
 * http://localhost:8080 and then refuses to speak plain HTTP to it; that is refused here, saying
 * what to do `instead`.
 */
async function kubeConfigFor(path: string | undefined, instead: string): Promise<KubeConfig> {
  const kc = (await import('../kube/client.js')).loadKubeConfig(path);
  const url = kc.getCurrentCluster()!.server; // loadKubeConfig refuses a config without one
  if (!path && kc.getCurrentContext() === 'loaded-context' && url === 'http://localhost:8080') {
    throw new UsageError(`no kubeconfig found (no --kubeconfig, KUBECONFIG unset, no ~/.kube/config, not in a pod); ${instead}`);
  }
  apiServer = { url, source: path ? '--kubeconfig' : 'KUBECONFIG or ~/.kube/config' };
  return kc;
}

interface Command {
  run: (argv: string[]) => Promise<number>;
  /** Its flags, checked before it runs ({@link rejectUnknownFlag}). */
  flags: () => Promise<ParseArgsOptionsConfig>;
}

const COMMANDS: Record<string, Command> = {
  serve: { run: serve, flags: async () => SERVE_FLAGS },
  check: { run: check, flags: async () => CHECK_FLAGS },
  audit: { run: audit, flags: async () => AUDIT_FLAGS },
  approvals: { run: approvals, flags: async () => (await import('./approvals.js')).APPROVALS_FLAGS },
  crds: { run: crds, flags: async () => CRDS_FLAGS },
};

/** Refuse the first option of `argv` that `flags` does not declare, naming the nearest one that it does. */
function rejectUnknownFlag(argv: string[], flags: ParseArgsOptionsConfig): void {
  const { tokens } = parseArgs({ args: argv, options: flags, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option' || Object.hasOwn(flags, token.name)) continue;
    const hint = token.rawName.startsWith('--') ? didYouMean(token.name, Object.keys(flags), '--') : '';
    throw new UsageError(`Unknown option '${token.rawName}'${hint}`);
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === 'version') {
    process.stdout.write(`policyguard ${VERSION}\n`);
    return 0;
  }
  if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command ${JSON.stringify(command)}${didYouMean(command, Object.keys(COMMANDS))}`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const { run, flags } = COMMANDS[command]!;
  rejectUnknownFlag(rest, await flags());
  return run(rest);
}

/** System errors a user can fix, with what to do about them. */
const SYSTEM_ERROR_HINTS: Record<string, (e: NodeJS.ErrnoException & { address?: string; port?: number }) => string> = {
  EADDRINUSE: (e) => `${e.address ?? 'the address'}:${e.port ?? '?'} is already in use (another PolicyGuard, or an earlier \`npm start\`?); stop it or choose another port with --port (POLICYGUARD_PORT)`,
  EADDRNOTAVAIL: (e) => `cannot listen on ${e.address ?? 'that address'}: it is not an address of this machine; check --host`,
  EACCES: (e) => `permission denied: ${e.path ?? e.message}${e.port !== undefined ? '; ports below 1024 need privileges, choose another with --port' : ''}`,
  ENOENT: (e) => `no such file or folder: ${e.path ?? e.message}`,
  ENOTDIR: (e) => `not a folder: ${e.path ?? e.message}`,
  EISDIR: (e) => `is a folder, a file was expected: ${e.path ?? e.message}`,
};

/** JavaScript's own error types: thrown by a bug, never on purpose by our code. */
const PROGRAMMING_ERRORS = [TypeError, ReferenceError, SyntaxError, RangeError, EvalError, URIError];

/**
 * What the user sees when a command fails: one line for problems they can fix (usage, config,
 * files, ports, and the errors our code throws with a full sentence, e.g. a data dir in use or
 * a bad audit key, an API server that cannot be reached); a stack trace only for programming
 * errors, which are bugs to report.
 */
function describeFailure(err: unknown): { text: string; usage: boolean } {
  if (err instanceof UsageError || err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    return { text: (err as Error).message, usage: true };
  }
  const unreachable = connectionFailure(err);
  if (unreachable && apiServer) return { text: `cannot reach the Kubernetes API server ${apiServer.url} (from ${apiServer.source}): ${unreachable}`, usage: false };
  const sys = err as NodeJS.ErrnoException;
  const hint = typeof sys?.code === 'string' ? SYSTEM_ERROR_HINTS[sys.code] : undefined;
  if (hint) return { text: hint(sys), usage: false };
  if (err instanceof Error && !PROGRAMMING_ERRORS.some((type) => err instanceof type)) return { text: err.message, usage: false };
  return { text: err instanceof Error ? (err.stack ?? err.message) : String(err), usage: false };
}

/**
 * Exit once stdout and stderr have taken everything written: into a pipe (`| jq`, `| wc -l`)
 * writes are asynchronous, and exiting at once cut long output short.
 */
function exitWhenWritten(code: number): void {
  process.exitCode = code;
  let open = 2;
  const done = () => {
    if (--open === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

const argv = process.argv.slice(2);
main(argv).then(exitWhenWritten, (err: unknown) => {
  const { text, usage } = describeFailure(err);
  // A log collector reads JSON lines (the image's default): the one line a server that cannot
  // start leaves is one too, whatever stopped it (a flag, the config, the port, the cluster).
  if (argv[0] === 'serve' && jsonLogsAsked(argv.slice(1), process.env)) createLogger('error', undefined, 'json').error(`cannot start: ${text}`);
  else process.stderr.write(`policyguard: ${text}\n${usage ? `${HELP_HINT}\n` : ''}`);
  exitWhenWritten(2);
});
