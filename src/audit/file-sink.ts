import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { FileAnchorStore, ensureLogReachesAnchor, isAnchoredLine, segmentToSearch, type AuditAnchor, type AnchorSite } from './anchor.js';
import {
  BatchingAuditSink,
  resolveIntegrity,
  type AuditIntegrityOptions,
  type DurableLine,
  type ResolvedIntegrity,
  type StoredLines,
} from './batching-sink.js';
import { appendDurably, readLineAt, findEntryLine, readLines, readLinesBackward, repairTornTail } from './jsonl.js';
import { AuditChainError, checkChainOnOpen } from './open-check.js';
import { matchesAuditQuery } from './query.js';
import { AuditRecordSchema, GENESIS_HASH, parseAuditLine, type AuditRecord } from './record.js';
import { DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_BYTES, emptyBehindNewest, listSegments, segmentFileName, unfilledBehindNewest } from './segments.js';
import type { AuditFilter, AuditSink } from './sink.js';

/** Anchors go to `<dir>/anchor.json` unless `anchor` says otherwise (kubernetes mode: a ConfigMap). */
export interface FileAuditSinkOptions extends AuditIntegrityOptions {
  /** Directory of the segments; created if missing. */
  dir: string;
  /** A segment is closed before it would grow past this (default 16 MiB). */
  segmentBytes?: number;
  /** Segments kept; older ones are deleted (default 20). A log that lacks segment 1 but holds fewer is refused on open. */
  maxSegments?: number;
  /**
   * The longest record line stored (default 4 MiB, a quarter of a segment); a longer record goes
   * without its largest parameters (withParametersOmitted), and, still longer, is refused (closed mode:
   * its decision is denied) or dropped (open). So every segment behind the newest holds at least
   * segmentBytes - maxLineBytes, which opening checks (unfilledBehindNewest).
   */
  maxLineBytes?: number;
  /** Longest a record waits in memory before its batch is written (default 100). */
  flushIntervalMs?: number;
  /** Records waiting for the disk beyond which new ones are refused or dropped (default 50 000). */
  maxBuffered?: number;
  /** Where repairs, retention, write failures and drops are reported (default stderr). */
  log?: (msg: string) => void;
}

type ResolvedOptions = Required<Omit<FileAuditSinkOptions, keyof AuditIntegrityOptions>>;

const DEFAULTS = {
  segmentBytes: DEFAULT_SEGMENT_BYTES,
  maxSegments: DEFAULT_MAX_SEGMENTS,
  maxLineBytes: DEFAULT_MAX_LINE_BYTES,
  flushIntervalMs: 100,
  maxBuffered: 50_000,
  log: (msg: string) => console.error(`[audit] ${msg}`),
} satisfies Omit<ResolvedOptions, 'dir'>;

interface Segment {
  seq: number;
  path: string;
  /** Bytes known to be durable; scans read no further, so a write in progress is not seen twice. */
  size: number;
  /** Lines in the segment; kept for the newest one, which is appended to (0 for older ones). */
  lines: number;
}

const isAuditRecord = (value: unknown): boolean => AuditRecordSchema.safeParse(value).success;

/**
 * Opens (or creates) a JSONL audit log in `opts.dir`: `audit-000001.jsonl`, `audit-000002.jsonl`, …
 * Appends are buffered and written in batches, one write + fdatasync each, every
 * `flushIntervalMs` or on `flush()`. On open, a last line torn by a crash (one without its `\n`)
 * is repaired, the log is checked, and the hash chain continues from the last valid record.
 * The open rejects, leaving everything as it found it, when:
 * - an entry named like a segment is not a regular file (an AuditChainError);
 * - the log does not hold the record its anchor names (cut off or rewritten while stopped), or
 *   holds records but has no anchor (unless `acceptMissingAnchor`), or, with a key, only an
 *   anchor without a MAC (an AuditAnchorError; see ensureLogReachesAnchor);
 * - the log is broken where it would be continued, or is signed and there is no key
 *   (an AuditChainError; see checkChainOnOpen);
 * - the key file is bad or the first anchor cannot be written.
 *
 * @example
 * const sink = await openFileAuditSink({ dir: '/data/audit', keyFile: '/etc/policyguard/audit.key', log: (m) => logger.warn(m) });
 * const taken = sink.append({ action_id, agent_id, caller, action, evaluation, revision });
 * if (!taken.ok) deny(`audit log unavailable: ${taken.reason}`);
 * const { entries, total } = await sink.query({ status: 'denied', limit: 100 });
 * await sink.close();
 */
