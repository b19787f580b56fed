/**
 * `policyguard approvals list|approve|deny`: a person's side of GuardApprovals
 * (docs/decisions.md, "Approvals"). With --data-dir, the standalone data dir's approvals;
 * otherwise the cluster's, with the kubeconfig's credentials (the admission policy decides
 * whether they may).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { readdir, stat } from 'node:fs/promises';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { phaseOf } from '../approvals/ask.js';
import { APPROVAL_NAME, fileApprovalDesk, type ListProblems } from '../approvals/file-store.js';
import type { ApprovalDesk } from '../approvals/store.js';
import type { GuardApproval } from '../api/schemas.js';
import { connectionFailure, neverSent } from '../kube/connection.js';
import { printable } from '../printable.js';
import { LOCK_FILE } from '../store/data-dir-lock.js';

export const APPROVALS_USAGE =
  'usage: policyguard approvals list [--pending] [-o json] [--data-dir DIR | [--kubeconfig K] [-n NS]]\n' +
  '       policyguard approvals approve|deny NAME [--reason TEXT] [--data-dir DIR | [--kubeconfig K] [-n NS]]';

/** A usage mistake (exit 2), as opposed to a refused decision (exit 1). */
export class ApprovalsUsageError extends Error {}

/** `in 52m` / `3m ago`, from `now`. */
function relative(iso: string, now: Date): string {
  const ms = Date.parse(iso) - now.getTime();
  const abs = Math.abs(ms);
  const text = abs < 120_000 ? `${Math.round(abs / 1000)}s` : abs < 7_200_000 ? `${Math.round(abs / 60_000)}m` : abs < 172_800_000 ? `${Math.round(abs / 3_600_000)}h` : `${Math.round(abs / 86_400_000)}d`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

/** A table like `kubectl get`: columns padded to their widest cell, every cell {@link printable}. */
function table(cells: string[][]): string {
  const rows = cells.map((r) => r.map(printable));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n') + '\n';
}

/** Whether an argumentsPreview leaves values out (redacted, or cut at PREVIEW_MAX). */
function hidesArguments(preview: string): boolean {
  return preview.includes('"[REDACTED]"') || preview.includes('"[TRUNCATED]"') || / … \(\d+ characters in all; the digest covers every one\)$/.test(preview);
}

function listText(approvals: readonly GuardApproval[], now: Date, namespaced: boolean): string {
  if (approvals.length === 0) return 'No approvals.\n';
  const head = [...(namespaced ? ['NAMESPACE'] : []), 'NAME', 'AGENT', 'TARGET', 'PHASE', 'DECIDED BY', 'EXPIRES', 'ARGUMENTS'];
  const rows = approvals.map((a) => {
    // A head only: say so, and where the whole is (an agent can pad what comes first).
    const args = a.spec.argumentsPreview.length > 60 ? `${a.spec.argumentsPreview.slice(0, 57)}... (${a.spec.argumentsPreview.length} characters: -o json shows all)` : a.spec.argumentsPreview;
    return [...(namespaced ? [a.metadata.namespace ?? ''] : []), a.metadata.name, a.spec.agentId, a.spec.upstream ? `${a.spec.upstream}: ${a.spec.target}` : a.spec.target, phaseOf(a, now), a.status?.decidedBy ?? '<none>', relative(a.spec.expiresAt, now), args];
  });
  return table([head, ...rows]);
}

export interface ApprovalsIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** The cluster's kubeconfig, from `--kubeconfig` (undefined: the default one). */
  kubeConfig: (path: string | undefined) => Promise<KubeConfig>;
  now?: () => Date;
}

export const APPROVALS_FLAGS = {
  'data-dir': { type: 'string' },
  kubeconfig: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  reason: { type: 'string' },
  pending: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
} as const satisfies ParseArgsOptionsConfig;

/**
 * Run `policyguard approvals …`. Returns the exit code: 0 done, 1 refused (already decided,
 * expired, not permitted) or a list with approval files left out (each named on `io.err`);
 * throws {@link ApprovalsUsageError} for usage (exit 2).
 *
 * @example await runApprovals(['approve', 'apr-3f9a0c1b2d4e', '-n', 'team-a', '--reason', 'ticket 42'], io)
 */
