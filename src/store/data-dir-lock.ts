/**
 * One server per --data-dir. Two servers appending to one audit chain make `audit verify`
 * report tampering that never happened, so a second server refuses to start, naming the one
 * that holds the folder (docs/decisions.md).
 *
 * The lock is the file `<data-dir>/policyguard.lock`, created with O_EXCL, holding who owns it
 * ({@link LockHolder}). Its holder touches it every few seconds (a heartbeat) and removes it on
 * close. It is stale, and taken over with a WARN line, when its process is gone (same host and
 * pid namespace, `kill(pid, 0)` says ESRCH) or its heartbeat is older than a bound (a holder on
 * another host: a shared volume, a rescheduled pod). On the same host a live holder whose
 * heartbeat stopped is not taken over when it is the process that took the lock (it started
 * before then: stopped with SIGSTOP, or hung): resumed, it would append to the chain its
 * successor writes before its next heartbeat noticed. A live pid that started later is a reused
 * one, and taken over. A take-over replaces the file in one
 * rename, never remove-then-create, and only the server that created the take-over marker for
 * that stale lock may do it, so of two servers racing for a stale lock exactly one wins.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, readlink, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { writeFileAtomic } from './atomic-file.js';

export const LOCK_FILE = 'policyguard.lock';

const LockHolderSchema = z.object({
  pid: z.number().int().positive(),
  host: z.string(),
  /** Host name and pid namespace: a pid can be checked only where this is the same. */
  pidScope: z.string(),
  /** When the holder took the lock (ISO 8601). */
  since: z.string(),
  /** Unique per acquisition: tells two holders with the same pid apart. */
  token: z.string().min(1),
});
export type LockHolder = z.infer<typeof LockHolderSchema>;

export interface DataDirLockOptions {
  dataDir: string;
  log: Logger;
  /** How often the holder touches the lock file and checks it still owns it (default 5 s). */
  heartbeatMs?: number;
  /** A lock whose heartbeat is older than this is stale, wherever its holder runs (default 30 s). */
  staleAfterMs?: number;
  /**
   * Called once, after the ERROR line, when the lock is found removed or owned by another
   * server. Default: send this process SIGTERM, so the CLI stops serving, drains and exits
   * (fail closed: no more decisions, no more records in a chain another server writes).
   */
  onLost?: (message: string) => void;
}

/** The data dir is held by another server; the message is the whole sentence for the user. */
export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
}

/** Acquisitions that lose a race for a stale lock look again this many times before giving up. */
const ATTEMPTS = 5;
/** Take-overs whose taker died half-way are skipped this many times (each needs a crash). */
const MARKERS = 5;

interface ReadLock {
  raw: string;
  /** Undefined when the file does not parse (being written, or garbage). */
  holder: LockHolder | undefined;
  ino: number;
  mtimeMs: number;
}

/** Content and identity of a lock file from one open file, or undefined when there is none. */
async function readLock(path: string): Promise<ReadLock | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const [st, raw] = await Promise.all([fh.stat(), fh.readFile('utf8')]);
    let holder: LockHolder | undefined;
    try {
      const parsed = LockHolderSchema.safeParse(JSON.parse(raw));
      if (parsed.success) holder = parsed.data;
    } catch {
      // not JSON: holder stays undefined
    }
    return { raw, holder, ino: st.ino, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}