export async function openFileAuditSink(opts: FileAuditSinkOptions): Promise<AuditSink> {
  const options = resolveOptions(opts);
  const integrity = await resolveIntegrity(opts, () => FileAnchorStore.inDir(options.dir));
  await mkdir(options.dir, { recursive: true });
  const files = await listSegments(options.dir);
  const odd = files.find((file) => file.unreadable);
  if (odd) {
    throw new AuditChainError(`${odd.path} ${odd.unreadable}: the audit log writes only regular files, so it was put there; move it away (keep it: it is evidence)`);
  }
  const padding = emptyBehindNewest(files, segmentFileName)[0];
  if (padding) throw new AuditChainError(`${join(options.dir, segmentFileName(padding.seq))}: ${padding.reason}; \`policyguard audit verify ${options.dir}\` lists every problem`);
  const segments: Segment[] = files.map((file) => ({ ...file, size: 0, lines: 0 }));
  const newest = segments.at(-1);
  if (newest) {
    // Counted once (a segment is up to 16 MiB): a torn last line counts, and is gone if cut.
    const { lines } = await readLineAt(newest.path, 0);
    const removed = await repairTornTail(newest.path, isAuditRecord, options.log, await mayCutTornLine(newest.seq, lines, integrity));
    newest.lines = removed > 0 ? lines - 1 : lines;
  }
  for (const segment of segments) segment.size = (await stat(segment.path)).size;
  const head = await findChainHead(segments, options.log);
  const headRecord = head.durable && parseAuditLine(head.durable.text);
  const anchor = await ensureLogReachesAnchor(integrity.anchor.store, integrity.key, (a) => siteOf(a, segments, head.durable), {
    head: headRecord && head.durable ? { entryId: headRecord.entry_id, where: `${segmentFileName(head.durable.segment)}:${head.durable.line}` } : undefined,
    acceptMissingAnchor: integrity.acceptMissingAnchor,
    log: options.log,
  });
  // The default anchor lives in the folder; another store (a ConfigMap) must be reset too.
  const ownAnchor = opts.anchor === undefined;
  await checkChainOnOpen(
    segments.map((segment) => ({
      seq: segment.seq,
      name: segmentFileName(segment.seq),
      lines: () => readLines(segment.path),
      lastLine: async () => {
        for await (const line of readLinesBackward(segment.path)) return line.text;
        return undefined;
      },
    })),
    {
      key: integrity.key,
      anchor,
      retained: options.maxSegments,
      describeSegment: segmentFileName,
      startOverHint: `move ${options.dir} aside (keep it: it is the evidence)${ownAnchor ? '' : ` and ${integrity.anchor.store.discardHint}`}`,
    },
  );
  // A log without segment 1 has as many segments as retention keeps (checked above): full ones.
  const rearranged = (await unfilledBehindNewest(files, options.segmentBytes, options.maxLineBytes, segmentFileName))[0];
  if (rearranged) throw new AuditChainError(`${join(options.dir, segmentFileName(rearranged.seq))}: ${rearranged.reason}; \`policyguard audit verify ${options.dir}\` lists every problem`);
  // Only a log that passed its checks is trimmed: retention must not delete the evidence of a
  // change made while the server was stopped.
  await deleteBeyondRetention(segments, options);
  const sink = new FileAuditSink(segments, head, options, integrity);
  await sink.start();
  return sink;
}

/**
 * Whether a torn last line of the newest segment may be cut off on open. A crash tears only a
 * write that no anchor names yet (a record is anchored once it is durable, `\n` and all), so a
 * torn line at or before the anchored record was put there: it stays, and the anchor check
 * refuses the log with those bytes kept as evidence. Without an anchor, only a log that is about
 * to be accepted as it is (--audit-accept-missing-anchor) is repaired; the others are refused.
 */
