import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { notRegularFile } from '../regular-file.js';

/** A segment file of the audit log; `seq` orders them (1 is the oldest ever written). */
export interface SegmentFile {
  seq: number;
  path: string;
  /** Bytes (0 for an entry that is not a regular file). */
  size: number;
  /**
   * Why the entry cannot be read as a segment (`is a FIFO, not a regular file`), when it is not
   * a regular file: the writer only ever makes regular files, and opening a FIFO would hang.
   */
  unreadable?: string;
}

/** Segments the file sink keeps; older ones are deleted (retention). */
export const DEFAULT_MAX_SEGMENTS = 20;
/** The size at which the file sink starts a new segment. */
export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
/** The longest record line the file sink stores; a longer record is refused (closed mode) or dropped (open). */
export const DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024;

// Six digits sort nicely in `ls`; more digits are accepted once a log outgrows them.
const SEGMENT_NAME = /^audit-(\d{6,})\.jsonl$/;

/**
 * The file name of segment `seq`.
 *
 * @example
 * segmentFileName(2); // 'audit-000002.jsonl'
 */
export function segmentFileName(seq: number): string {
  return `audit-${String(seq).padStart(6, '0')}.jsonl`;
}

/**
 * The audit segments in `dir`, oldest first (by number, not by name, so `audit-1000000.jsonl`
 * follows `audit-999999.jsonl`). Other files in the directory are ignored. Each entry is
 * looked at with lstat, not opened: one that is not a regular file (a FIFO, a folder, a
 * symbolic link) comes back with `unreadable` set.
 *
 * @example
 * const segments = await listSegments('/data/audit'); // [{ seq: 1, path: '/data/audit/audit-000001.jsonl' }, …]
 */
export async function listSegments(dir: string): Promise<SegmentFile[]> {
  const segments: SegmentFile[] = [];
  for (const name of await readdir(dir)) {
    const match = SEGMENT_NAME.exec(name);
    if (!match?.[1]) continue;
    const path = join(dir, name);
    // Retention may delete one between the listing and here (a verify of a live log): gone, not an error.
    const stats = await lstat(path).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    if (!stats) continue;
    const unreadable = notRegularFile(stats);
    segments.push({ seq: Number(match[1]), path, size: unreadable ? 0 : stats.size, ...(unreadable ? { unreadable } : {}) });
  }
  return segments.sort((a, b) => a.seq - b.seq);
}

/** A segment that cannot be where it is, and why. */
export interface SegmentGap {
  seq: number;
  reason: string;
}

/**
 * What the sequence numbers of a log's segments (oldest first) say was removed or added by
 * hand. Retention deletes only the oldest segments, one at a time, once more than `retained`
 * exist, so the segments kept are consecutive and, when segment 1 is gone, there are `retained`
 * of them. Reported: the same number twice (`audit-000005.jsonl` beside `audit-0000005.jsonl`),
 * numbers missing between kept segments, and with `retained`, oldest segments missing from a
 * log too short for retention to have deleted them. `describe` names a segment in messages.
 *
 * @example
 * segmentGaps([1, 2, 4], segmentFileName); // [{ seq: 4, reason: 'audit-000003.jsonl is missing between audit-000002.jsonl and …' }]
 * segmentGaps([4, 5, 6], segmentFileName, 20); // [{ seq: 4, reason: 'segments audit-000001.jsonl to audit-000003.jsonl are missing, but only 3 …' }]
 */
export function segmentGaps(seqs: readonly number[], describe: (seq: number) => string, retained?: number): SegmentGap[] {
  const gaps: SegmentGap[] = [];
  const oldest = seqs[0];
  if (retained !== undefined && oldest !== undefined && oldest > 1 && seqs.length < retained) {
    gaps.push({
      seq: oldest,
      reason:
        `${range(1, oldest - 1, describe)} missing, but only ${seqs.length} segment(s) remain: retention deletes the oldest ` +
        `segments only once more than ${retained} exist, so these were removed by hand (records cut from the head of the log)`,
    });
  }
  for (let i = 1; i < seqs.length; i++) {
    const previous = seqs[i - 1]!;
    const seq = seqs[i]!;
    if (seq === previous) {
      gaps.push({ seq, reason: `two files hold segment ${seq}: one of them was copied in by hand` });
    } else if (seq > previous + 1) {
      gaps.push({
        seq,
        reason: `${range(previous + 1, seq - 1, describe)} missing between ${describe(previous)} and ${describe(seq)}: retention deletes only the oldest segments, so this was removed by hand`,
      });
    }
  }
  return gaps;
}

