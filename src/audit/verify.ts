import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { AuditRecordSchema, GENESIS_HASH, hashRecord } from './record.js';
import { listSegments, type SegmentFile } from './segments.js';

export type AuditVerifyResult =
  | { ok: true; records: number; segments: number }
  | {
      ok: false;
      /** Records that verified before the broken one. */
      records: number;
      file: string;
      /** 1-based line number within `file`. */
      line: number;
      entryId?: string;
      reason: string;
    };

/**
 * Checks the hash chain of an audit log and reports the first broken link: a line that is not
 * JSON or not a record, a record whose hash does not match its content (edited), or a record
 * whose prev_hash is not the previous record's hash (a record deleted, inserted or reordered).
 *
 * `pathOrDir` is one segment file or the sink's directory (all `audit-NNNNNN.jsonl` in order,
 * the chain continuing across them). The first record's prev_hash is accepted as given for a
 * single file, and for a directory whose oldest segment is not `audit-000001.jsonl` — retention
 * deleted the segments it linked to, so there is nothing to compare it with. A directory that
 * still starts at segment 1 must start at the genesis hash, so deleting the very first record is
 * caught too.
 *
 * @example
 * const result = await verifyAuditChain('/data/audit');
 * if (!result.ok) console.error(`${result.file}:${result.line}: ${result.reason}`);
 */
export async function verifyAuditChain(pathOrDir: string): Promise<AuditVerifyResult> {
  const isDir = (await stat(pathOrDir)).isDirectory();
  const files: SegmentFile[] = isDir ? await listSegments(pathOrDir) : [{ seq: 0, path: pathOrDir }];
  let expectedPrev = isDir && files[0]?.seq === 1 ? GENESIS_HASH : undefined;
  let records = 0;
  for (const file of files) {
    const input = createReadStream(file.path);
    const lines = createInterface({ input, crlfDelay: Infinity });
    let line = 0;
    try {
      for await (const text of lines) {
        line++;
        const broken = (reason: string, entryId?: string): AuditVerifyResult => ({
          ok: false,
          records,
          file: file.path,
          line,
          ...(entryId === undefined ? {} : { entryId }),
          reason,
        });
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (error) {
          return broken(`invalid JSON: ${(error as Error).message}`);
        }
        const parsed = AuditRecordSchema.safeParse(value);
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          return broken(`not an audit record: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`, entryIdOf(value));
        }
        // Hash the record as read, not zod's copy: a field added by hand must count as an edit.
        const { hash, ...withoutHash } = value as typeof parsed.data;
        const computed = hashRecord(withoutHash.prev_hash, withoutHash);
        if (computed !== hash) {
          return broken(
            `hash mismatch: the record was modified after it was written (stored ${hash}, computed ${computed})`,
            withoutHash.entry_id,
          );
        }
        if (expectedPrev !== undefined && withoutHash.prev_hash !== expectedPrev) {
          return broken(
            `prev_hash mismatch: expected ${expectedPrev} (${records === 0 ? 'genesis: segment 1 starts the log' : "the previous record's hash"}), found ` +
              `${withoutHash.prev_hash}; a record before this one was deleted, inserted or reordered`,
            withoutHash.entry_id,
          );
        }
        expectedPrev = hash;
        records++;
      }
    } finally {
      lines.close();
      input.destroy();
    }
  }
  return { ok: true, records, segments: files.length };
}

function entryIdOf(value: unknown): string | undefined {
  const id = (value as { entry_id?: unknown } | null)?.entry_id;
  return typeof id === 'string' ? id : undefined;
}