async function mayCutTornLine(newestSeq: number, newestLines: number, integrity: ResolvedIntegrity): Promise<boolean> {
  let anchor: AuditAnchor | undefined;
  try {
    anchor = await integrity.anchor.store.read();
  } catch {
    return false; // the anchor check names what is wrong with it
  }
  if (!anchor) return integrity.acceptMissingAnchor;
  if (anchor.segment !== newestSeq) return anchor.segment < newestSeq;
  return anchor.line < newestLines;
}

/** What the log holds where `anchor` points. */
async function siteOf(anchor: AuditAnchor, segments: readonly Segment[], durable: DurableLine | undefined): Promise<AnchorSite> {
  const anchored = segments.find((segment) => segment.seq === anchor.segment);
  const { lines, text } = anchored ? await readLineAt(anchored.path, anchor.line) : { lines: 0, text: undefined };
  const site: AnchorSite = {
    segments: segments.map((segment) => segment.seq),
    lines,
    text,
    lastEntryId: durable && parseAuditLine(durable.text)?.entry_id,
    describeSegment: segmentFileName,
  };
  if (isAnchoredLine(anchor, text)) return site;
  const searched = segmentToSearch(anchor, segments);
  const line = searched && (await findEntryLine(searched.path, anchor.entry_id, (text) => isAnchoredLine(anchor, text)));
  return line === undefined || !searched ? site : { ...site, moved: { segment: searched.seq, line } };
}

function resolveOptions(opts: FileAuditSinkOptions): ResolvedOptions {
  const options: ResolvedOptions = {
    dir: opts.dir,
    segmentBytes: opts.segmentBytes ?? DEFAULTS.segmentBytes,
    maxSegments: opts.maxSegments ?? DEFAULTS.maxSegments,
    maxLineBytes: opts.maxLineBytes ?? DEFAULTS.maxLineBytes,
    flushIntervalMs: opts.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
    maxBuffered: opts.maxBuffered ?? DEFAULTS.maxBuffered,
    log: opts.log ?? DEFAULTS.log,
  };
  for (const name of ['segmentBytes', 'maxSegments', 'maxLineBytes', 'flushIntervalMs', 'maxBuffered'] as const) {
    const value = options[name];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`openFileAuditSink: ${name} must be a positive integer, got ${value}`);
    }
  }
  return options;
}

/** Deletes the oldest segments until at most `maxSegments` remain; mutates `segments`. */
async function deleteBeyondRetention(segments: Segment[], options: ResolvedOptions): Promise<void> {
  while (segments.length > options.maxSegments) {
    const oldest = segments.shift();
    if (!oldest) return;
    try {
      await rm(oldest.path, { force: true });
      options.log(`retention: deleted ${basename(oldest.path)} (keeping the newest ${options.maxSegments} segments)`);
    } catch (error) {
      // Writing matters more than deleting; the next open retries the deletion.
      options.log(`retention: could not delete ${oldest.path}: ${String(error)}`);
    }
  }
}

/**
 * The last valid record, newest segment first: its hash continues the chain and it is what the
 * first anchor names. Normally that is the last line of the newest segment; an older segment is
 * read only when the newest is empty (a crash right after rotation), and lines that do not
 * parse are skipped but reported — they stay in the file for `verifyAuditChain` to point at.
 */
async function findChainHead(segments: Segment[], log: (msg: string) => void): Promise<{ hash: string; durable: DurableLine | undefined }> {
  for (const segment of [...segments].reverse()) {
    let skipped = 0;
    for await (const line of readLinesBackward(segment.path)) {
      const record = parseAuditLine(line.text);
      if (record) {
        if (skipped > 0) {
          log(`${segment.path}: ${skipped} unreadable line(s) after the last valid record; the chain continues from ${record.entry_id}`);
        }
        const lines = segment === segments.at(-1) ? segment.lines : (await readLineAt(segment.path, 0)).lines;
        return { hash: record.hash, durable: { text: line.text, segment: segment.seq, line: lines - skipped } };
      }
      skipped++;
    }
  }
  return { hash: GENESIS_HASH, durable: undefined };
}

class FileAuditSink extends BatchingAuditSink {
  /** The segment the last batch went to, for messages. */
  private target: string;

  constructor(
    private readonly segments: Segment[],
    head: { hash: string; durable: DurableLine | undefined },
    private readonly options: ResolvedOptions,
    integrity: ResolvedIntegrity,
  ) {
    super(head.hash, head.durable, { ...options, ...integrity });
    this.target = segments.at(-1)?.path ?? options.dir;
  }

