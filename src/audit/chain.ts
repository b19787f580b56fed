import type { KeyObject } from 'node:crypto';
import { macMatches } from './key.js';
import { AuditRecordSchema, canonicalJson, hashRecord, type AuditRecord, type HashedAuditFields } from './record.js';

/** Why a line breaks the chain, and the record's id when it has one. */
export interface BrokenLink {
  reason: string;
  entryId?: string;
}

/**
 * The line the writer stores for a record (sealAuditRecord in record.ts): the canonical JSON of
 * its hashed fields with `hash`, and `mac` when there is one, added as the last members.
 *
 * @example
 * const { hash, mac, ...fields } = record;
 * storedAuditLine(fields, hash, mac) === lineAsWritten;
 */
function storedAuditLine(fields: HashedAuditFields, hash: string, mac: string | undefined): string {
  return `${canonicalJson(fields).slice(0, -1)},"hash":"${hash}"${mac === undefined ? '' : `,"mac":"${mac}"`}}`;
}

/**
 * The line-by-line check of an audit chain, shared by verification (every line) and by a sink
 * on open (the lines it reads): each line must be a record, exactly as the writer stores it
 * ({@link storedAuditLine}: not merely a line that parses to the same value), whose hash matches
 * its content and whose prev_hash is the previous record's hash. With a key, a record's `mac`
 * must be the HMAC of its hash; a record may lack one only before the first signed record and
 * before {@link requireMacs} is called — records written before the key was configured
 * (docs/decisions.md, "The audit log").
 *
 * After a broken line the check goes on: the next record must link to the hash this one
 * stores (an edited record is reported once, not with every record after it); after a line
 * that is no record at all, the next record's prev_hash is taken as given.
 *
 * @example
 * const chain = new ChainCheck(GENESIS_HASH, 'genesis: segment 1 starts the log', key);
 * for (const line of lines) { const broken = chain.check(line); if (broken) problems.push(broken); }
 */
export class ChainCheck {
  /** Records that passed every check. */
  records = 0;
  /** Records carrying a mac (counted so that a check without the key can say what it skipped). */
  macs = 0;
  /** Records accepted without a mac under a key: written before the key was configured. */
  unsigned = 0;
  /** Lines that were records, whether they verified or not. */
  seen = 0;
  /** Hash stored by the last line that was a record, whether it verified or not. */
  head: string | undefined;
  /** Entry id of that record. */
  lastEntryId: string | undefined;
  /** The first line that was a record: what the log still holds from furthest back. */
  first: { entryId: string; timestamp: string } | undefined;
  /** A record with a mac was seen, or {@link requireMacs} was called: from here on every record must carry one. */
  private signed = false;
  /** What the next record must link to, for messages; after that record, "the previous record's hash". */
  private linkReason: string;

  /**
   * `expectedPrev`: what the first record must link to, or undefined to accept it as given;
   * `reason` says what that is, for messages (`genesis: segment 1 starts the log`).
   */
  constructor(
    private expectedPrev: string | undefined,
    reason: string,
    private readonly key: KeyObject | undefined,
  ) {
    this.linkReason = reason;
  }

  /** From here on, with a key, every record must carry a mac: past the record an authenticated anchor names. */
  requireMacs(): void {
    this.signed = true;
  }

  /**
   * The next record must link to `expectedPrev` (`reason` says what it is), or, undefined, its
   * prev_hash is taken as given: what stood before it was not read (a missing segment, a stretch
   * skipped).
   *
   * @example
   * chain.linkNext(undefined, ''); // audit-000004.jsonl is missing: start again at audit-000005.jsonl
   */
  linkNext(expectedPrev: string | undefined, reason: string): void {
    this.expectedPrev = expectedPrev;
    this.linkReason = reason;
  }

  /** Checks the next line; `utf8` false: its bytes were not valid UTF-8 (readLines). */
  check(text: string, utf8 = true): BrokenLink | undefined {
    const broken = (reason: string, entryId?: string): BrokenLink => ({ reason, ...(entryId === undefined ? {} : { entryId }) });
    const linkReason = this.linkReason;
    this.linkReason = "the previous record's hash";
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      this.linkNext(undefined, '');
      return broken(`invalid JSON: ${(error as Error).message}`);
    }
    const parsed = AuditRecordSchema.safeParse(value);
    if (!parsed.success) {
      this.linkNext(undefined, '');
      const issue = parsed.error.issues[0];
      return broken(`not an audit record: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`, entryIdOf(value));
    }
    // Hash the record as read, not zod's copy: a field added by hand must count as an edit.
    const { hash, mac, ...fields } = value as AuditRecord;
    const expectedPrev = this.expectedPrev;
    // Whatever this record's own fate, the next one links to the hash it stores.
    this.expectedPrev = hash;
    this.seen++;
    this.head = hash;
    this.lastEntryId = fields.entry_id;
    this.first ??= { entryId: fields.entry_id, timestamp: fields.timestamp };
    const signedBefore = this.signed;
    if (mac !== undefined) {
      this.macs++;
      this.signed = true;
    }
    const computed = hashRecord(fields.prev_hash, fields);
    if (computed !== hash) {
      return broken(`hash mismatch: the record was modified after it was written (stored ${hash}, computed ${computed})`, fields.entry_id);
    }
    if (expectedPrev !== undefined && fields.prev_hash !== expectedPrev) {
      return broken(
        `prev_hash mismatch: expected ${expectedPrev} (${linkReason}), found ` +
          `${fields.prev_hash}; a record before this one was deleted, inserted or reordered`,
        fields.entry_id,
      );
    }
    if (!utf8 || text !== storedAuditLine(fields, hash, mac)) {
      return broken(
        `not stored as written: the line parses to a record whose hash matches, but its text differs from the line the writer produced ` +
          `(${utf8 ? 'whitespace, key order, a duplicate key, the spelling of a number or string escapes' : 'bytes that are not UTF-8'}); it was edited`,
        fields.entry_id,
      );
    }
    if (this.key) {
      if (mac === undefined && signedBefore) {
        return broken(
          'no mac: with a key, only records written before the key was configured may lack one, and this record follows a signed ' +
            'record or the record an authenticated anchor names; its mac was removed, or it was written without the key',
          fields.entry_id,
        );
      }
      if (mac === undefined) this.unsigned++;
      else if (!macMatches(this.key, hash, mac)) {
        return broken('mac mismatch: the hash was not authenticated with this key; the chain was recomputed without the key, or another key was used', fields.entry_id);
      }
    }
    this.records++;
    return undefined;
  }
}

function entryIdOf(value: unknown): string | undefined {
  const id = (value as { entry_id?: unknown } | null)?.entry_id;
  return typeof id === 'string' ? id : undefined;
}
