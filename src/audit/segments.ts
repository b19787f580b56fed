import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** A segment file of the audit log; `seq` orders them (1 is the oldest ever written). */
export interface SegmentFile {
  seq: number;
  path: string;
}

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
 * follows `audit-999999.jsonl`). Other files in the directory are ignored.
 *
 * @example
 * const segments = await listSegments('/data/audit'); // [{ seq: 1, path: '/data/audit/audit-000001.jsonl' }, …]
 */
export async function listSegments(dir: string): Promise<SegmentFile[]> {
  const segments: SegmentFile[] = [];
  for (const name of await readdir(dir)) {
    const match = SEGMENT_NAME.exec(name);
    if (match?.[1]) segments.push({ seq: Number(match[1]), path: join(dir, name) });
  }
  return segments.sort((a, b) => a.seq - b.seq);
}
