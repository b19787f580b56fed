/**
 * One server per --data-dir, on real files: the server (startServer) and the lock module.
 */
import { spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startServer } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { acquireDataDirLock, DataDirLockedError, LOCK_FILE, type DataDirLock, type DataDirLockOptions, type LockHolder } from '../../src/store/data-dir-lock.js';
import { eventually } from './eventually.js';
import { SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';

let root: string;
let lines: string[];
const held: DataDirLock[] = [];
let server: TestServer | undefined;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-lock-'));
  lines = [];
});
afterEach(async () => {
  const s = server;
  server = undefined;
  await s?.close();
  for (const lock of held.splice(0)) await lock.release();
  await rm(root, { recursive: true, force: true });
});

const log = createLogger('info', (l) => lines.push(l));
const lockPath = () => join(root, LOCK_FILE);

async function acquire(opts: Partial<DataDirLockOptions> = {}): Promise<DataDirLock> {
  const lock = await acquireDataDirLock({ dataDir: root, log, onLost: () => {}, ...opts });
  held.push(lock);
  return lock;
}

/** What a lock of this process looks like (host, pid namespace), from a lock taken elsewhere. */
async function thisProcess(): Promise<LockHolder> {
  const probe = await acquireDataDirLock({ dataDir: join(root, 'probe'), log: silentLogger });
  await probe.release();
  return probe.holder;
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

async function writeLock(holder: LockHolder, ageMs = 0): Promise<void> {
  await writeFile(lockPath(), JSON.stringify(holder) + '\n');
  const t = new Date(Date.now() - ageMs);
  await utimes(lockPath(), t, t);
}

const holderOf = async (): Promise<LockHolder> => JSON.parse(await readFile(lockPath(), 'utf8'));

describe('one server per --data-dir (serve)', () => {
  it('a second server on the same --data-dir refuses to start, naming the holder and what to do', async () => {
    server = await startTestServer(SEED_FIXTURE);
    const config = parseServeConfig(['--standalone', '--config-dir', server.configDir, '--data-dir', server.dataDir, '--port', '0'], {});
    const err = await startServer(config, silentLogger).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DataDirLockedError);
    const message = (err as Error).message;
    console.log(`second server: ${message}`);
    expect(message).not.toContain('\n');
    expect(message).toContain(`is in use by another PolicyGuard: pid ${process.pid} on host ${hostname()}, running since 20`);
    expect(message).toContain(`lock file ${join(server.dataDir, LOCK_FILE)}`);
    expect(message).toContain('Stop that server, or start this one with another --data-dir');
    // The first one still serves.
    expect((await server.call('validate_action', { action_type: 'tool_call', target: 'read_x', agent_id: 'test-low' })).json.allowed).toBe(true);
  });

  it('close releases the lock, so a new server on the same --data-dir starts at once', async () => {
    const configDir = join(root, 'config');
    const dataDir = join(root, 'data');
    await cp(SEED_FIXTURE, configDir, { recursive: true });
    const config = parseServeConfig(['--standalone', '--config-dir', configDir, '--data-dir', dataDir, '--port', '0'], {});
    const first = await startServer(config, silentLogger);
    expect((JSON.parse(await readFile(join(dataDir, LOCK_FILE), 'utf8')) as LockHolder).pid).toBe(process.pid);
    await first.close();
    await expect(stat(join(dataDir, LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
    const second = await startServer(config, silentLogger);
    expect(second.store.notReady()).toBeUndefined();
    await second.close();
  });
});

describe('DataDirLock', () => {
  it('takes over a lock whose process is gone, with a WARN naming the old holder', async () => {
    const pid = await deadPid();
    await writeLock({ ...(await thisProcess()), pid, since: '2026-01-01T00:00:00.000Z', token: 'dead' });
    const lock = await acquire();
    expect((await holderOf()).token).toBe(lock.holder.token);
    expect(lines).toEqual([expect.stringMatching(new RegExp(`WARN +took over the lock on --data-dir ${root} from pid ${pid} on host .*: its process ${pid} is gone`))]);
  });

  it('does not take over a live local holder whose heartbeat stopped (stopped or hung), but does take over a reused pid', async () => {
    // A live process of this host, as a server stopped with SIGSTOP would be.
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      await eventually(async () => (await readFile(`/proc/${child.pid}/stat`, 'utf8')).length, (n) => n > 0, 'the child to run');
      // It took the lock after it started: it is the holder, only silent.
      await writeLock({ ...(await thisProcess()), pid: child.pid!, since: new Date().toISOString(), token: 'stopped' }, 120_000);
      await expect(acquire()).rejects.toThrow(
        new RegExp(`is held by pid ${child.pid} on host .*, which is alive but has not refreshed its heartbeat for 120 s: it is stopped \\(SIGSTOP\\) or hung.* Stop it \\(kill ${child.pid}\\)`),
      );
      expect((await holderOf()).token).toBe('stopped');
      // The lock says it was taken long before this process started: the pid was reused.
      await writeLock({ ...(await thisProcess()), pid: child.pid!, since: '2026-01-01T00:00:00.000Z', token: 'reused' }, 120_000);
      await acquire();
      expect(lines).toEqual([expect.stringMatching(new RegExp(`WARN +took over .* from pid ${child.pid} on host .*: its heartbeat stopped 120 s ago`))]);
    } finally {
      child.kill();
    }
  });

  it('takes over from a holder that exited but was never reaped (a zombie still answers kill -0) once its heartbeat is stale', async () => {
    // sh starts a short sleep and becomes a long one, which never reaps it: a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(d.toString()))));
      await eventually(async () => (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]![0], (state) => state === 'Z', 'the zombie');
      await writeLock({ ...(await thisProcess()), pid, since: new Date().toISOString(), token: 'zombie' }, 120_000);
      await acquire();
      expect(lines).toEqual([expect.stringMatching(new RegExp(`WARN +took over .* from pid ${pid} on host .*: its heartbeat stopped 120 s ago`))]);
    } finally {
      parent.kill();
    }
  });

  it('refuses a lock of another host while its heartbeat is fresh, and takes it over once it is stale', async () => {
    const other: LockHolder = { pid: 4242, host: 'node-b', pidScope: 'node-b', since: '2026-01-01T00:00:00.000Z', token: 'other' };
    await writeLock(other);
    await expect(acquire({ staleAfterMs: 60_000 })).rejects.toThrow(/pid 4242 on host node-b, .*; it is taken over once its heartbeat is 60 s old\.$/);
    await writeLock(other, 120_000);
    await acquire({ staleAfterMs: 60_000 });
    expect(lines).toEqual([expect.stringMatching(/WARN +took over .* from pid 4242 on host node-b, .*: its heartbeat stopped 120 s ago/)]);
  });

  it('refuses a lock being written by a server that is starting (empty file), takes it over once it is old', async () => {
    await writeFile(lockPath(), '');
    await expect(acquire()).rejects.toThrow(/is being claimed by a PolicyGuard that is starting/);
    const old = new Date(Date.now() - 60_000);
    await utimes(lockPath(), old, old);
    await acquire();
  });

  it('of servers racing for a stale lock, exactly one wins, every time', async () => {
    const here = await thisProcess();
    const pid = await deadPid();
    for (let round = 0; round < 20; round++) {
      await writeLock({ ...here, pid, since: '2026-01-01T00:00:00.000Z', token: `dead-${round}` });
      // Staggered starts, so some racers judge the lock stale while another is replacing it.
      const results = await Promise.allSettled([0, 0, 1, 2, 4, 8].map((ms) => new Promise((r) => setTimeout(r, ms)).then(() => acquire())));
      const winners = results.filter((r) => r.status === 'fulfilled');
      expect(winners).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(DataDirLockedError);
      expect((await holderOf()).token).toBe((winners[0] as PromiseFulfilledResult<DataDirLock>).value.holder.token);
      for (const lock of held.splice(0)) await lock.release();
    }
  });

  it('refreshes its heartbeat, and removes the lock on release only while it is its own', async () => {
    const lock = await acquire({ heartbeatMs: 50 });
    const old = new Date(Date.now() - 60_000);
    await utimes(lockPath(), old, old);
    await eventually(async () => (await stat(lockPath())).mtimeMs, (m) => m > Date.now() - 10_000, 'the heartbeat');
    await lock.release();
    await expect(stat(lockPath())).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it.each([
    ['held by another server', async () => writeLock({ pid: 4242, host: 'node-b', pidScope: 'node-b', since: '2026-01-01T00:00:00.000Z', token: 'thief' }), /it is now held by pid 4242 on host node-b/],
    ['removed', async () => rm(lockPath()), /its lock file .* was removed/],
  ] as const)('a holder whose lock is %s says so at ERROR and stops (onLost), once', async (_what, steal, expected) => {
    const lost: string[] = [];
    const lock = await acquire({ heartbeatMs: 50, onLost: (m) => lost.push(m) });
    await steal();
    await eventually(async () => lost, (l) => l.length > 0, 'onLost');
    await new Promise((r) => setTimeout(r, 200)); // more heartbeats would have run
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatch(expected);
    expect(lines).toEqual([expect.stringMatching(/ERROR +lost the lock on --data-dir .*this one stops \(fail closed\)/)]);
    await lock.release();
    if (_what !== 'removed') expect((await holderOf()).token).toBe('thief'); // not its own: left alone
  });
});
