import type { KeyObject } from 'node:crypto';
import { open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { syncDirectory } from './jsonl.js';
import { macMatches, macOf } from './key.js';
import { canonicalJson, parseAuditLine } from './record.js';

/**
 * An anchor: the head of an audit chain written down outside the log, so records cut off its
 * end, or a whole log rewritten, no longer verify (docs/decisions.md). It names the last record
 * that was durable when it was written; records after it were written since and are fine.
 */
export interface AuditAnchor {
  version: 1;
  entry_id: string;
  hash: string;
  /** Segment sequence number: `audit-NNNNNN.jsonl`, or the ring's `policyguard.dev/audit-sequence`. */
  segment: number;
  /** 1-based line of the record in its segment. */
  line: number;
  /** When the anchor was written, RFC 3339. */
  time: string;
  /** HMAC-SHA256 (hex) of the canonical JSON of the other fields, with an audit key. */
  mac?: string;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

export const AuditAnchorSchema: z.ZodType<AuditAnchor> = z.object({
  version: z.literal(1),
  entry_id: z.string().min(1),
  hash: z.string().regex(SHA256_HEX),
  segment: z.number().int().positive(),
  line: z.number().int().positive(),
  time: z.string(),
  mac: z.string().regex(SHA256_HEX).optional(),
});

/** Where a record sits in its log: what an anchor names. */
export interface AnchorPoint {
  entry_id: string;
  hash: string;
  segment: number;
  line: number;
}

/**
 * The anchor naming `point` now, with a MAC when there is a key.
 *
 * @example
 * await store.write(createAnchor({ entry_id, hash, segment: 3, line: 120 }, key));
 */
export function createAnchor(point: AnchorPoint, key?: KeyObject, now = new Date()): AuditAnchor {
  const anchor: AuditAnchor = { version: 1, entry_id: point.entry_id, hash: point.hash, segment: point.segment, line: point.line, time: now.toISOString() };
  return key ? { ...anchor, mac: macOf(key, anchorMacText(anchor)) } : anchor;
}

function anchorMacText(anchor: AuditAnchor): string {
  const { mac: _mac, ...fields } = anchor;
  return canonicalJson(fields);
}

/**
 * Parses a stored anchor; throws an error naming `where` when it is not one.
 *
 * @example
 * const anchor = parseAnchor(await readFile(path, 'utf8'), path);
 */
export function parseAnchor(text: string, where: string): AuditAnchor {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`the audit anchor at ${where} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  const parsed = AuditAnchorSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`the audit anchor at ${where} is not an anchor: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}

/**
 * Where a sink keeps its anchor: a file next to the log (standalone) or a ConfigMap
 * (kubernetes mode, configmap-anchor.ts), out of reach of whoever can only edit the log.
 */
export interface AuditAnchorStore {
  /** For messages: `file /data/audit/anchor.json`, `ConfigMap ns/name`. */
  readonly location: string;
  /** What an operator does to accept a log as it is (after keeping the old anchor as evidence). */
  readonly discardHint: string;
  /** The stored anchor, undefined when there is none; rejects when it cannot be read or is not an anchor. */
  read(): Promise<AuditAnchor | undefined>;
  /** Replaces the stored anchor; resolves once it is durable. */
  write(anchor: AuditAnchor): Promise<void>;
}

/** The anchor file of a file sink's folder. */
export const ANCHOR_FILE = 'anchor.json';

/**
 * The anchor as a file, replaced atomically (temporary file, fsync, rename, fsync of the
 * folder), so a crash leaves the old anchor or the new one, never half of one.
 *
 * @example
 * const store = new FileAnchorStore(join('/data/audit', ANCHOR_FILE));
 */
export class FileAnchorStore implements AuditAnchorStore {
  readonly location: string;
  readonly discardHint: string;

  constructor(private readonly path: string) {
    this.location = `file ${path}`;
    this.discardHint = `move ${path} aside (keep it: it is the evidence)`;
  }

  /** The anchor file of the audit folder `dir`. */
  static inDir(dir: string): FileAnchorStore {
    return new FileAnchorStore(join(dir, ANCHOR_FILE));
  }

  async read(): Promise<AuditAnchor | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    return parseAnchor(text, this.location);
  }

  async write(anchor: AuditAnchor): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const handle = await open(tmp, 'w');
    try {
      await handle.writeFile(`${JSON.stringify(anchor)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.path);
    await syncDirectory(dirname(this.path));
  }
}

/** What a log holds where an anchor points, as gathered by verification or by a sink on open. */
export interface AnchorSite {
  /** Sequence numbers of the segments the log holds, oldest first. */
  segments: readonly number[];
  /** Lines of the anchored segment (0 when it is not there). */
  lines: number;
  /** The text of the anchored line, when the segment has that many lines. */
  text: string | undefined;
  /** The last record of the log as it is now, for messages. */
  lastEntryId: string | undefined;
  /**
   * Where the anchored record was found instead of where the anchor says (`audit-000002.jsonl:12`),
   * when it was looked for elsewhere and found.
   */
  moved?: string;
  /** A segment's name for messages: `audit-000003.jsonl`, `policyguard-audit-pod-0-2`. */
  describeSegment(seq: number): string;
}

export type AnchorCheck = { ok: true; note: string } | { ok: false; reason: string };

/**
 * Compares an anchor with what the log holds. Fails when the log ends before the anchored record
 * (`truncated: at least N records after … were removed`, N as exact as the log allows), when
 * another record stands where it stood (rewritten), or, with a key, when the anchor's MAC is
 * wrong or missing (an anchor may lack a MAC only if the record it names lacks one too: both
 * written before the key was configured). An anchor older than the oldest segment is fine:
 * retention deleted what it names.
 *
 * @example
 * const check = checkAnchor(anchor, site, key);
 * if (!check.ok) console.error(check.reason);
 */
export function checkAnchor(anchor: AuditAnchor, site: AnchorSite, key?: KeyObject): AnchorCheck {
  const where = `${site.describeSegment(anchor.segment)}:${anchor.line}`;
  const named = `the anchor of ${anchor.time} names ${anchor.entry_id} at ${where}`;
  if (key && anchor.mac !== undefined && !macMatches(key, anchorMacText(anchor), anchor.mac)) {
    return { ok: false, reason: `the anchor's MAC does not match: it was not written with this key (forged, or another key) (${named})` };
  }
  // Retention deletes whole segments, so the anchored record is where the anchor says or gone:
  // found elsewhere, records before it were removed and the segments renumbered.
  if (site.moved !== undefined) {
    return { ok: false, reason: `moved: the anchored record is at ${site.moved}, not ${where}: records before it were removed and segments renumbered (${named})` };
  }
  const truncated = (count: number): AnchorCheck => ({
    ok: false,
    reason: `truncated: at least ${count} records after ${site.lastEntryId ?? 'the start of the log'} were removed (${named})`,
  });
  const oldest = site.segments[0];
  const newest = site.segments.at(-1);
  if (!site.segments.includes(anchor.segment)) {
    if (oldest === undefined || newest === undefined || anchor.segment > newest) return truncated(anchor.line);
    if (anchor.segment < oldest) {
      return { ok: true, note: `${named}, a segment retention has deleted since; it bounds nothing any more` };
    }
    return { ok: false, reason: `the anchored segment is missing (${named})` };
  }
  if (site.lines < anchor.line) return truncated(anchor.line - site.lines);
  const found = parseAuditLine(site.text ?? '');
  if (!found || found.entry_id !== anchor.entry_id || found.hash !== anchor.hash) {
    const instead = found ? `${found.entry_id} (hash ${found.hash})` : 'a line that is not a record';
    return { ok: false, reason: `rewritten: ${where} holds ${instead}, not the anchored record with hash ${anchor.hash} (${named})` };
  }
  if (key && anchor.mac === undefined && found.mac !== undefined) {
    return { ok: false, reason: `the anchor has no MAC, but the record it names has one: the anchor was rewritten without the key (${named})` };
  }
  return { ok: true, note: `${named}; the log holds it` };
}

/** The log does not reach, or does not match, its anchor. */
export class AuditAnchorError extends Error {
  override readonly name = 'AuditAnchorError';
}

/**
 * Run by a sink before it opens: throws an {@link AuditAnchorError} when the log does not hold
 * what its anchor names, so records removed or rewritten while PolicyGuard was not running are
 * not papered over by the new anchor the sink writes next. `siteOf` gathers what the log holds
 * where the anchor points.
 *
 * @example
 * await ensureLogReachesAnchor(store, key, (anchor) => siteOfMyLog(anchor));
 */
export async function ensureLogReachesAnchor(
  store: AuditAnchorStore,
  key: KeyObject | undefined,
  siteOf: (anchor: AuditAnchor) => Promise<AnchorSite>,
): Promise<void> {
  const anchor = await store.read();
  if (!anchor) return;
  const check = checkAnchor(anchor, await siteOf(anchor), key);
  if (!check.ok) {
    throw new AuditAnchorError(
      `the audit log does not match its anchor (${store.location}): ${check.reason}. Records were removed or rewritten ` +
        `while PolicyGuard was not running, or the log was lost. \`policyguard audit verify\` shows the details; ` +
        `to start with the log as it is, ${store.discardHint}.`,
    );
  }
}