export async function runApprovals(argv: string[], io: ApprovalsIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: APPROVALS_FLAGS, allowPositionals: true, strict: true });
  const [sub, name, ...rest] = positionals;
  const now = io.now ?? (() => new Date());
  if (values['data-dir'] && (values.kubeconfig || values.namespace)) throw new ApprovalsUsageError('--data-dir (standalone) and --kubeconfig/-n (a cluster) do not go together');
  if (values.output !== undefined && values.output !== 'json') throw new ApprovalsUsageError(`-o ${values.output}: only -o json is supported`);
  if (values.reason !== undefined && values.reason.length > 1024) throw new ApprovalsUsageError('--reason is longer than 1024 characters');
  const deciding = sub === 'approve' || sub === 'deny';
  if (deciding && name !== undefined && !APPROVAL_NAME.test(name)) throw new ApprovalsUsageError(`'${printable(name)}' is not an approval name: a name is apr- and 12 hex digits (0-9, a-f), e.g. apr-3f9c2a1b7d4e`);
  // A file left out of the list could be the approval someone is waiting for: exit 1, so a
  // script that looks for pending approvals does not take the list as complete.
  let skipped = 0;
  const say = (text: string) => io.err(`policyguard: ${printable(text)}\n`);
  const problems: ListProblems = {
    skipped: (why) => {
      skipped++;
      say(why);
    },
    ignored: say,
  };
  const desk = await deskFor(values['data-dir'], values.kubeconfig, now, io, problems);
  if (sub === 'list' && name === undefined) {
    let approvals: readonly GuardApproval[];
    try {
      approvals = await desk.list(values.namespace);
    } catch (err) {
      // As for approve|deny: no cluster to ask is exit 2 (the command's error path names the
      // server); a refusal or a failed answer (RBAC, a 5xx) is exit 1, saying why.
      if (neverSent(err)) throw err;
      say(err instanceof Error ? err.message : String(err));
      return 1;
    }
    if (values.pending) approvals = approvals.filter((a) => phaseOf(a, now()) === 'Pending');
    io.out(values.output === 'json' ? JSON.stringify(approvals, null, 2) + '\n' : listText(approvals, now(), !values['data-dir']));
    return skipped > 0 ? 1 : 0;
  }
  if (deciding && name !== undefined && rest.length === 0) {
    let decided: GuardApproval;
    try {
      decided = await desk.decide(name, values.namespace, { phase: sub === 'approve' ? 'Approved' : 'Denied', ...(values.reason ? { reason: values.reason } : {}) });
    } catch (err) {
      // No cluster to ask is not a refusal: the command's error path names the server (exit 2).
      if (neverSent(err)) throw err;
      // A connection lost after the request went out: the decision may have been written.
      const lost = connectionFailure(err) ? '; the answer was lost, so whether it was decided is not known: check with `policyguard approvals list`' : '';
      io.err(`policyguard: ${printable(err instanceof Error ? err.message : String(err))}${lost}\n`);
      return 1;
    }
    const where = decided.metadata.namespace ? ` in namespace ${decided.metadata.namespace}` : '';
    const { spec } = decided;
    const target = printable(spec.upstream ? `${spec.upstream}: ${spec.target}` : spec.target);
    io.out(
      printable(`approval ${decided.metadata.name}${where} ${sub === 'approve' ? 'approved' : 'denied'} by ${decided.status?.decidedBy}: agent '${spec.agentId}' `) +
        (sub === 'approve' ? `may now call '${target}' once with these arguments, until ${spec.expiresAt}\n` : `may not call '${target}' with these arguments until ${spec.expiresAt}\n`) +
        `  arguments: ${printable(spec.argumentsPreview)}\n` +
        (hidesArguments(spec.argumentsPreview) ? '  (not every value is shown: values under keys that look like credentials are [REDACTED], and a long preview is cut; the approval covers the exact values)\n' : ''),
    );
    return 0;
  }
  throw new ApprovalsUsageError(APPROVALS_USAGE);
}

async function deskFor(dataDir: string | undefined, kubeconfig: string | undefined, now: () => Date, io: ApprovalsIo, problems: ListProblems): Promise<ApprovalDesk> {
  if (dataDir) {
    await checkDataDir(dataDir);
    return fileApprovalDesk(dataDir, now, problems);
  }
  const { kubeApprovalDesk } = await import('../approvals/kube-store.js');
  return kubeApprovalDesk(await io.kubeConfig(kubeconfig), now);
}

/**
 * A mistyped --data-dir must not read as "No approvals." (a script polling for pending ones
 * would take the empty list as complete): the folder must be one a server has used, which
 * holds its lock file, its audit log or its approvals.
 */
async function checkDataDir(dataDir: string): Promise<void> {
  const shown = printable(dataDir);
  const kind = await stat(dataDir).then(
    (s) => (s.isDirectory() ? 'folder' : 'file'),
    (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? 'missing' : Promise.reject(err)),
  );
  if (kind === 'missing') throw new ApprovalsUsageError(`--data-dir ${shown} does not exist: pass the folder the server runs with (its --data-dir)`);
  if (kind === 'file') throw new ApprovalsUsageError(`--data-dir ${shown} is not a folder: pass the folder the server runs with (its --data-dir)`);
  const entries = await readdir(dataDir);
  if (![LOCK_FILE, 'audit', 'approvals'].some((entry) => entries.includes(entry))) {
    throw new ApprovalsUsageError(`--data-dir ${shown} holds no PolicyGuard data (no ${LOCK_FILE}, audit/ or approvals/): pass the folder the server runs with (its --data-dir)`);
  }
}
