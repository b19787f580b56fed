import type { KeyObject } from 'node:crypto';
import type { AuditAnchor } from './anchor.js';
import { ChainCheck, type BrokenLink } from './chain.js';
import type { ForwardLine } from './jsonl.js';
import { GENESIS_HASH, parseAuditLine } from './record.js';
import { segmentGaps } from './segments.js';

/** A segment as {@link checkChainOnOpen} reads it. */
export interface SegmentOnOpen {
  seq: number;
  /** For messages: `audit-000003.jsonl`, `policyguard-audit-pod-0-2`. */
  name: string;
  /** Its lines, first to last. */
  lines(): AsyncIterable<ForwardLine> | Iterable<ForwardLine>;
  /** Its last line, read without the rest; undefined when it is empty. */
  lastLine(): Promise<string | undefined>;
}

/** What {@link checkChainOnOpen} needs besides the segments. */
export interface ChainOnOpen {
  key: KeyObject | undefined;
  /** The anchor when the key verified its MAC (ensureLogReachesAnchor): records after the one it names must be signed. */
  anchor: AuditAnchor | undefined;
  /** Segments retention keeps (the file sink's maxSegments), so oldest ones missing from a shorter log are seen. */
  retained?: number;
  /** A segment's name for messages, also for one that is missing. */
  describeSegment(seq: number): string;
  /** What the operator does to start a new log instead (`move /data/audit aside (keep it: it is the evidence)`). */
  startOverHint: string;
}

/** The audit log is broken where a sink looked on open, or signed while the sink has no key. */
export class AuditChainError extends Error {
  override readonly name = 'AuditChainError';
}

/**
 * Run by a sink before it opens, after the anchor check: throws an {@link AuditChainError},
 * naming segment and line, when the log is broken where the next records would continue it, so
 * a sink never appends to (and re-anchors) a chain `policyguard audit verify` rejects:
 * - segment numbers with a gap, one number twice, or the oldest ones missing from a log shorter
 *   than retention ({@link segmentGaps});
 * - every line from the last segment holding records on (the head): hash, link, stored form,
 *   and with a key the MACs ({@link ChainCheck}; records after an authenticated anchor must be
 *   signed);
 * - of every older segment, the first and the last line, so the links between segments are
 *   checked: a segment removed, added or copied in shows there, and a log whose first segment is
 *   1 must start at genesis;
 * - without a key, a log whose last record carries a MAC: the sink would append unsigned
 *   records to a signed log.
 * Older segments are not read whole: at 16 MiB each (about 25,000 records) the 20 kept would
 * take seconds to check at every start; `policyguard audit verify` reads everything
 * (docs/decisions.md, "The audit log").
 *
 * @example
 * await checkChainOnOpen(segments, { key, anchor, retained: 20, describeSegment: segmentFileName, startOverHint: 'move /data/audit aside' });
 */
export async function checkChainOnOpen(segments: readonly SegmentOnOpen[], opts: ChainOnOpen): Promise<void> {
  const fail = (where: string, reason: string): never => {
    throw new AuditChainError(
      `the audit log is broken at ${where}: ${reason}. It was changed while PolicyGuard was not running, and a server that ` +
        `continued it would anchor the change as its own; \`policyguard audit verify\` lists every problem. To start a new log, ${opts.startOverHint}.`,
    );
  };
  const gap = segmentGaps(segments.map((segment) => segment.seq), opts.describeSegment, opts.retained)[0];
  if (gap) fail(opts.describeSegment(gap.seq), gap.reason);
  const first = segments[0];
  if (!first) return;
  const lastLines: Array<string | undefined> = [];
  for (const segment of segments) lastLines.push(await segment.lastLine());
  const headIndex = lastLines.findLastIndex((line) => line !== undefined);
  const chain = new ChainCheck(first.seq === 1 ? GENESIS_HASH : undefined, 'genesis: segment 1 starts the log', opts.key);
  const { anchor } = opts;
  if (anchor && anchor.segment < first.seq) chain.requireMacs();
  const checked = (where: string, broken: BrokenLink | undefined) => {
    if (broken) fail(`${where}${broken.entryId ? ` (${broken.entryId})` : ''}`, broken.reason);
  };
  let head: { text: string; where: string } | undefined;
  for (const [i, segment] of segments.entries()) {
    const last = lastLines[i];
    if (i < headIndex) {
      // An empty segment holds no link; the chain goes on across it.
      if (last === undefined) continue;
      let firstLine: string | undefined;
      for await (const { text, utf8 } of segment.lines()) {
        firstLine = text;
        checked(`${segment.name}:1`, chain.check(text, utf8));
        break;
      }
      if (last !== firstLine) {
        chain.linkNext(undefined, '');
        checked(`the last line of ${segment.name}`, chain.check(last));
      }
      if (anchor?.segment === segment.seq) chain.requireMacs();
      continue;
    }
    let line = 0;
    for await (const { text, utf8 } of segment.lines()) {
      line++;
      checked(`${segment.name}:${line}`, chain.check(text, utf8));
      if (anchor?.segment === segment.seq && anchor.line === line) chain.requireMacs();
      head = { text, where: `${segment.name}:${line}` };
    }
  }
  const signed = head && parseAuditLine(head.text);
  if (!opts.key && signed?.mac !== undefined) {
    throw new AuditChainError(
      `the audit log is signed (its last record ${signed.entry_id} at ${head!.where} carries a MAC) but no --audit-key-file was given: ` +
        `records written now would carry none, and the log would no longer verify with its key. Start with --audit-key-file and the ` +
        `key it was written with; to start a new, unsigned log instead, ${opts.startOverHint}.`,
    );
  }
}
