import { describe, expect, it } from 'vitest';
import { AuditRecordsUnwrittenError } from '../audit/sink.js';
import { createLogger } from '../log.js';
import { closeAll } from './shutdown.js';

function setup() {
  const lines: string[] = [];
  const ran: string[] = [];
  const log = createLogger('error', (line) => lines.push(line), 'json');
  const step = (name: string, error?: Error) => [name, () => {
    ran.push(name);
    if (error) throw error;
  }] as const;
  return { lines, ran, log, step };
}

describe('closeAll', () => {
  it('runs every step after one fails, and throws the audit log records error over an earlier and a later failure', async () => {
    const { lines, ran, log, step } = setup();
    const unwritten = new AuditRecordsUnwrittenError('file /data/audit', ['{"entry_id":"aud_1"}'], 'EROFS', new Error('EROFS'));
    const thrown = await closeAll(log, [
      step('stop the watch', new Error('watch gone')),
      step('flush the audit log', unwritten),
      step('release the data-dir lock', new Error("EROFS: read-only file system, unlink 'policyguard.lock'")),
    ]).catch((e: unknown) => e);
    expect(thrown).toBe(unwritten);
    expect(ran).toEqual(['stop the watch', 'flush the audit log', 'release the data-dir lock']);
    expect(lines.map((l) => JSON.parse(l) as { msg: string; error: string }).map((l) => [l.msg, l.error])).toEqual([
      ['shutdown: could not stop the watch', 'watch gone'],
      ['shutdown: could not release the data-dir lock', "EROFS: read-only file system, unlink 'policyguard.lock'"],
    ]);
  });

  it('without an audit failure, throws the first failure and logs the others; resolves when all succeed', async () => {
    const { lines, log, step } = setup();
    const first = new Error('first');
    await expect(closeAll(log, [step('a', first), step('b', new Error('second'))])).rejects.toBe(first);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('shutdown: could not b');
    await expect(closeAll(log, [step('c'), step('d')])).resolves.toBeUndefined();
  });
});
