import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { KubeConfig } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import { FileAnchorStore, checkAnchor, type AnchorSite, type AuditAnchor, type AuditAnchorStore } from './anchor.js';
import { ConfigMapAnchorStore } from './configmap-anchor.js';
import { ANNOTATION_CHAIN_HEAD, listRingSegments, recordLines, replicaLabel, ringSiteOf } from './configmap-ring.js';
import { macMatches, readAuditKeyFile } from './key.js';
import { AuditRecordSchema, GENESIS_HASH, hashRecord, type AuditRecord } from './record.js';
import { listSegments, segmentFileName, type SegmentFile } from './segments.js';

export type AuditVerifyResult =
  | {
      ok: true;
      records: number;
      segments: number;
      /** What was and was not checked beyond the chain (the anchor, MACs). */
      notes: string[];
    }
  | {
      ok: false;
      /** Records that verified before the problem was found. */
      records: number;
      /** The segment file (`configmap/<ns>/<name>` for the ring) or the anchor's location. */
      file: string;
      /** 1-based line number within `file`, when the problem is at a line. */
      line?: number;
      entryId?: string;
      reason: string;
      notes: string[];
    };

export interface AuditVerifyOptions {
  /** The audit key file: every record must then carry a valid `mac`, and the anchor too. */
  keyFile?: string;
  /**
   * Where the anchor is. Default: `anchor.json` in the folder, or the replica's anchor ConfigMap
   * for a ring. A folder written in kubernetes mode has its anchor in a ConfigMap: pass a
   * ConfigMapAnchorStore. `false` checks the chain alone.
   */
  anchor?: AuditAnchorStore | false;
}

/** There is no audit log where verification was pointed (no segments and no anchor): a usage error. */
export class AuditLogNotFoundError extends Error {
  override readonly name = 'AuditLogNotFoundError';
}

/**
 * Checks an audit log and reports the first problem:
 * - the hash chain: a line that is not JSON or not a record, a record whose hash does not match
 *   its content (edited), or whose prev_hash is not the previous record's hash (a record
 *   deleted, inserted or reordered);
 * - with a key: every record's `mac` (a chain recomputed without the key fails here);
 * - the anchor (folders only): the record it names must be at its segment and line with the
 *   same hash; a log that ends before it was truncated. Records after it are fine (written
 *   since), and so is an anchor older than the oldest kept segment (retention). A missing
 *   anchor is a failure unless `anchor: false`.
 *
 * `pathOrDir` is one segment file (chain only) or the sink's folder (all `audit-NNNNNN.jsonl`
 * in order, the chain continuing across them). The first record's prev_hash is accepted as
 * given for a single file, and for a folder whose oldest segment is not `audit-000001.jsonl` —
 * retention deleted the segments it linked to. A folder that still starts at segment 1 must
 * start at the genesis hash, so deleting the very first record is caught too. Throws an
 * {@link AuditLogNotFoundError} for a folder without segments or anchor (naming `DIR/audit`
 * when that exists: the data folder was passed by mistake), and an AuditKeyError for a bad key.
 *
 * @example
 * const result = await verifyAuditChain('/data/audit', { keyFile: '/etc/policyguard/audit.key' });
 * if (!result.ok) console.error(`${result.file}:${result.line}: ${result.reason}`);
 */
