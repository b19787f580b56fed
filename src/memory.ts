/**
 * Giving memory back after a burst. V8 grows its heap to absorb a burst of allocation (a GitOps
 * sync of a thousand objects compiles many snapshots) and keeps most of it committed long after
 * the burst has passed; a full garbage collection that V8 runs as a last resort (compacting,
 * releasing pooled pages) returns it (docs/performance.md, "What the second pass changed").
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

let gc: GcFunction | undefined;

/**
 * One memory-reducing full collection, now: how long it stopped the event loop, or why it could
 * not run (it never throws: giving memory back is never worth a failure). Blocks for as long as
 * a full GC of the heap takes (tens of milliseconds for ~100 MB), so call it when things are quiet.
 *
 * @example
 * const released = releaseMemory(); // after a burst has settled
 * if ('error' in released) log.warn('could not release memory', released);
 */
export function releaseMemory(): { ms: number } | { error: string } {
  const started = performance.now();
  try {
    if (!gc) {
      // The only way to this collection from JavaScript: V8's gc() extension, exposed to a new
      // context after the fact (not to this one, whose globals stay as they are).
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as GcFunction;
    }
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  } catch (err) {
    return { error: String(err) };
  }
  return { ms: Math.round(performance.now() - started) };
}