/** Create `path` holding `holder`; false when it exists. */
async function createExclusive(path: string, holder: LockHolder): Promise<boolean> {
  try {
    await writeFile(path, JSON.stringify(holder) + '\n', { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

async function pidScope(): Promise<string> {
  try {
    return `${hostname()} ${await readlink('/proc/self/ns/pid')}`;
  } catch {
    return hostname(); // no /proc: the host name is all there is
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: alive, another user's
  }
}

/**
 * Process `pid` of this pid namespace, from /proc: when it started (ms since the epoch) and
 * whether it has exited (a zombie its parent has not reaped still answers kill(pid, 0));
 * undefined where that cannot be read (no /proc, the process just went).
 */
async function processInfo(pid: number): Promise<{ startedAt: number; exited: boolean } | undefined> {
  try {
    const [stat, system] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile('/proc/stat', 'utf8')]);
    // Fields are counted after the command name's closing parenthesis (the name may hold
    // spaces and parentheses): field 3 the state, field 22 starttime in clock ticks after boot.
    // Linux's /proc counts USER_HZ ticks, 100 per second on every architecture.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    const bootSeconds = Number(/^btime (\d+)$/m.exec(system)?.[1]);
    if (!Number.isFinite(ticks) || !Number.isFinite(bootSeconds)) return undefined;
    return { startedAt: bootSeconds * 1000 + ticks * 10, exited: fields[0] === 'Z' || fields[0] === 'X' };
  } catch {
    return undefined;
  }
}

/** Clock-tick rounding and the one-second resolution of the boot time. */
const START_TIME_SLACK_MS = 2_000;

const seconds = (ms: number) => Math.max(0, Math.round(ms / 1000));
const describeHolder = (h: LockHolder) => `pid ${h.pid} on host ${h.host}, running since ${h.since}`;

/** Why `lock` may be taken over, or undefined when its holder may still be running. */
async function staleReason(lock: ReadLock, me: LockHolder, staleAfterMs: number): Promise<string | undefined> {
  const age = Date.now() - lock.mtimeMs;
  const local = lock.holder !== undefined && lock.holder.pidScope === me.pidScope;
  if (local && !isAlive(lock.holder!.pid)) return `its process ${lock.holder!.pid} is gone`;
  if (age <= staleAfterMs) return undefined;
  if (!lock.holder) return `it is unreadable and ${seconds(age)} s old`;
  if (local && (await isTheHolder(lock.holder))) return undefined;
  return `its heartbeat stopped ${seconds(age)} s ago`;
}

/** Whether the running process with the holder's pid is the one that took the lock (it started before, and has not exited). */
async function isTheHolder(holder: LockHolder): Promise<boolean> {
  const info = await processInfo(holder.pid);
  const since = Date.parse(holder.since);
  // Unknown (no /proc): the heartbeat decides, as for a holder on another host.
  return info !== undefined && !info.exited && Number.isFinite(since) && info.startedAt <= since + START_TIME_SLACK_MS;
}

function heldMessage(dir: string, path: string, lock: ReadLock, me: LockHolder, staleAfterMs: number): string {
  const age = seconds(Date.now() - lock.mtimeMs);
  const h = lock.holder;
  if (!h) {
    return `--data-dir ${dir} is being claimed by a PolicyGuard that is starting (lock file ${path}, written ${age} s ago, not readable yet). Stop that server, or start this one with another --data-dir; an unreadable lock file is taken over once it is ${seconds(staleAfterMs)} s old.`;
  }
  const local = h.pidScope === me.pidScope;
  if (local && Date.now() - lock.mtimeMs > staleAfterMs) {
    return (
      `--data-dir ${dir} is held by ${describeHolder(h)} (lock file ${path}), which is alive but has not refreshed its heartbeat for ${age} s: ` +
      `it is stopped (SIGSTOP) or hung, and resumed it would write to the same audit log. Stop it (kill ${h.pid}), then start this one.`
    );
  }
  const remote = local ? '' : `; it is taken over once its heartbeat is ${seconds(staleAfterMs)} s old`;
  return `--data-dir ${dir} is in use by another PolicyGuard: ${describeHolder(h)} (lock file ${path}, last heartbeat ${age} s ago). Stop that server, or start this one with another --data-dir${remote}.`;
}

/**
 * Replace the stale lock `judged` with ours. Only the creator of the take-over marker of that
 * lock may (O_EXCL again), and only if the lock is still exactly what was judged stale; a
 * marker left by a taker that died half-way is skipped for the next one.
 */
async function takeOver(path: string, judged: ReadLock, me: LockHolder, staleAfterMs: number): Promise<boolean> {
  const id = judged.holder?.token ?? `inode-${judged.ino}`;
  for (let n = 1; n <= MARKERS; n++) {
    const marker = `${path}.takeover-${id}-${n}`;
    if (!(await createExclusive(marker, me))) {
      const other = await readLock(marker);
      if (other && (await staleReason(other, me, staleAfterMs)) === undefined) return false; // a live server is taking it over
      continue;
    }
    try {
      const now = await readLock(path);
      if (!now || now.raw !== judged.raw || now.ino !== judged.ino || now.mtimeMs !== judged.mtimeMs) return false; // changed since judged
      await writeFileAtomic(path, JSON.stringify(me) + '\n'); // one rename: there is never no lock
      return (await readLock(path))?.holder?.token === me.token;
    } finally {
      await rm(marker, { force: true });
    }
  }
  return false;
}

/**
 * Take the lock of `dataDir` (creating the folder), or throw {@link DataDirLockedError} saying
 * who holds it and what to do. A stale lock is taken over with a WARN line naming its holder.
 *
 * @example
 *   const lock = await acquireDataDirLock({ dataDir: '/data', log });
 *   // … serve …
 *   await lock.release();
 */
export async function acquireDataDirLock(opts: DataDirLockOptions): Promise<DataDirLock> {
  const staleAfterMs = opts.staleAfterMs ?? 30_000;
  const dir = resolve(opts.dataDir);
  const path = join(dir, LOCK_FILE);
  await mkdir(dir, { recursive: true });
  const me: LockHolder = { pid: process.pid, host: hostname(), pidScope: await pidScope(), since: new Date().toISOString(), token: randomUUID() };
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    if (await createExclusive(path, me)) return new DataDirLock(dir, path, me, opts);
    const held = await readLock(path);
    if (!held) continue; // released in between: try again
    const stale = await staleReason(held, me, staleAfterMs);
    if (stale === undefined) throw new DataDirLockedError(heldMessage(dir, path, held, me, staleAfterMs));
    if (await takeOver(path, held, me, staleAfterMs)) {
      opts.log.warn(`took over the lock on --data-dir ${dir} from ${held.holder ? describeHolder(held.holder) : 'an unreadable lock file'}: ${stale}`, { lock: path });
      return new DataDirLock(dir, path, me, opts);
    }
    // Another server is taking it over: look again at what it leaves.
    await new Promise((r) => setTimeout(r, 20 * attempt));
  }
  throw new DataDirLockedError(`--data-dir ${dir} could not be locked: other servers kept claiming it (lock file ${path}). Start one PolicyGuard per --data-dir.`);
}

/** A held lock: heartbeats until released, and calls `onLost` if it finds itself replaced. */
export class DataDirLock {
  private readonly timer: NodeJS.Timeout;
  private beating: Promise<void> | undefined;
  private done = false;

  constructor(
    readonly dataDir: string,
    readonly path: string,
    readonly holder: LockHolder,
    private readonly opts: DataDirLockOptions,
  ) {
    this.timer = setInterval(() => {
      this.beating ??= this.beat().finally(() => (this.beating = undefined));
    }, opts.heartbeatMs ?? 5_000).unref();
  }

  private async beat(): Promise<void> {
    try {
      const now = await readLock(this.path);
      if (now?.holder?.token !== this.holder.token) return this.lose(now);
      const t = new Date();
      await utimes(this.path, t, t);
    } catch (err) {
      // The volume is failing; the audit sink will say so too. Others see the heartbeat age.
      this.opts.log.error(`cannot refresh the lock ${this.path}; other servers take it over once its heartbeat is stale`, { error: String(err) });
    }
  }

  private lose(now: ReadLock | undefined): void {
    this.done = true;
    clearInterval(this.timer);
    const what = now?.holder ? `it is now held by ${describeHolder(now.holder)}` : now ? 'its lock file now holds something unreadable' : `its lock file ${this.path} was removed`;
    const message = `lost the lock on --data-dir ${this.dataDir}: ${what}. Another PolicyGuard may be writing the same audit log; this one stops (fail closed). Run one server per --data-dir, then start it again.`;
    this.opts.log.error(message);
    (this.opts.onLost ?? (() => process.kill(process.pid, 'SIGTERM')))(message);
  }

  /** Stop the heartbeat and remove the lock file if it is still ours. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.beating;
    if (this.done) return;
    this.done = true;
    if ((await readLock(this.path))?.holder?.token === this.holder.token) await rm(this.path, { force: true });
  }
}
