import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { ANNOTATION_CHAIN_HEAD, listRingSegments, recordLines, replicaLabel } from './configmap-ring.js';
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
  const chain = new ChainCheck(isDir && files[0]?.seq === 1 ? GENESIS_HASH : undefined, 'segment 1 starts the log');
  for (const file of files) {
    const input = createReadStream(file.path);
    const lines = createInterface({ input, crlfDelay: Infinity });
    let line = 0;
    try {
      for await (const text of lines) {
        line++;
        const broken = chain.check(text);
        if (broken) return { ok: false, records: chain.records, file: file.path, line, ...broken };
      }
    } finally {
      lines.close();
      input.destroy();
    }
  }
  return { ok: true, records: chain.records, segments: files.length };
}

/**
 * Checks the ConfigMap ring of one replica the way {@link verifyAuditChain} checks a
 * directory: segments in sequence order, the chain continuing across them, genesis required
 * while segment 1 is still in the ring. In addition, each ConfigMap's chain-head annotation must
 * name its last record, so records cut off the end of a segment are caught too. `file` in a
 * failure is `configmap/<namespace>/<name>`, `line` the 1-based line of `records.jsonl`.
 *
 * @example
 * const result = await verifyConfigMapRing(kubeConfig, 'policyguard-system', 'policyguard-0');
 * if (!result.ok) console.error(`${result.file}:${result.line}: ${result.reason}`);
 */
export async function verifyConfigMapRing(kubeConfig: KubeConfig, namespace: string, replica: string): Promise<AuditVerifyResult> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const segments = await listRingSegments(core, namespace, replicaLabel(replica));
  const chain = new ChainCheck(segments[0]?.seq === 1 ? GENESIS_HASH : undefined, 'segment 1 starts the ring');
  for (const segment of segments) {
    const file = `configmap/${namespace}/${segment.name}`;
    const lines = recordLines(segment.text);
    let lastHash: string | undefined;
    for (const [i, text] of lines.entries()) {
      const broken = chain.check(text);
      if (broken) return { ok: false, records: chain.records, file, line: i + 1, ...broken };
      lastHash = chain.head;
    }
    if (segment.chainHead !== lastHash) {
      return {
        ok: false,
        records: chain.records,
        file,
        line: lines.length,
        reason:
          `chain-head annotation ${ANNOTATION_CHAIN_HEAD}=${segment.chainHead ?? '(missing)'} does not match the last ` +
          `record's hash ${lastHash ?? '(no records)'}; records were removed from the end of this segment, or the annotation was edited`,
      };
    }
  }
  return { ok: true, records: chain.records, segments: segments.length };
}

/** Why a line breaks the chain, and the record's id when it has one. */
interface BrokenLink {
  reason: string;
  entryId?: string;
}

/**
 * The line-by-line check shared by the file and the ConfigMap verification: each line must be
 * a record whose hash matches its content and whose prev_hash is the previous record's hash.
 */
class ChainCheck {
  records = 0;
  /** Hash of the last record that verified. */
  head: string | undefined;

  /** `expectedPrev`: what the first record must link to, or undefined to accept it as given. */
  constructor(
    private expectedPrev: string | undefined,
    private readonly genesisReason: string,
  ) {}

  check(text: string): BrokenLink | undefined {
    const broken = (reason: string, entryId?: string): BrokenLink => ({ reason, ...(entryId === undefined ? {} : { entryId }) });
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
    if (this.expectedPrev !== undefined && withoutHash.prev_hash !== this.expectedPrev) {
      return broken(
        `prev_hash mismatch: expected ${this.expectedPrev} (${this.records === 0 ? `genesis: ${this.genesisReason}` : "the previous record's hash"}), found ` +
          `${withoutHash.prev_hash}; a record before this one was deleted, inserted or reordered`,
        withoutHash.entry_id,
      );
    }
    this.expectedPrev = hash;
    this.head = hash;
    this.records++;
    return undefined;
  }
}

function entryIdOf(value: unknown): string | undefined {
  const id = (value as { entry_id?: unknown } | null)?.entry_id;
  return typeof id === 'string' ? id : undefined;
}