export async function verifyAuditChain(pathOrDir: string, opts: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  const key = opts.keyFile === undefined ? undefined : await readAuditKeyFile(opts.keyFile);
  const isDir = (await stat(pathOrDir)).isDirectory();
  const files: SegmentFile[] = isDir ? await listSegments(pathOrDir) : [{ seq: 0, path: pathOrDir }];
  const store = !isDir || opts.anchor === false ? undefined : (opts.anchor ?? FileAnchorStore.inDir(pathOrDir));
  const anchor = await readAnchor(store);
  if (!anchor.ok) return { ok: false, records: 0, file: store?.location ?? pathOrDir, reason: anchor.reason, notes: [] };
  if (files.length === 0 && !anchor.anchor) {
    const nested = join(pathOrDir, 'audit');
    const guess = (await isDirectory(nested)) ? `; did you mean ${nested}?` : '';
    throw new AuditLogNotFoundError(`${pathOrDir} holds no audit segments (audit-NNNNNN.jsonl) and no anchor${guess}`);
  }

  const chain = new ChainCheck(isDir && files[0]?.seq === 1 ? GENESIS_HASH : undefined, 'segment 1 starts the log', key);
  const anchored = { lines: 0, text: undefined as string | undefined, moved: undefined as string | undefined };
  for (const file of files) {
    const watch = file.seq === anchor.anchor?.segment ? anchor.anchor.line : undefined;
    const input = createReadStream(file.path);
    const lines = createInterface({ input, crlfDelay: Infinity });
    let line = 0;
    try {
      for await (const text of lines) {
        line++;
        if (line === watch) anchored.text = text;
        const broken = chain.check(text);
        if (broken) return { ok: false, records: chain.records, file: file.path, line, ...broken, notes: [] };
        if (anchor.anchor && chain.lastEntryId === anchor.anchor.entry_id && line !== watch) anchored.moved = `${segmentFileName(file.seq)}:${line}`;
      }
    } finally {
      lines.close();
      input.destroy();
    }
    if (watch !== undefined) anchored.lines = line;
  }
  const site = (_anchor: AuditAnchor): AnchorSite => ({
    segments: files.map((file) => file.seq),
    ...anchored,
    lastEntryId: chain.lastEntryId,
    describeSegment: segmentFileName,
  });
  const where = (a: AuditAnchor) => ({ file: join(pathOrDir, segmentFileName(a.segment)), line: a.line });
  const skipped = isDir ? NO_ANCHOR_NOTE : 'anchor not checked: a single segment; its anchor is checked when the folder is verified';
  return finish(chain, files.length, store, anchor.anchor, site, where, key, skipped);
}

/**
 * Checks the ConfigMap ring of one replica the way {@link verifyAuditChain} checks a folder:
 * segments in sequence order, the chain continuing across them, genesis required while segment
 * 1 is still in the ring, MACs with a key, and the anchor (the ConfigMap
 * `policyguard-audit-anchor-<replica>` unless `opts.anchor` says otherwise). In addition, each
 * ConfigMap's chain-head annotation must name its last record. `file` in a failure is
 * `configmap/<namespace>/<name>`, `line` the 1-based line of `records.jsonl`. Throws an
 * {@link AuditLogNotFoundError} when the replica has neither ring nor anchor.
 *
 * @example
 * const result = await verifyConfigMapRing(kubeConfig, 'policyguard-system', 'policyguard-0');
 * if (!result.ok) console.error(`${result.file}:${result.line}: ${result.reason}`);
 */
export async function verifyConfigMapRing(
  kubeConfig: KubeConfig,
  namespace: string,
  replica: string,
  opts: AuditVerifyOptions = {},
): Promise<AuditVerifyResult> {
  const key = opts.keyFile === undefined ? undefined : await readAuditKeyFile(opts.keyFile);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const label = replicaLabel(replica);
  const segments = await listRingSegments(core, namespace, label);
  const store = opts.anchor === false ? undefined : (opts.anchor ?? new ConfigMapAnchorStore({ kubeConfig, namespace, replica }));
  const anchor = await readAnchor(store);
  if (!anchor.ok) return { ok: false, records: 0, file: store?.location ?? namespace, reason: anchor.reason, notes: [] };
  if (segments.length === 0 && !anchor.anchor) {
    throw new AuditLogNotFoundError(`namespace ${namespace} holds no audit ConfigMaps and no anchor of replica ${replica} (label ${label})`);
  }
  const chain = new ChainCheck(segments[0]?.seq === 1 ? GENESIS_HASH : undefined, 'segment 1 starts the ring', key);
  for (const segment of segments) {
    const file = `configmap/${namespace}/${segment.name}`;
    const lines = recordLines(segment.text);
    let lastHash: string | undefined;
    for (const [i, text] of lines.entries()) {
      const broken = chain.check(text);
      if (broken) return { ok: false, records: chain.records, file, line: i + 1, ...broken, notes: [] };
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
        notes: [],
      };
    }
  }
  const site = (a: AuditAnchor): AnchorSite => ringSiteOf(a, segments, chain.lastEntryId);
  const where = (a: AuditAnchor) => {
    const name = segments.find((segment) => segment.seq === a.segment)?.name;
    return { file: name ? `configmap/${namespace}/${name}` : `configmap/${namespace} segment ${a.segment}`, line: a.line };
  };
  return finish(chain, segments.length, store, anchor.anchor, site, where, key, NO_ANCHOR_NOTE);
}

