import type { KeyObject } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import {
  FileAnchorStore,
  anchorAuthenticated,
  checkAnchor,
  isAnchoredLine,
  isGenesisAnchor,
  type AnchorSite,
  type AuditAnchor,
  type AuditAnchorStore,
  type LogPosition,
} from './anchor.js';
import { ChainCheck } from './chain.js';
import { ConfigMapAnchorStore } from './configmap-anchor.js';
import { ANNOTATION_CHAIN_HEAD, DEFAULT_RING_SIZE, listRingSegments, recordLines, replicaLabel, ringSiteOf } from './configmap-ring.js';
import { readLines, type ForwardLine } from './jsonl.js';
import { readAuditKeyFile } from './key.js';
import { GENESIS_HASH } from './record.js';
import { DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_BYTES, emptyBehindNewest, listSegments, segmentFileName, segmentGaps, unfilledBehindNewest, type SegmentFile } from './segments.js';

/** One thing wrong with an audit log. */
export interface AuditProblem {
  /** The segment file (`configmap/<ns>/<name>` for the ring) or the anchor's location. */
  file: string;
  /** 1-based line number within `file`, when the problem is at a line. */
  line?: number;
  entryId?: string;
  reason: string;
}

/** At most this many problems are listed; `problemCount` counts them all. */
export const MAX_LISTED_PROBLEMS = 100;

export interface AuditVerifyResult {
  /** True when no problem was found. */
  ok: boolean;
  /** Records that passed every check. */
  records: number;
  segments: number;
  /** The first {@link MAX_LISTED_PROBLEMS} problems, in the order found. */
  problems: AuditProblem[];
  /** Every problem found, listed or not. */
  problemCount: number;
  /** What was and was not checked beyond the chain (the anchor, MACs). */
  notes: string[];
}

export interface AuditVerifyOptions {
  /** The audit key file: records must then carry a valid `mac` (see ChainCheck), and the anchor too. */
  keyFile?: string;
  /**
   * Where the anchor is. Default: `anchor.json` in the folder, or the replica's anchor ConfigMap
   * for a ring. A folder written in kubernetes mode has its anchor in a ConfigMap: pass a
   * ConfigMapAnchorStore. `false` checks the chain alone.
   */
  anchor?: AuditAnchorStore | false;
  /** Segments the writer keeps (a folder: its maxSegments, default 20; a ring: its size, default 16): a log without segment 1 must hold as many. */
  retained?: number;
  /** The writer's segment size and longest line (default 16 and 4 MiB): in a folder without segment 1, each segment behind the newest must be full. */
  segmentBytes?: number;
  maxLineBytes?: number;
}

/** There is no audit log where verification was pointed (no segments and no anchor): a usage error. */
export class AuditLogNotFoundError extends Error {
  override readonly name = 'AuditLogNotFoundError';
}

/**
 * Checks an audit log and reports every problem (the first {@link MAX_LISTED_PROBLEMS} listed,
 * all counted):
 * - the segments (folders): each must be a regular file that can be read, numbered without
 *   gaps or repeats, and a folder without segment 1 must hold as many segments as retention
 *   keeps (`retained`) — fewer, and the oldest were removed by hand — each full but the newest
 *   (`segmentBytes`, `maxLineBytes`; {@link unfilledBehindNewest});
 * - the hash chain, line by line ({@link ChainCheck}): each line exactly as the writer stores
 *   it, its hash matching its content, its prev_hash the previous record's hash; with a key,
 *   the MACs (a record may lack one only before the first signed record and before the record
 *   an authenticated anchor names). After a broken line the check re-synchronises, so what
 *   follows is checked too;
 * - the anchor: the record it names must be at its segment and line with the same hash; a log
 *   that ends before it was truncated. The genesis anchor (written when the log was empty)
 *   names the log's start, which a log still holding segment 1 reaches when that starts at the
 *   genesis hash. Records after it are fine (written since), and so is an
 *   anchor older than the oldest kept segment (retention). With a key it must carry a valid
 *   MAC. A missing anchor is a problem unless `anchor: false`.
 *
 * `pathOrDir` is one segment file (chain only) or the sink's folder (all `audit-NNNNNN.jsonl`
 * in order, the chain continuing across them). The first record's prev_hash is accepted as
 * given for a single file, and for a folder whose oldest segment is not `audit-000001.jsonl` —
 * retention deleted the segments it linked to. A folder that still starts at segment 1 must
 * start at the genesis hash, so deleting the very first record is caught too. Throws an
 * {@link AuditLogNotFoundError} for a folder without segments or anchor (naming `DIR/audit`
 * when that exists: the data folder was passed by mistake) or a path that is neither folder
 * nor regular file, and an AuditKeyError for a bad key.
 *
 * @example
 * const result = await verifyAuditChain('/data/audit', { keyFile: '/etc/policyguard/audit.key' });
 * for (const p of result.problems) console.error(`${p.file}:${p.line}: ${p.reason}`);
 */
