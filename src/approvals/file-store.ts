/**
 * Approvals in the standalone data dir, `<data-dir>/approvals/`:
 * - `<name>.json`: the GuardApproval as the server wrote it (Pending, later Used or Expired);
 * - `<name>.decision.json`: a person's verdict, written once by `policyguard approvals
 *   approve|deny --data-dir` and never by the server.
 *
 * Two writers, two files: the server and the CLI never write the same file, the decision file
 * is created exclusively (a second decision fails, so a decided approval cannot be changed),
 * and the server sees it through a folder watch. The server holds the data-dir lock; the CLI
 * does not need it. Whoever can write the data dir can decide (docs/decisions.md, "Approvals").
 */
import { watch, type FSWatcher } from 'node:fs';
import { link, mkdir, readdir, unlink, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { GuardApprovalSchema, type GuardApproval, type GuardApprovalStatus } from '../api/schemas.js';
import { canonicalJson } from '../audit/record.js';
import type { Logger } from '../log.js';
import { NotRegularFileError, readRegularFile } from '../regular-file.js';
import { writeFileAtomic } from '../store/atomic-file.js';
import { phaseOf } from './ask.js';
import type { ApprovalDesk, ApprovalStore, ApprovalVerdict } from './store.js';

const DecisionFileSchema = z.strictObject({
  phase: z.enum(['Approved', 'Denied']),
  decidedBy: z.string().min(1).max(253),
  decidedAt: z.string().min(1).max(64),
  reason: z.string().max(1024).optional(),
});
type DecisionFile = z.infer<typeof DecisionFileSchema>;

const APPROVAL_FILE = /^(apr-[0-9a-f]{12})\.json$/;
const DECISION_FILE = /^(apr-[0-9a-f]{12})\.decision\.json$/;
/** What every approval is named: `apr-` and 12 hex digits (src/approvals/ask.ts makes them). */
export const APPROVAL_NAME = /^apr-[0-9a-f]{12}$/;

/** The approvals folder of a data dir. */
export const approvalsDir = (dataDir: string): string => join(dataDir, 'approvals');

/** The approval as it stands: the server's file, with the person's decision while it was Pending. */
function merge(approval: GuardApproval, decision: DecisionFile | undefined): GuardApproval {
  const phase = approval.status?.phase ?? 'Pending';
  if (!decision || phase !== 'Pending') return approval;
  const { phase: decided, ...fields } = decision;
  return { ...approval, status: { ...approval.status, phase: decided, ...fields } };
}

/** Read one approval (merged), or why it cannot be read; undefined when there is no such file. */
async function readApproval(dir: string, name: string, warn?: (msg: string) => void): Promise<{ approval: GuardApproval } | { problem: string } | undefined> {
  let text: string;
  try {
    text = await readRegularFile(join(dir, `${name}.json`));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (err instanceof NotRegularFileError) return { problem: `${name}.json ${err.reason}` };
    throw err;
  }
  let parsed;
  try {
    parsed = GuardApprovalSchema.safeParse(JSON.parse(text));
  } catch {
    // Not the parser's message: it quotes the file's first bytes into the log.
    return { problem: `${name}.json is not JSON` };
  }
  if (!parsed.success || parsed.data.metadata.name !== name) return { problem: `${name}.json is not a GuardApproval named ${name}` };
  return { approval: merge(parsed.data, await readDecision(dir, name, warn)) };
}

/**
 * A decision file that cannot be read or does not parse counts as no decision (it allows
 * nothing); the server logs it once.
 */
async function readDecision(dir: string, name: string, warn?: (msg: string) => void): Promise<DecisionFile | undefined> {
  let text: string;
  try {
    text = await readRegularFile(join(dir, `${name}.decision.json`));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    const why = err instanceof NotRegularFileError ? err.reason : `it cannot be read (${code ?? String(err)})`;
    warn?.(`approval decision file ${join(dir, `${name}.decision.json`)} ignored: ${why}`);
    return undefined;
  }
  try {
    const parsed = DecisionFileSchema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
  } catch {
    // fall through
  }
  warn?.(`approval decision file ${join(dir, `${name}.decision.json`)} ignored: not a valid decision (write it with \`policyguard approvals approve|deny\`)`);
  return undefined;
}

/**
 * How far an approval has come: asked (0), decided (1), used or expired (2). It only ever moves
 * forward, so a read showing less than the cache is older than the cache.
 */
function stage(approval: GuardApproval | undefined): number {
  const phase = approval?.status?.phase ?? 'Pending';
  return phase === 'Pending' ? 0 : phase === 'Approved' || phase === 'Denied' ? 1 : 2;
}

/** The server's side: a cache of the folder, kept current by a watch. */
export class FileApprovalStore implements ApprovalStore {
  private readonly cache = new Map<string, GuardApproval>();
  private readonly listeners = new Set<(ref: string, approval: GuardApproval | undefined) => void>();
  /** Problems already logged, so the rescan does not repeat them. */
  private readonly warned = new Set<string>();
  private watcher: FSWatcher | undefined;
  private rescan: NodeJS.Timeout | undefined;

  private constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  /**
   * Open (creating) `<dataDir>/approvals` and start watching it.
   *
   * @example const store = await FileApprovalStore.open('.policyguard-data', log);
   */
  static async open(dataDir: string, log: Logger, options: { rescanIntervalMs?: number } = {}): Promise<FileApprovalStore> {
    const store = new FileApprovalStore(approvalsDir(dataDir), log);
    await mkdir(store.dir, { recursive: true });
    store.watcher = watch(store.dir, (_event, file) => {
      const name = file ? (APPROVAL_FILE.exec(file) ?? DECISION_FILE.exec(file))?.[1] : undefined;
      if (name) void store.reload(name);
      else if (!file) void store.reloadAll();
    });
    store.watcher.on('error', (err) => log.warn('approvals folder watch failed; rescanning on an interval only', { dir: store.dir, error: String(err) }));
    await store.reloadAll();
    // A safety net for a lost watch event; the watch itself reports a decision at once.
    store.rescan = setInterval(() => void store.reloadAll(), options.rescanIntervalMs ?? 2000);
    store.rescan.unref();
    return store;
  }

  list(): readonly GuardApproval[] {
    return [...this.cache.values()];
  }

  get(_namespace: string | undefined, name: string): GuardApproval | undefined {
    return this.cache.get(name);
  }

  async create(approval: GuardApproval): Promise<GuardApproval> {
    const stored = GuardApprovalSchema.parse(approval);
    await writeFileAtomic(join(this.dir, `${stored.metadata.name}.json`), JSON.stringify(stored, null, 2) + '\n');
    this.set(stored.metadata.name, stored);
    return stored;
  }

  async updateStatus(approval: GuardApproval, status: GuardApprovalStatus): Promise<boolean> {
    const name = approval.metadata.name;
    const current = this.cache.get(name);
    if (!current || canonicalJson(current) !== canonicalJson(approval)) return false;
    const next = GuardApprovalSchema.parse({ ...current, status });
    // Set before the write, so a second use in the meantime sees it taken.
    this.set(name, next);
    try {
      await writeFileAtomic(join(this.dir, `${name}.json`), JSON.stringify(next, null, 2) + '\n');
    } catch (err) {
      this.set(name, current);
      throw err;
    }
    return true;
  }

  async delete(approval: GuardApproval): Promise<void> {
    const name = approval.metadata.name;
    for (const file of [`${name}.decision.json`, `${name}.json`]) await unlink(join(this.dir, file)).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    this.set(name, undefined);
  }

  onChange(listener: (ref: string, approval: GuardApproval | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.watcher?.close();
    clearInterval(this.rescan);
  }

  private set(name: string, approval: GuardApproval | undefined): void {
    const before = this.cache.get(name);
    if (approval) this.cache.set(name, approval);
    else this.cache.delete(name);
    if ((before && canonicalJson(before)) === (approval && canonicalJson(approval))) return;
    for (const l of this.listeners) l(name, approval);
  }

  private async reload(name: string): Promise<void> {
    try {
      const read = await readApproval(this.dir, name, (msg) => this.warnOnce(msg));
      if (read && 'problem' in read) {
        this.warnOnce(`approval file ignored: ${read.problem}`);
        this.set(name, undefined);
      } else if (read && stage(read.approval) < stage(this.cache.get(name))) {
        // Read before a write of ours landed (a use, an expiry): taking it would undo that
        // write, and a used approval would allow a second call. The watch reads it again.
      } else {
        this.set(name, read?.approval);
      }
    } catch (err) {
      this.warnOnce(`approval file ${join(this.dir, `${name}.json`)} not read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }

  private warnOnce(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.log.warn(message);
  }

  private async reloadAll(): Promise<void> {
    let files: string[];
    try {
      files = await readdir(this.dir);
    } catch (err) {
      this.log.warn('approvals folder not read', { dir: this.dir, error: String(err) });
      return;
    }
    const names = new Set(files.map((f) => APPROVAL_FILE.exec(f)?.[1]).filter((n): n is string => n !== undefined));
    for (const name of this.cache.keys()) if (!names.has(name)) this.set(name, undefined);
    for (const name of names) await this.reload(name);
  }
}

/** What {@link fileApprovalDesk}'s list could not take as it is, each as a sentence naming the file. */
export interface ListProblems {
  /** An approval file left out of the list: not a regular file, not JSON, not a GuardApproval, or unreadable. */
  skipped?: (why: string) => void;
  /** A decision file that counts as none (its approval is listed as the server treats it: Pending). */
  ignored?: (why: string) => void;
}

/**
 * The person's side in standalone mode: reads the folder and writes decision files. Acts as
 * `local:<login name>`.
 */
export function fileApprovalDesk(dataDir: string, now: () => Date = () => new Date(), problems: ListProblems = {}): ApprovalDesk {
  const dir = approvalsDir(dataDir);
  return {
    async list() {
      let files: string[];
      try {
        files = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
      const out: GuardApproval[] = [];
      for (const f of files) {
        const name = APPROVAL_FILE.exec(f)?.[1];
        if (!name) continue;
        let read;
        try {
          read = await readApproval(dir, name, problems.ignored);
        } catch (err) {
          read = { problem: `${f} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})` };
        }
        if (read && 'problem' in read) problems.skipped?.(`approval file skipped: ${read.problem} (in ${dir})`);
        else if (read) out.push(read.approval);
      }
      return out.sort((a, b) => b.spec.requestedAt.localeCompare(a.spec.requestedAt));
    },

    async decide(name, _namespace, verdict: ApprovalVerdict) {
      if (!APPROVAL_NAME.test(name)) throw new Error(`'${name}' is not an approval name (apr- and 12 hex characters)`);
      const read = await readApproval(dir, name);
      if (!read) throw new Error(`no approval ${name} in ${dir}`);
      if ('problem' in read) throw new Error(read.problem);
      const phase = phaseOf(read.approval, now());
      if (phase !== 'Pending') throw new Error(alreadyText(read.approval, phase));
      const decision: DecisionFile = { phase: verdict.phase, decidedBy: `local:${userInfo().username}`, decidedAt: now().toISOString(), ...(verdict.reason ? { reason: verdict.reason } : {}) };
      DecisionFileSchema.parse(decision);
      // Complete before it is visible, and never over an existing one: write aside, then link.
      const tmp = join(dir, `.${name}.decision.${process.pid}.tmp`);
      await writeFile(tmp, JSON.stringify(decision, null, 2) + '\n', { flag: 'w' });
      try {
        await link(tmp, join(dir, `${name}.decision.json`));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          if (await readDecision(dir, name)) throw new Error(`approval ${name} has already been decided`, { cause: err });
          throw new Error(`approval ${name} has a decision file that is not a valid decision (${join(dir, `${name}.decision.json`)}), which counts as none: move it away and decide again`, { cause: err });
        }
        throw err;
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
      return merge(read.approval, decision);
    },
  };
}

/** Why a non-Pending approval cannot be decided. */
export function alreadyText(approval: GuardApproval, phase: string): string {
  const s = approval.status;
  const name = approval.metadata.name;
  switch (phase) {
    case 'Expired':
      return `approval ${name} expired at ${approval.spec.expiresAt}; the agent must ask again`;
    case 'Used':
      return `approval ${name} was approved by ${s?.decidedBy ?? 'someone'} and already used (${s?.actionId ?? ''})`;
    default:
      return `approval ${name} was already ${phase.toLowerCase()} by ${s?.decidedBy ?? 'someone'}${s?.decidedAt ? ` at ${s.decidedAt}` : ''}`;
  }
}