/**
 * Empty segments other than the newest. The writer opens a segment only to write into it and
 * writes into an empty newest one before opening another, so an empty one behind the newest was
 * put there by hand: padding that makes a log whose oldest segments were removed look long
 * enough for retention to have removed them (and makes retention delete more on the next start).
 *
 * @example emptyBehindNewest([{ seq: 3, size: 90 }, { seq: 4, size: 0 }, { seq: 5, size: 12 }], segmentFileName); // [{ seq: 4, reason: 'audit-000004.jsonl is empty …' }]
 */
export function emptyBehindNewest(files: readonly Pick<SegmentFile, 'seq' | 'size' | 'unreadable'>[], describe: (seq: number) => string): SegmentGap[] {
  return files
    .slice(0, -1)
    .filter((file) => file.size === 0 && file.unreadable === undefined)
    .map((file) => ({
      seq: file.seq,
      reason: `${describe(file.seq)} is empty but is not the newest segment: the writer never leaves one behind, so it was put there by hand (empty segments can make records cut from the head of the log pass for retention)`,
    }));
}

/**
 * Segments behind the newest that are not full, in a log whose oldest segments are gone. The
 * writer starts a new segment only when the next record does not fit in the current one (its
 * size, the record's line and a newline would pass `segmentBytes`), and stores no line longer
 * than `maxLineBytes`, so every segment behind the newest holds at least
 * `segmentBytes - maxLineBytes` bytes, whatever crashed when. (A writer before that limit stored
 * longer lines: a segment followed by one whose first line is longer passes too.) A log without
 * segment 1 is taken as trimmed by retention only when it holds as many segments as retention
 * keeps ({@link segmentGaps}); without this check, records cut from the head or the end of a log
 * and the rest spread over that many files (a segment's number is in no record, so files can be
 * renamed at will) would pass for retention, and so would an anchor whose segment all the
 * renamed files are above (docs/decisions.md, "The audit log").
 *
 * @example await unfilledBehindNewest(await listSegments(dir), 16 * 2 ** 20, 4 * 2 ** 20, segmentFileName); // [] for a log retention trimmed
 */
export async function unfilledBehindNewest(files: readonly SegmentFile[], segmentBytes: number, maxLineBytes: number, describe: (seq: number) => string): Promise<SegmentGap[]> {
  if ((files[0]?.seq ?? 1) === 1) return [];
  const least = segmentBytes - maxLineBytes;
  const gaps: SegmentGap[] = [];
  for (let i = 0; i + 1 < files.length; i++) {
    const file = files[i]!;
    if (file.unreadable !== undefined || file.size >= least) continue;
    const next = files[i + 1]!;
    if (next.unreadable === undefined && (await firstLineBytes(next.path, maxLineBytes)) > maxLineBytes) continue;
    gaps.push({
      seq: file.seq,
      reason:
        `${describe(file.seq)} holds ${file.size} bytes, but a segment behind the newest holds at least ${least}: the writer starts a segment ` +
        `only when a record (at most ${maxLineBytes} bytes) does not fit in ${segmentBytes}; segments were removed, renamed or emptied ` +
        `(records cut from the log can pass for retention's deletions that way)`,
    });
  }
  return gaps;
}

/** Bytes of the first line of `path` (without its newline; the whole file when it has none), read up to `limit` + 1. */
async function firstLineBytes(path: string, limit: number): Promise<number> {
  const handle = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(64 * 1024);
    let read = 0;
    while (read <= limit) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, read);
      if (bytesRead === 0) return read;
      const newline = chunk.subarray(0, bytesRead).indexOf(0x0a);
      if (newline >= 0) return read + newline;
      read += bytesRead;
    }
    return read;
  } finally {
    await handle.close();
  }
}

function range(from: number, to: number, describe: (seq: number) => string): string {
  return from === to ? `${describe(from)} is` : `segments ${describe(from)} to ${describe(to)} are`;
}
