import { AuditRecordsUnwrittenError } from '../audit/sink.js';
import type { Logger } from '../log.js';

/** One step of a shutdown: what it does (for the log line when it fails), and the doing. */
export type ShutdownStep = readonly [what: string, run: () => Promise<void> | void];

/**
 * Runs every step in order, also after one fails: a failed step must not leave the audit log
 * unflushed, nor hide why it could not be flushed. Throws the audit log's
 * {@link AuditRecordsUnwrittenError} when there is one — it carries the records the caller
 * prints — else the first failure; every other failure is logged here, so none goes unsaid.
 *
 * @example
 * await closeAll(log, [['close the approvals store', () => approvals.close()], ['flush the audit log', () => audit.close()], ['release the data-dir lock', () => lock.release()]]);
 */
export async function closeAll(log: Logger, steps: readonly ShutdownStep[]): Promise<void> {
  const failures: Array<{ what: string; error: unknown }> = [];
  for (const [what, run] of steps) {
    try {
      await run();
    } catch (error) {
      failures.push({ what, error });
    }
  }
  const thrown = failures.find((f) => f.error instanceof AuditRecordsUnwrittenError) ?? failures[0];
  for (const f of failures) {
    if (f !== thrown) log.error(`shutdown: could not ${f.what}`, { error: f.error instanceof Error ? f.error.message : String(f.error) });
  }
  if (thrown) throw thrown.error;
}