export async function verifyAuditChain(pathOrDir: string, opts: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  const key = opts.keyFile === undefined ? undefined : await readAuditKeyFile(opts.keyFile);
  const info = await stat(pathOrDir);
  if (!info.isDirectory() && !info.isFile()) throw new AuditLogNotFoundError(`${pathOrDir} is neither a folder nor a regular file`);
  const isDir = info.isDirectory();
  const files: SegmentFile[] = isDir ? await listSegments(pathOrDir) : [{ seq: 0, path: pathOrDir, size: info.size }];
  const store = !isDir || opts.anchor === false ? undefined : (opts.anchor ?? FileAnchorStore.inDir(pathOrDir));
  const anchor = await readAnchor(store);
  if (files.length === 0 && !anchor.unreadable && !anchor.anchor) {
    const nested = join(pathOrDir, 'audit');
    const guess = (await isDirectory(nested)) ? `; did you mean ${nested}?` : '';
    throw new AuditLogNotFoundError(`${pathOrDir} holds no audit segments (audit-NNNNNN.jsonl) and no anchor${guess}`);
  }
  const problems = new Problems();
  if (anchor.unreadable) problems.add({ file: store?.location ?? pathOrDir, reason: anchor.unreadable });
  if (isDir) {
    const unfilled = await unfilledBehindNewest(files, opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES, opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES, segmentFileName);
    for (const gap of [...segmentGaps(files.map((file) => file.seq), segmentFileName, opts.retained ?? DEFAULT_MAX_SEGMENTS), ...emptyBehindNewest(files, segmentFileName), ...unfilled]) {
      problems.add({ file: join(pathOrDir, segmentFileName(gap.seq)), reason: gap.reason });
    }
  }
  const walked = await walk(
    files.map((file) => ({ seq: file.seq, file: file.path, ...(file.unreadable ? { unreadable: file.unreadable } : {}), lines: () => readLines(file.path) })),
    { key, anchor: anchor.anchor, genesis: isDir && files[0]?.seq === 1, startReason: 'genesis: segment 1 starts the log', problems },
  );
  const site = (_anchor: AuditAnchor): AnchorSite => ({ segments: files.map((file) => file.seq), ...walked.anchored, describeSegment: segmentFileName });
  const where = (a: AuditAnchor) => ({ file: join(pathOrDir, segmentFileName(a.segment)), line: a.line });
  const skipped = isDir ? NO_ANCHOR_NOTE : 'anchor not checked: a single segment; its anchor is checked when the folder is verified';
  return finish({ chain: walked.chain, problems, segments: files.length, store, anchor, site, where, key, skipped, oldest: isDir ? files[0] : undefined, describeSegment: segmentFileName });
}

