import type { KeyObject } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { NotRegularFileError, readRegularFile } from '../regular-file.js';
import { syncDirectory } from './jsonl.js';
import { macMatches, macOf } from './key.js';
import { GENESIS_HASH, canonicalJson, parseAuditLine } from './record.js';

/**
 * An anchor: the head of an audit chain written down outside the log, so records cut off its
 * end, or a whole log rewritten, no longer verify (docs/decisions.md). It names the last record
 * that was durable when it was written; records after it were written since and are fine. The
 * genesis anchor ({@link GENESIS_POINT}) names no record: a sink writes it when it opens an
 * empty log, before it takes a record, so a log has an anchor from its first record on.
 */
export interface AuditAnchor {
  version: 1;
  /** The anchored record's id; `genesis` in the genesis anchor. */
  entry_id: string;
  hash: string;
  /** Segment sequence number: `audit-NNNNNN.jsonl`, or the ring's `policyguard.dev/audit-sequence`; 0 in the genesis anchor. */
  segment: number;
  /** 1-based line of the record in its segment; 0 in the genesis anchor. */
  line: number;
  /** When the anchor was written, RFC 3339. */
  time: string;
  /** HMAC-SHA256 (hex) of the canonical JSON of the other fields, with an audit key. */
  mac?: string;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * What the genesis anchor names: the position before the first record of segment 1, whose
 * prev_hash is the genesis hash. Segment and line 0 are never a record's, and `genesis` is
 * never a record's id (those are `aud_…`).
 */
export const GENESIS_POINT: AnchorPoint = { entry_id: 'genesis', hash: GENESIS_HASH, segment: 0, line: 0 };

/**
 * Whether `anchor` is the genesis anchor: "this log existed and was empty".
 *
 * @example
 * if (isGenesisAnchor(anchor)) console.log('anchored before its first record');
 */
export function isGenesisAnchor(anchor: AnchorPoint): boolean {
  return anchor.segment === GENESIS_POINT.segment && anchor.line === GENESIS_POINT.line && anchor.entry_id === GENESIS_POINT.entry_id && anchor.hash === GENESIS_POINT.hash;
}

const AuditAnchorSchema: z.ZodType<AuditAnchor> = z
  .object({
    version: z.literal(1),
    entry_id: z.string().min(1),
    hash: z.string().regex(SHA256_HEX),
    segment: z.number().int().nonnegative(),
    line: z.number().int().nonnegative(),
    time: z.string(),
    mac: z.string().regex(SHA256_HEX).optional(),
  })
  .refine((anchor) => (anchor.segment > 0 && anchor.line > 0) || isGenesisAnchor(anchor), {
    message: `segment and line are positive, except in the genesis anchor (${JSON.stringify(GENESIS_POINT)})`,
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
 * Whether `anchor` carries a MAC that `key` verifies: then a server holding the key wrote it,
 * and that server signed every record it wrote after the one the anchor names.
 *
 * @example
 * if (anchorAuthenticated(anchor, key)) chain.requireMacs(); // past the anchored record
 */
export function anchorAuthenticated(anchor: AuditAnchor, key: KeyObject | undefined): boolean {
  return key !== undefined && macMatches(key, anchorMacText(anchor), anchor.mac);
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
const ANCHOR_FILE = 'anchor.json';

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
      text = await readRegularFile(this.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (error instanceof NotRegularFileError) throw new Error(`the audit anchor at ${this.location} ${error.reason}`, { cause: error });
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

/** Where a record sits: a segment's sequence number and a 1-based line. */
export interface LogPosition {
  segment: number;
  line: number;
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
   * Where the anchored record was found instead of where the anchor says, when the anchored
   * line does not hold it and it was looked for elsewhere and found.
   */
  moved?: LogPosition;
  /** A segment's name for messages: `audit-000003.jsonl`, `policyguard-audit-pod-0-2`. */
  describeSegment(seq: number): string;
}

/**
 * Whether `text` is the line of the record `anchor` names (same entry id and hash).
 *
 * @example
 * if (!isAnchoredLine(anchor, lineAtAnchor)) site.moved = findElsewhere(anchor);
 */
export function isAnchoredLine(anchor: AuditAnchor, text: string | undefined): boolean {
  const record = parseAuditLine(text ?? '');
  return record?.entry_id === anchor.entry_id && record.hash === anchor.hash;
}

/**
 * Where to look for the anchored record when its line does not hold it: its own segment, or,
 * when that is gone as if by retention, the oldest kept one (where it must not be either).
 * Retention deletes whole segments, so a record found there was moved by hand.
 *
 * @example
 * const searched = segmentToSearch(anchor, segments); // then find the record's line in it
 */
export function segmentToSearch<T extends { seq: number }>(anchor: AuditAnchor, segments: readonly T[]): T | undefined {
  // The genesis anchor names no record: there is nothing to look for.
  if (isGenesisAnchor(anchor)) return undefined;
  const oldest = segments[0];
  return segments.find((segment) => segment.seq === anchor.segment) ?? (oldest && oldest.seq > anchor.segment ? oldest : undefined);
}

/**
 * `missingMac`: the only fault is that the anchor lacks a MAC while a key is given — an anchor
 * written before the key was configured, or one whose MAC was stripped (the two look the same).
 */
export type AnchorCheck = { ok: true; note: string } | { ok: false; reason: string; missingMac?: true };

/**
 * Compares an anchor with what the log holds. Fails, saying what was found, when the anchored
 * line does not hold the anchored record: it stands elsewhere (`moved`: records before it were
 * removed or reordered, or segments renumbered), the log ends before it (`truncated: at least N
 * records after … were removed`, N as exact as the log allows), or another record stands there
 * (`rewritten`). With a key, the anchor's MAC must match, and an anchor without one fails:
 * naming a record that has a MAC, it was rewritten without the key; otherwise it may have been
 * written before the key was configured, or stripped with the records' MACs, which the log
 * cannot tell apart (`missingMac`). An anchor older than the oldest segment is fine: retention
 * deleted what it names.
 *
 * The genesis anchor names the start of the log, which every log that still holds segment 1
 * (or no segment) reaches; that segment 1 starts at the genesis hash is the chain check's part
 * (checkChainOnOpen, verify). Its MAC is checked like any anchor's, but one without a MAC on a
 * log without records is fine: there is nothing it could vouch for, as with no anchor at all.
 *
 * @example
 * const check = checkAnchor(anchor, site, key);
 * if (!check.ok) console.error(check.reason);
 */
export function checkAnchor(anchor: AuditAnchor, site: AnchorSite, key?: KeyObject): AnchorCheck {
  const where = at(site, anchor);
  const named = `the anchor of ${anchor.time} names ${anchor.entry_id} at ${where}`;
  if (key && anchor.mac !== undefined && !anchorAuthenticated(anchor, key)) {
    return { ok: false, reason: `the anchor's MAC does not match: it was not written with this key (forged, or another key) (${named})` };
  }
  if (isGenesisAnchor(anchor)) return checkGenesisAnchor(anchor, site, key);
  const found = site.segments.includes(anchor.segment) ? parseAuditLine(site.text ?? '') : undefined;
  const holds = found !== undefined && isAnchoredLine(anchor, site.text);
  if (!holds) {
    const misplaced = whereNot(anchor, site, found, named);
    if (misplaced) return misplaced;
  }
  if (key && anchor.mac === undefined) {
    if (holds && found.mac !== undefined) {
      return { ok: false, reason: `the anchor has no MAC, but the record it names has one: the anchor was rewritten without the key (${named})` };
    }
    return {
      ok: false,
      missingMac: true,
      reason:
        `the anchor has no MAC though a key is given: it was written before the key was configured, or its MAC was stripped ` +
        `together with the records' (${named})`,
    };
  }
  if (!site.segments.includes(anchor.segment)) return { ok: true, note: `${named}, a segment retention has deleted since; it bounds nothing any more` };
  return { ok: true, note: `${named}; the log holds it` };
}

/** {@link checkAnchor} for the genesis anchor, whose MAC, if any, matched. */
function checkGenesisAnchor(anchor: AuditAnchor, site: AnchorSite, key: KeyObject | undefined): AnchorCheck {
  const named = `the genesis anchor of ${anchor.time} (written when the log was empty)`;
  if (key && anchor.mac === undefined && site.lastEntryId !== undefined) {
    return {
      ok: false,
      missingMac: true,
      reason: `the anchor has no MAC though a key is given: it was written before the key was configured, or its MAC was stripped (${named})`,
    };
  }
  const oldest = site.segments[0];
  if (oldest !== undefined && oldest > 1) return { ok: true, note: `${named}; retention has deleted segment 1 since, so it bounds nothing any more` };
  return { ok: true, note: `${named}; the log starts there` };
}

function at(site: AnchorSite, position: LogPosition): string {
  return `${site.describeSegment(position.segment)}:${position.line}`;
}

/** Why the anchored line does not hold the anchored record, or undefined when retention explains it. */
function whereNot(anchor: AuditAnchor, site: AnchorSite, found: ReturnType<typeof parseAuditLine>, named: string): AnchorCheck | undefined {
  const where = at(site, anchor);
  // Retention deletes whole segments, so the anchored record is where the anchor says or gone.
  if (site.moved !== undefined) {
    const { segment, line } = site.moved;
    const how =
      segment !== anchor.segment
        ? 'records before it were removed and segments renumbered'
        : line < anchor.line
          ? `${anchor.line - line} line(s) before it were removed, or moved after it`
          : `${line - anchor.line} line(s) were inserted before it`;
    return { ok: false, reason: `moved: the anchored record is at ${at(site, site.moved)}, not ${where}: ${how} (${named})` };
  }
  const truncated = (count: number): AnchorCheck => ({
    ok: false,
    reason: `truncated: at least ${count} records after ${site.lastEntryId ?? 'the start of the log'} were removed (${named})`,
  });
  const oldest = site.segments[0];
  const newest = site.segments.at(-1);
  if (!site.segments.includes(anchor.segment)) {
    if (oldest === undefined || newest === undefined || anchor.segment > newest) return truncated(anchor.line);
    if (anchor.segment < oldest) return undefined;
    return { ok: false, reason: `the anchored segment is missing (${named})` };
  }
  if (site.lines < anchor.line) return truncated(anchor.line - site.lines);
  const instead = found ? `${found.entry_id} (hash ${found.hash})` : 'a line that is not a record';
  return { ok: false, reason: `rewritten: ${where} holds ${instead}, not the anchored record with hash ${anchor.hash} (${named})` };
}

/** The log does not reach, or does not match, its anchor, or has none. */
export class AuditAnchorError extends Error {
  override readonly name = 'AuditAnchorError';
}

/** The serve flag that accepts a log without a (verifiable) anchor once (docs/decisions.md, "The audit log"). */
const ACCEPT_MISSING_ANCHOR_FLAG = '--audit-accept-missing-anchor';
/** How to start once with it, there and in a cluster (where the chart's `extraEnv` sets it). */
const START_ONCE = `start once with ${ACCEPT_MISSING_ANCHOR_FLAG} (in a cluster: POLICYGUARD_AUDIT_ACCEPT_MISSING_ANCHOR=true in the chart's extraEnv)`;

/** What {@link ensureLogReachesAnchor} needs to know besides the anchor. */
export interface AnchorOnOpen {
  /** The last record of the log and where it is (`audit-000010.jsonl:2`); undefined for a log without records. */
  head: { entryId: string; where: string } | undefined;
  /** Start although the log holds records and no anchor, or (with a key) an anchor without a MAC: logged, once per start. */
  acceptMissingAnchor: boolean;
  log: (msg: string) => void;
}

/**
 * Run by a sink before it opens: throws an {@link AuditAnchorError} when the log does not hold
 * what its anchor names, so records removed or rewritten while PolicyGuard was not running are
 * not papered over by the new anchor the sink writes next. A log that holds records but has no
 * anchor — or, with a key, only an anchor without a MAC — is refused too, unless
 * `acceptMissingAnchor` (the operator's word that the log predates anchors or the key, or that
 * the anchor store was reset on purpose); what was accepted is logged. `siteOf` gathers what the
 * log holds where the anchor points. Resolves with the anchor when the key verified its MAC
 * (records after the one it names must then all be signed), else undefined.
 *
 * @example
 * const anchor = await ensureLogReachesAnchor(store, key, (a) => siteOfMyLog(a), { head, acceptMissingAnchor: false, log });
 */
export async function ensureLogReachesAnchor(
  store: AuditAnchorStore,
  key: KeyObject | undefined,
  siteOf: (anchor: AuditAnchor) => Promise<AnchorSite>,
  opts: AnchorOnOpen,
): Promise<AuditAnchor | undefined> {
  const anchor = await store.read();
  const accepting = `accepted with ${ACCEPT_MISSING_ANCHOR_FLAG}`;
  if (!anchor) {
    if (!opts.head) return undefined;
    const what = `the audit log holds records up to ${opts.head.entryId} (${opts.head.where}) but has no anchor (${store.location})`;
    if (opts.acceptMissingAnchor) {
      opts.log(`${what}; ${accepting}: the log is taken as it is, and records cut off its end before now cannot be detected. A new anchor is written now; remove the flag.`);
      return undefined;
    }
    throw new AuditAnchorError(
      `${what}: records cut off its end cannot be detected, and deleting the anchor is how that would be hidden. ` +
        `If the log was written before anchors existed, or the anchor store was reset on purpose, ${START_ONCE}; ` +
        `\`policyguard audit verify --no-anchor\` checks the chain alone.`,
    );
  }
  const check = checkAnchor(anchor, await siteOf(anchor), key);
  if (!check.ok && check.missingMac && opts.acceptMissingAnchor) {
    opts.log(`${check.reason}; ${accepting}: the log up to the anchored record is taken as it is. A new anchor, with a MAC, is written now; remove the flag.`);
  } else if (!check.ok) {
    const hint = check.missingMac
      ? `if the key is new for this log, ${START_ONCE}`
      : `to start with the log as it is, ${store.discardHint} and ${START_ONCE}`;
    const what = check.missingMac
      ? `the audit log's anchor (${store.location}) cannot be authenticated: ${check.reason}. `
      : `the audit log does not match its anchor (${store.location}): ${check.reason}. Records were removed or rewritten while PolicyGuard was not running, or the log was lost. `;
    throw new AuditAnchorError(`${what}\`policyguard audit verify\` shows the details; ${hint}.`);
  } else if (opts.acceptMissingAnchor) {
    opts.log(`${ACCEPT_MISSING_ANCHOR_FLAG} is set, but the audit log matches its anchor: nothing to accept; remove the flag.`);
  }
  return anchorAuthenticated(anchor, key) ? anchor : undefined;
}