async function readAnchor(store: AuditAnchorStore | undefined): Promise<{ ok: true; anchor: AuditAnchor | undefined } | { ok: false; reason: string }> {
  try {
    return { ok: true, anchor: await store?.read() };
  } catch (error) {
    return { ok: false, reason: `the anchor cannot be read: ${(error as Error).message}` };
  }
}

const NO_ANCHOR_NOTE = 'anchor not checked (--no-anchor): records cut off the end of the log would go unnoticed';

/** After an intact chain: the anchor check and the notes, shared by folders and rings. `skipped`: the note when there is no anchor store. */
function finish(
  chain: ChainCheck,
  segments: number,
  store: AuditAnchorStore | undefined,
  anchor: AuditAnchor | undefined,
  site: (anchor: AuditAnchor) => AnchorSite,
  where: (anchor: AuditAnchor) => { file: string; line: number },
  key: KeyObject | undefined,
  skipped: string,
): AuditVerifyResult {
  const notes: string[] = [];
  if (!key && chain.macs > 0) notes.push(`${chain.macs} records carry a MAC that was not checked (no key file given)`);
  if (store && !anchor) {
    return {
      ok: false,
      records: chain.records,
      file: store.location,
      reason:
        `no anchor at ${store.location}: without it, records cut off the end of the log cannot be detected. ` +
        `The chain alone is checked with --no-anchor`,
      notes,
    };
  }
  if (store && anchor) {
    const check = checkAnchor(anchor, site(anchor), key);
    if (!check.ok) return { ok: false, records: chain.records, ...where(anchor), entryId: anchor.entry_id, reason: check.reason, notes };
    notes.push(`anchor: ${check.note}`);
  } else {
    notes.push(skipped);
  }
  return { ok: true, records: chain.records, segments, notes };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Why a line breaks the chain, and the record's id when it has one. */
interface BrokenLink {
  reason: string;
  entryId?: string;
}

/**
 * The line-by-line check shared by the file and the ConfigMap verification: each line must be
 * a record whose hash matches its content, whose prev_hash is the previous record's hash, and,
 * with a key, whose mac is the HMAC of its hash.
 */
class ChainCheck {
  records = 0;
  /** Records carrying a mac (counted so that a check without the key can say what it skipped). */
  macs = 0;
  /** Hash of the last record that verified. */
  head: string | undefined;
  lastEntryId: string | undefined;

  /** `expectedPrev`: what the first record must link to, or undefined to accept it as given. */
  constructor(
    private expectedPrev: string | undefined,
    private readonly genesisReason: string,
    private readonly key: KeyObject | undefined,
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
    const { hash, mac, ...fields } = value as AuditRecord;
    const computed = hashRecord(fields.prev_hash, fields);
    if (computed !== hash) {
      return broken(`hash mismatch: the record was modified after it was written (stored ${hash}, computed ${computed})`, fields.entry_id);
    }
    if (this.expectedPrev !== undefined && fields.prev_hash !== this.expectedPrev) {
      return broken(
        `prev_hash mismatch: expected ${this.expectedPrev} (${this.records === 0 ? `genesis: ${this.genesisReason}` : "the previous record's hash"}), found ` +
          `${fields.prev_hash}; a record before this one was deleted, inserted or reordered`,
        fields.entry_id,
      );
    }
    if (mac !== undefined) this.macs++;
    if (this.key && mac === undefined) {
      return broken('no mac: every record must carry one when a key is given; it was written without the key, or its mac was removed', fields.entry_id);
    }
    if (this.key && !macMatches(this.key, hash, mac)) {
      return broken('mac mismatch: the hash was not authenticated with this key; the chain was recomputed without the key, or another key was used', fields.entry_id);
    }
    this.expectedPrev = hash;
    this.head = hash;
    this.lastEntryId = fields.entry_id;
    this.records++;
    return undefined;
  }
}

function entryIdOf(value: unknown): string | undefined {
  const id = (value as { entry_id?: unknown } | null)?.entry_id;
  return typeof id === 'string' ? id : undefined;
}