/**
 * Checks the ConfigMap ring of one replica the way {@link verifyAuditChain} checks a folder:
 * segments in sequence order without gaps, the chain continuing across them, genesis required
 * while segment 1 is still in the ring, MACs with a key, and the anchor (the ConfigMap
 * `policyguard-audit-anchor-<replica>` unless `opts.anchor` says otherwise). In addition, each
 * ConfigMap's chain-head annotation must name its last record. `file` in a problem is
 * `configmap/<namespace>/<name>`, `line` the 1-based line of `records.jsonl`. Throws an
 * {@link AuditLogNotFoundError} when the replica has neither ring nor anchor.
 *
 * @example
 * const result = await verifyConfigMapRing(kubeConfig, 'policyguard-system', 'policyguard-0');
 * for (const p of result.problems) console.error(`${p.file}:${p.line}: ${p.reason}`);
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
  if (segments.length === 0 && !anchor.unreadable && !anchor.anchor) {
    throw new AuditLogNotFoundError(`namespace ${namespace} holds no audit ConfigMaps and no anchor of replica ${replica} (label ${label})`);
  }
  const problems = new Problems();
  if (anchor.unreadable) problems.add({ file: store?.location ?? namespace, reason: anchor.unreadable });
  const nameOf = (seq: number) => segments.find((segment) => segment.seq === seq)?.name ?? `segment ${seq}`;
  for (const gap of segmentGaps(segments.map((segment) => segment.seq), nameOf, opts.retained ?? DEFAULT_RING_SIZE)) {
    problems.add({ file: `configmap/${namespace}/${nameOf(gap.seq)}`, reason: gap.reason });
  }
  const walked = await walk(
    segments.map((segment) => {
      const lines = recordLines(segment.text);
      return {
        seq: segment.seq,
        file: `configmap/${namespace}/${segment.name}`,
        lines: () => lines.map((text) => ({ text, utf8: true })),
        finish: (lastHash: string | undefined) =>
          segment.chainHead === lastHash
            ? undefined
            : `chain-head annotation ${ANNOTATION_CHAIN_HEAD}=${segment.chainHead ?? '(missing)'} does not match the last ` +
              `record's hash ${lastHash ?? '(no records)'}; records were removed from the end of this segment, or the annotation was edited`,
      };
    }),
    { key, anchor: anchor.anchor, genesis: segments[0]?.seq === 1, startReason: 'genesis: segment 1 starts the ring', problems },
  );
  const site = (a: AuditAnchor): AnchorSite => ringSiteOf(a, segments, walked.chain.lastEntryId);
  const where = (a: AuditAnchor) => ({ file: `configmap/${namespace}/${nameOf(a.segment)}`, line: a.line });
  return finish({ chain: walked.chain, problems, segments: segments.length, store, anchor, site, where, key, skipped: NO_ANCHOR_NOTE, oldest: segments[0], describeSegment: nameOf });
}

/** The stored anchor, or why it cannot be read (a problem of the log, like an unreadable segment). */
async function readAnchor(store: AuditAnchorStore | undefined): Promise<{ anchor?: AuditAnchor; unreadable?: string }> {
  try {
    const anchor = await store?.read();
    return anchor ? { anchor } : {};
  } catch (error) {
    return { unreadable: `the anchor cannot be read: ${(error as Error).message}` };
  }
}

/** Problems as they are found: the first MAX_LISTED_PROBLEMS kept, all counted. */
class Problems {
  readonly list: AuditProblem[] = [];
  count = 0;

  add(problem: AuditProblem): void {
    this.count++;
    if (this.list.length < MAX_LISTED_PROBLEMS) this.list.push(problem);
  }
}

/** A segment as {@link walk} reads it: a file, or a ConfigMap of the ring. */
interface WalkedSegment {
  seq: number;
  /** Where its problems are reported: the file's path, `configmap/<ns>/<name>`. */
  file: string;
  /** Why it cannot be read, known before reading it (not a regular file). */
  unreadable?: string;
  lines(): AsyncIterable<ForwardLine> | Iterable<ForwardLine>;
  /** A problem of the whole segment, found once its lines are read (the ring's chain-head annotation). */
  finish?(lastHash: string | undefined): string | undefined;
}

/**
 * Reads every line of every segment through one {@link ChainCheck}, adding what breaks to
 * `problems`, and gathers what stands where the anchor points. The chain starts at genesis when
 * `genesis`, and starts again (the first prev_hash taken as given) after a segment that is
 * missing or cannot be read. With an anchor the key authenticates, every record after the one
 * it names must be signed.
 */