  protected describeTarget(): string {
    return this.target;
  }

  /** Appends as many of `lines` as fit in one segment, with one write + fdatasync. */
  protected async writeSome(lines: readonly string[]): Promise<StoredLines> {
    const segment = await this.segmentWithRoomFor(lines[0] ?? '');
    this.target = segment.path;
    const count = this.linesThatFit(segment, lines);
    const data = `${lines.slice(0, count).join('\n')}\n`;
    // The base class drops the lines from its buffer in the same tick as the size moves on.
    segment.size = await appendDurably(segment.path, data);
    segment.lines += count;
    return { count, segment: segment.seq, line: segment.lines };
  }

  /** The current segment, or a new one when `line` would push the current past segmentBytes. */
  private async segmentWithRoomFor(line: string): Promise<Segment> {
    const current = this.segments.at(-1);
    if (current && (current.size === 0 || current.size + Buffer.byteLength(line) + 1 <= this.options.segmentBytes)) {
      return current;
    }
    const seq = (current?.seq ?? 0) + 1;
    const next: Segment = { seq, path: join(this.options.dir, segmentFileName(seq)), size: 0, lines: 0 };
    // Created (durably) before the oldest is deleted: a crash in between must not leave fewer
    // segments than retention keeps without segment 1, which opening refuses as records cut
    // from the head of the log.
    this.target = next.path;
    await appendDurably(next.path, '');
    this.segments.push(next);
    await deleteBeyondRetention(this.segments, this.options);
    return next;
  }

  /** How many of `lines` go into `segment`: at least one, then as many as fit. */
  private linesThatFit(segment: Segment, lines: readonly string[]): number {
    // A UTF-16 unit is at most 3 UTF-8 bytes: a batch that fits at that is not counted line by line.
    let units = 0;
    for (const line of lines) units += line.length + 1;
    if (segment.size + units * 3 <= this.options.segmentBytes) return lines.length;
    let bytes = segment.size;
    let count = 0;
    for (const line of lines) {
      bytes += Buffer.byteLength(line) + 1;
      if (count > 0 && bytes > this.options.segmentBytes) break;
      count++;
    }
    return count;
  }

  async scan(filter: AuditFilter, visit: (record: AuditRecord) => boolean | void): Promise<{ scanned: number; matched: number }> {
    // Snapshot in one synchronous step: durable sizes plus everything still in memory.
    const segments = this.segments.map(({ path, size }) => ({ path, size }));
    const buffered = this.bufferedLines();
    // The newest stored record is the one the oldest buffered links to, or the chain's head.
    let linksTo = buffered.length > 0 ? (JSON.parse(buffered[0]!) as AuditRecord).prev_hash : this.chainHead;
    const since = filter.since?.getTime();
    const counts = { scanned: 0, matched: 0 };
    /** False once `visit` asks to stop. */
    const consider = (record: AuditRecord): boolean => {
      counts.scanned++;
      if (!matchesAuditQuery(record, filter)) return true;
      counts.matched++;
      return visit(record) !== false;
    };
    for (let i = buffered.length - 1; i >= 0; i--) {
      if (!consider(JSON.parse(buffered[i] ?? '') as AuditRecord)) return counts;
    }
    for (const segment of segments.reverse()) {
      let newestInSegment = true;
      // A segment deleted by retention since the snapshot reads as empty: its records aged out.
      // Lines are read backward a chunk at a time: memory stays bounded by what `visit` keeps.
      for await (const line of readLinesBackward(segment.path, { end: segment.size })) {
        // An unreadable line is verifyAuditChain's to describe; here the record before it does not link.
        const parsed = parseAuditLine(line.text);
        if (!parsed) continue;
        const record = this.checkedRecord(parsed, line.text, basename(segment.path), linksTo);
        linksTo = record.prev_hash;
        if (newestInSegment) {
          newestInSegment = false;
          // Records are appended in time order, so this segment and all older ones are out of range.
          if (since !== undefined && Date.parse(record.timestamp) < since) return counts;
        }
        if (!consider(record)) return counts;
      }
    }
    return counts;
  }
}
