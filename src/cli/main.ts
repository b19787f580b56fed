#!/usr/bin/env node
/**
 * `policyguard` — serve, check, audit verify, crds. Exit codes: 0 ok (allowed), 1 denied or
 * broken chain, 2 usage or input error.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, parseServeConfig } from '../config.js';
import { createLogger } from '../log.js';

const USAGE = `policyguard — govern what AI agents may do

Usage:
  policyguard serve --standalone --config-dir DIR --data-dir DIR [--host H] [--port P]
  policyguard serve [--kubeconfig K] [--namespace NS] [--watch-namespaces a,b] [--audit-sink file|configmap]
        Serve the MCP tools at http://H:P/mcp (default 127.0.0.1:8000), from a folder of
        manifests (standalone) or as a Kubernetes operator. Every flag can also be set as
        POLICYGUARD_<FLAG>, e.g. POLICYGUARD_PORT=9000.
        Identity: --auth none|token|kubernetes, --token-file F, --token-audiences policyguard,
          --accept-api-server-audience, --auth-cache-ttl 10s.
        Edge: --allowed-hosts, --allowed-origins, --rate-limit 1000/1s|0, --body-limit 1mb,
          --tls-cert, --tls-key.
        Decisions: --default-decision allow|deny, --unknown-agent-trust low, --auto-register
          true|false, --auto-register-limit 1000.
        Operator: --cluster-policy-namespace, --replica-id, --leader-election, --lease-duration
          15s, --renew-deadline 10s, --retry-period 2s, --data-dir (file audit sink).
        --log-level debug|info|warn|error.
  policyguard check --config-dir DIR --agent-id ID --target TOOL [--action-type T] [--parameters JSON]
        Evaluate one action offline against a folder of manifests and print the decision as
        JSON. Exit 0 allowed, 1 denied or approval required, 2 error (e.g. a broken manifest).
  policyguard audit verify PATH
  policyguard audit verify --configmap --namespace NS --replica NAME [--kubeconfig K]
        Verify the hash chain of an audit log: a segment file or the audit folder, or the
        ConfigMap ring of one replica. Exit 0 intact, 1 with the first broken link.
  policyguard crds [--write [DIR]]
        Print the CustomResourceDefinitions, or write them to DIR (default crds/).
`;

class UsageError extends Error {}

async function serve(argv: string[]): Promise<number> {
  const config = parseServeConfig(argv, process.env);
  const log = createLogger(config.logLevel);
  // Each command loads only what it needs: `check` and `crds` start fast, without the
  // Kubernetes client or the HTTP stack.
  const { startServer } = await import('./serve.js');
  const running = await startServer(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down: draining requests and flushing the audit log', { signal });
    await running.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  return new Promise<number>(() => {}); // runs until a signal
}

async function check(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'config-dir': { type: 'string' },
      'agent-id': { type: 'string' },
      target: { type: 'string' },
      'action-type': { type: 'string', default: 'tool_call' },
      parameters: { type: 'string', default: '{}' },
    },
    strict: true,
  });
  for (const f of ['config-dir', 'agent-id', 'target'] as const) if (!values[f]) throw new UsageError(`check needs --${f}`);
  let parameters: unknown;
  try {
    parameters = JSON.parse(values.parameters!);
  } catch (err) {
    throw new UsageError(`--parameters is not valid JSON: ${(err as Error).message}`);
  }
  if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) throw new UsageError('--parameters must be a JSON object');
  const { checkAction } = await import('./check.js');
  const result = await checkAction({
    configDir: values['config-dir']!,
    request: { agentId: values['agent-id']!, target: values.target!, actionType: values['action-type']!, parameters: parameters as Record<string, unknown> },
  });
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(`${e}\n`);
    return 2;
  }
  process.stdout.write(JSON.stringify(result.decision, null, 2) + '\n');
  return result.decision.allowed ? 0 : 1;
}

async function audit(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { configmap: { type: 'boolean' }, namespace: { type: 'string' }, replica: { type: 'string' }, kubeconfig: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const [sub, path, ...rest] = positionals;
  const { verifyAuditChain, verifyConfigMapRing } = await import('../audit/verify.js');
  let result;
  if (sub === 'verify' && values.configmap && !path && values.namespace && values.replica) {
    const { loadKubeConfig } = await import('../kube/client.js');
    result = await verifyConfigMapRing(loadKubeConfig(values.kubeconfig), values.namespace, values.replica);
  } else if (sub === 'verify' && path && rest.length === 0 && !values.configmap) {
    result = await verifyAuditChain(path);
  } else {
    throw new UsageError('usage: policyguard audit verify PATH | policyguard audit verify --configmap --namespace NS --replica NAME [--kubeconfig K]');
  }
  if (result.ok) {
    process.stdout.write(`ok: ${result.records} records in ${result.segments} segment(s), chain intact\n`);
    return 0;
  }
  process.stdout.write(`BROKEN at ${result.file}:${result.line}${result.entryId ? ` (${result.entryId})` : ''}: ${result.reason}\n${result.records} records verified before it\n`);
  return 1;
}

async function crds(argv: string[]): Promise<number> {
  const { generateCrds } = await import('../api/crd.js');
  const generated = generateCrds();
  if (argv[0] !== '--write') {
    process.stdout.write(generated.map((c) => c.yaml).join('---\n'));
    return 0;
  }
  const dir = argv[1] ?? 'crds';
  await mkdir(dir, { recursive: true });
  for (const c of generated) {
    await writeFile(join(dir, c.fileName), c.yaml);
    process.stderr.write(`wrote ${join(dir, c.fileName)}\n`);
  }
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { serve, check, audit, crds };

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`policyguard: ${(err as Error).message}\n\n${USAGE}`);
    } else {
      process.stderr.write(`policyguard: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exit(2);
  },
);