async function walk(
  segments: readonly WalkedSegment[],
  opts: { key: KeyObject | undefined; anchor: AuditAnchor | undefined; genesis: boolean; startReason: string; problems: Problems },
): Promise<{ chain: ChainCheck; anchored: Omit<AnchorSite, 'segments' | 'describeSegment'> }> {
  const { anchor, problems } = opts;
  const chain = new ChainCheck(opts.genesis ? GENESIS_HASH : undefined, opts.startReason, opts.key);
  const signedAfterAnchor = anchor !== undefined && anchorAuthenticated(anchor, opts.key);
  if (signedAfterAnchor && anchor.segment < (segments[0]?.seq ?? 0)) chain.requireMacs();
  const needle = anchor && `"entry_id":${JSON.stringify(anchor.entry_id)}`;
  let lines = 0;
  let text: string | undefined;
  let moved: LogPosition | undefined;
  let previous: number | undefined;
  for (const segment of segments) {
    if (previous !== undefined && segment.seq !== previous + 1) chain.linkNext(undefined, '');
    previous = segment.seq;
    if (segment.unreadable) {
      problems.add({ file: segment.file, reason: `cannot be read: it ${segment.unreadable}` });
      chain.linkNext(undefined, '');
      continue;
    }
    const isAnchored = segment.seq === anchor?.segment;
    const recordsBefore = chain.seen;
    let line = 0;
    try {
      for await (const next of segment.lines()) {
        line++;
        const broken = chain.check(next.text, next.utf8);
        if (broken) problems.add({ file: segment.file, line, ...broken });
        if (isAnchored && line === anchor.line) {
          text = next.text;
          if (signedAfterAnchor) chain.requireMacs();
        } else if (needle && moved === undefined && next.text.includes(needle) && isAnchoredLine(anchor, next.text)) {
          moved = { segment: segment.seq, line };
        }
      }
    } catch (error) {
      problems.add({ file: segment.file, ...(line > 0 ? { line: line + 1 } : {}), reason: `cannot be read: ${(error as Error).message}` });
      chain.linkNext(undefined, '');
    }
    if (isAnchored) lines = line;
    const wrong = segment.finish?.(chain.seen > recordsBefore ? chain.head : undefined);
    if (wrong) problems.add({ file: segment.file, line, reason: wrong });
  }
  return { chain, anchored: { lines, text, lastEntryId: chain.lastEntryId, ...(moved ? { moved } : {}) } };
}

const NO_ANCHOR_NOTE = 'anchor not checked (--no-anchor): records cut off the end of the log would go unnoticed';

/** After the walk: the anchor check and the notes, shared by folders and rings. `skipped`: the note when there is no anchor store. */
function finish(walked: {
  chain: ChainCheck;
  problems: Problems;
  segments: number;
  store: AuditAnchorStore | undefined;
  /** As read: an unreadable anchor is a problem already. */
  anchor: { anchor?: AuditAnchor; unreadable?: string };
  site: (anchor: AuditAnchor) => AnchorSite;
  where: (anchor: AuditAnchor) => { file: string; line: number };
  key: KeyObject | undefined;
  skipped: string;
  /** The oldest segment of a whole log (a folder or a ring), for the retention note. */
  oldest: { seq: number } | undefined;
  describeSegment: (seq: number) => string;
}): AuditVerifyResult {
  const { chain, problems, store, key, oldest } = walked;
  const { anchor } = walked.anchor;
  const notes: string[] = [];
  if (oldest && oldest.seq > 1) {
    // Retention deletes the oldest segments by size: a flood of calls pushes older records out.
    const from = chain.first ? `; the oldest record kept is ${chain.first.entryId} of ${chain.first.timestamp}` : '';
    notes.push(
      `the log starts at ${walked.describeSegment(oldest.seq)}: segments 1 to ${oldest.seq - 1} were deleted by retention${from}. ` +
        'Records from before then are only in copies shipped off this storage',
    );
  }
  if (!key && chain.macs > 0) notes.push(`${chain.macs} records carry a MAC that was not checked (no key file given)`);
  if (key && chain.unsigned > 0) {
    notes.push(`${chain.unsigned} records carry no MAC: accepted as written before the key was configured (they come before every signed record and before the anchored one)`);
  }
  if (store && !anchor) {
    if (walked.anchor.unreadable) return result();
    problems.add({
      file: store.location,
      reason:
        `no anchor at ${store.location}: without it, records cut off the end of the log cannot be detected. ` +
        `The chain alone is checked with --no-anchor`,
    });
  } else if (store && anchor) {
    const check = checkAnchor(anchor, walked.site(anchor), key);
    if (check.ok) notes.push(`anchor: ${check.note}`);
    // The genesis anchor names no line: its problem is the anchor's.
    else if (isGenesisAnchor(anchor)) problems.add({ file: store.location, reason: check.reason });
    else problems.add({ ...walked.where(anchor), entryId: anchor.entry_id, reason: check.reason });
  } else {
    notes.push(walked.skipped);
  }
  return result();

  function result(): AuditVerifyResult {
    return { ok: problems.count === 0, records: chain.records, segments: walked.segments, problems: problems.list, problemCount: problems.count, notes };
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
