import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { describeKubeError, statusOf, withTimeout } from '../kube/client.js';
import { ensureLogReachesAnchor } from './anchor.js';
import {
  BatchingAuditSink,
  resolveIntegrity,
  type AuditIntegrityOptions,
  type DurableLine,
  type ResolvedIntegrity,
  type StoredLines,
} from './batching-sink.js';
import { ConfigMapAnchorStore } from './configmap-anchor.js';
import { checkChainOnOpen } from './open-check.js';
import {
  ANNOTATION_CHAIN_HEAD,
  ANNOTATION_SEQUENCE,
  DEFAULT_RING_SIZE,
  LABEL_APP,
  LABEL_AUDIT,
  LABEL_REPLICA,
  RECORDS_KEY,
  listRingSegments,
  recordLines,
  replicaLabel,
  ringConfigMapName,
  ringSiteOf,
  toRingSegment,
  type RingSegment,
} from './configmap-ring.js';
import { matchesAuditQuery } from './query.js';
import { GENESIS_HASH, parseAuditLine, type AuditRecord } from './record.js';
import { AuditRecordTamperedError, type AuditFilter, type AuditSink } from './sink.js';

/** Anchors go to the ConfigMap `policyguard-audit-anchor-<replica>` unless `anchor` says otherwise. */
export interface ConfigMapAuditSinkOptions extends AuditIntegrityOptions {
  kubeConfig: KubeConfig;
  /** Namespace of the ring (usually the operator's own). */
  namespace: string;
  /** This replica's name, usually the pod name; sanitised to a DNS-1123 label. */
  replica: string;
  /** ConfigMaps per replica; the oldest is overwritten when the ring is full (default 16). */
  ringSize?: number;
  /**
   * Hard bound on a ConfigMap's data (every key + value, UTF-8 bytes), default 900 KiB. The
   * data always stays below it: a batch that would reach it is split across ConfigMaps, and a
   * single record too large for an empty one goes without its largest parameters (their size and
   * sha256 in their place: withParametersOmitted), or, still too large, is refused or dropped (counted,
   * logged). At most 1 MiB, the
   * API server's own limit.
   */
  maxBytes?: number;
  /** Longest a record waits in memory before its batch is written (default 1000). */
  flushIntervalMs?: number;
  /** Records waiting for the API server beyond which new ones are refused or dropped (default 50 000). */
  maxBuffered?: number;
  /** Where resume, retention, write failures and drops are reported (default stderr). */
  log?: (msg: string) => void;
  /** Longest wait for one API request before it counts as failed (default 10 000). */
  requestTimeoutMs?: number;
  /** Retries back off exponentially from flushIntervalMs up to this (default 30 000). */
  maxRetryDelayMs?: number;
}

type ResolvedOptions = Required<Omit<ConfigMapAuditSinkOptions, keyof AuditIntegrityOptions>>;

const DEFAULTS = {
  ringSize: DEFAULT_RING_SIZE,
  maxBytes: 900 * 1024,
  flushIntervalMs: 1000,
  maxBuffered: 50_000,
  log: (msg: string) => console.error(`[audit] ${msg}`),
  requestTimeoutMs: 10_000,
  maxRetryDelayMs: 30_000,
} satisfies Omit<ResolvedOptions, 'kubeConfig' | 'namespace' | 'replica'>;

/** The API server refuses ConfigMaps whose data exceeds 1 MiB. */
const API_SERVER_LIMIT = 1024 * 1024;
const RECORDS_KEY_BYTES = Buffer.byteLength(RECORDS_KEY);
/** Conflicts (409) or vanishings (404) in a row before a batch counts as failed and backs off. */
const MAX_CONFLICT_RETRIES = 16;

/**
 * Opens the ConfigMap audit log of one replica: a ring of `ringSize` ConfigMaps
 * `policyguard-audit-<replica>-<index>` in `namespace`, records as JSONL in
 * `data["records.jsonl"]`, the same records and hash chain as the file sink. Appends are
 * buffered and written every `flushIntervalMs` (or on `flush()`) with one `replace` per
 * ConfigMap touched, guarded by resourceVersion; on a conflict the ConfigMap is re-read and the
 * batch appended to what is there now. When a ConfigMap is full the next one in the ring is
 * overwritten with a new segment (sequence number + 1). On open the chain continues from the
 * newest segment of this replica, after checking the ring against its anchor (an
 * AuditAnchorError when the ring no longer holds the anchored record, or holds records but has
 * no anchor; see ensureLogReachesAnchor) and its chain where it is continued (an
 * AuditChainError; see checkChainOnOpen). `query()` and `scan()` read the rings of all replicas.
 *
 * While the API server is unreachable records stay buffered (up to maxBuffered) and writes are
 * retried with exponential backoff; in closed mode new records are refused meanwhile. Rejects
 * when the first listing or the first anchor write fails, so a replica that cannot reach its
 * audit log does not start.
 *
 * @example
 * const sink = await openConfigMapAuditSink({ kubeConfig, namespace: 'policyguard-system', replica: process.env.POD_NAME });
 * const taken = sink.append({ action_id, agent_id, caller, action, evaluation, revision });
 * const { entries, total } = await sink.query({ agentId: 'etl', status: 'denied', limit: 50 });
 * await sink.close();
 */
export async function openConfigMapAuditSink(opts: ConfigMapAuditSinkOptions): Promise<AuditSink> {
  const options = resolveOptions(opts);
  const integrity = await resolveIntegrity(
    opts,
    () => new ConfigMapAnchorStore({ kubeConfig: options.kubeConfig, namespace: options.namespace, replica: options.replica, requestTimeoutMs: options.requestTimeoutMs }),
  );
  const ring = new Ring(options);
  const segments = await listRingSegments(ring.core, options.namespace, ring.label, (send) =>
    ring.call(`list the audit ConfigMaps of ${ring.label}`, send),
  );
  const newest = segments.at(-1);
  for (const segment of segments) ring.stored.set(segment.name, segment.seq);
  if (newest) await ring.retireOlderThanRing(newest.seq);
  const head = findChainHead(segments, ring, options.log);
  const kept = segments.filter((segment) => ring.stored.has(segment.name));
  const lastEntryId = head.durable && parseAuditLine(head.durable.text)?.entry_id;
  const describeSegment = (seq: number) => kept.find((segment) => segment.seq === seq)?.name ?? `segment ${seq} of ${ring.label}`;
  const anchor = await ensureLogReachesAnchor(integrity.anchor.store, integrity.key, async (a) => ringSiteOf(a, kept, lastEntryId), {
    head: lastEntryId && head.durable ? { entryId: lastEntryId, where: `${describeSegment(head.durable.segment)}:${head.durable.line}` } : undefined,
    acceptMissingAnchor: integrity.acceptMissingAnchor,
    log: options.log,
  });
  await checkChainOnOpen(
    kept.map((segment) => {
      const lines = recordLines(segment.text);
      return { seq: segment.seq, name: segment.name, lines: () => lines.map((text) => ({ text, utf8: true })), lastLine: async () => lines.at(-1) };
    }),
    {
      key: integrity.key,
      anchor,
      retained: options.ringSize,
      describeSegment,
      startOverHint:
        `copy the audit ConfigMaps of replica ${ring.label} (label ${LABEL_REPLICA}=${ring.label}) in ${options.namespace} somewhere safe ` +
        `and delete them, and ${integrity.anchor.store.discardHint}`,
    },
  );
  const current = newest && ring.slotFromSegment(newest);
  const sink = new ConfigMapAuditSink(ring, current, head, options, integrity);
  await sink.start();
  return sink;
}

function resolveOptions(opts: ConfigMapAuditSinkOptions): ResolvedOptions {
  const options: ResolvedOptions = {
    kubeConfig: opts.kubeConfig,
    namespace: opts.namespace,
    replica: opts.replica,
    ringSize: opts.ringSize ?? DEFAULTS.ringSize,
    maxBytes: opts.maxBytes ?? DEFAULTS.maxBytes,
    flushIntervalMs: opts.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
    maxBuffered: opts.maxBuffered ?? DEFAULTS.maxBuffered,
    log: opts.log ?? DEFAULTS.log,
    requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
    maxRetryDelayMs: opts.maxRetryDelayMs ?? DEFAULTS.maxRetryDelayMs,
  };
  for (const name of ['ringSize', 'maxBytes', 'flushIntervalMs', 'maxBuffered', 'requestTimeoutMs', 'maxRetryDelayMs'] as const) {
    const value = options[name];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`openConfigMapAuditSink: ${name} must be a positive integer, got ${value}`);
    }
  }
  if (options.maxBytes < 1024 || options.maxBytes > API_SERVER_LIMIT) {
    throw new RangeError(
      `openConfigMapAuditSink: maxBytes must be between 1024 and ${API_SERVER_LIMIT} (the API server's limit), got ${options.maxBytes}`,
    );
  }
  if (!options.namespace) throw new RangeError('openConfigMapAuditSink: namespace is required');
  return options;
}

/**
 * One ConfigMap of the ring as this replica knows it. When `synced` is false the server's copy
 * may differ (a conflict, a write whose answer was lost, a slot not yet looked at) and it is
 * read again before the next write.
 */
interface Slot {
  index: number;
  seq: number;
  name: string;
  /** `records.jsonl` the next write appends to ('' when the ConfigMap is new or being overwritten). */
  text: string;
  /** UTF-8 bytes of `text`. */
  bytes: number;
  /** Lines of `text`. */
  lines: number;
  synced: boolean;
  exists: boolean;
  /** This segment has been stored here (or found here on open): never overwrite it. */
  ours: boolean;
  resourceVersion: string | undefined;
  /** Labels and annotations someone else put on the ConfigMap; kept when it is replaced. */
  foreignLabels: Record<string, string>;
  foreignAnnotations: Record<string, string>;
  /** Sequence number of the segment this write overwrites (ring retention), for the log. */
  overwrites: number | undefined;
}

/** API access and naming for one replica's ring. */
class Ring {
  readonly core: CoreV1Api;
  readonly label: string;
  /** Sequence number of each ConfigMap of this replica's ring, by name, as last written or read. */
  readonly stored = new Map<string, number>();

  constructor(private readonly options: ResolvedOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.label = replicaLabel(options.replica);
  }

  /** `request()`, failing after requestTimeoutMs; a late answer is then found by the next read. */
  call<T>(what: string, request: () => Promise<T>): Promise<T> {
    return withTimeout(what, this.options.requestTimeoutMs, request);
  }

  newSlot(index: number, seq: number): Slot {
    return {
      index,
      seq,
      name: ringConfigMapName(this.label, index),
      text: '',
      bytes: 0,
      lines: 0,
      synced: false,
      exists: false,
      ours: false,
      resourceVersion: undefined,
      foreignLabels: {},
      foreignAnnotations: {},
      overwrites: undefined,
    };
  }

  slotFromSegment(segment: RingSegment): Slot {
    const slot = this.newSlot(Math.max(0, segment.index), segment.seq);
    this.adopt(slot, segment);
    return slot;
  }

  /** Takes the server's copy of the slot's own segment as the base of the next append. */
  adopt(slot: Slot, segment: RingSegment): void {
    slot.text = segment.text;
    slot.bytes = Buffer.byteLength(segment.text);
    slot.lines = recordLines(segment.text).length;
    slot.exists = true;
    slot.synced = true;
    slot.ours = true;
    slot.resourceVersion = segment.resourceVersion;
    slot.foreignLabels = withoutOwn(segment.labels, [LABEL_APP, LABEL_AUDIT, LABEL_REPLICA]);
    slot.foreignAnnotations = withoutOwn(segment.annotations, [ANNOTATION_SEQUENCE, ANNOTATION_CHAIN_HEAD]);
    slot.overwrites = undefined;
    this.stored.set(slot.name, slot.seq);
  }

  /** The slot after `slot` in the ring, holding the next segment. */
  next(slot: Slot): Slot {
    return this.newSlot((slot.index + 1) % this.options.ringSize, slot.seq + 1);
  }

  /** The ConfigMap `slot` will be once `text` is stored. */
  body(slot: Slot, text: string, chainHead: string): V1ConfigMap {
    return {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: slot.name,
        namespace: this.options.namespace,
        labels: { ...slot.foreignLabels, [LABEL_APP]: 'policyguard', [LABEL_AUDIT]: 'true', [LABEL_REPLICA]: this.label },
        annotations: { ...slot.foreignAnnotations, [ANNOTATION_SEQUENCE]: String(slot.seq), [ANNOTATION_CHAIN_HEAD]: chainHead },
        ...(slot.exists && slot.resourceVersion ? { resourceVersion: slot.resourceVersion } : {}),
      },
      data: { [RECORDS_KEY]: text },
    };
  }

  /**
   * Deletes every segment of this replica that is `ringSize` or more segments older than
   * `newestSeq`. Normally there is none — a new segment overwrites the one it retires — but a
   * ring made smaller leaves segments at indexes that are never written again, and they must go
   * oldest first, or the chain that remains would have a gap.
   */
  async retireOlderThanRing(newestSeq: number): Promise<void> {
    for (const [name, seq] of [...this.stored].sort((a, b) => a[1] - b[1])) {
      if (seq > newestSeq - this.options.ringSize) return;
      try {
        await this.call(`delete ${name}`, () => this.core.deleteNamespacedConfigMap({ name, namespace: this.options.namespace }));
      } catch (error) {
        if (statusOf(error) !== 404) {
          // Kept for the next new segment to try again; until then verification sees a gap here.
          this.options.log(`retention: could not delete ${name} (segment ${seq}): ${describeKubeError(error)}`);
          return;
        }
      }
      this.stored.delete(name);
      this.options.log(`retention: deleted ${name} (segment ${seq}); each replica keeps its newest ${this.options.ringSize} segments`);
    }
  }
}

function withoutOwn(values: Record<string, string>, own: string[]): Record<string, string> {
  const rest = { ...values };
  for (const key of own) delete rest[key];
  return rest;
}

/** The newest valid record of the ring, newest segment first: the chain head and what the first anchor names. */
function findChainHead(segments: RingSegment[], ring: Ring, log: (msg: string) => void): { hash: string; durable: DurableLine | undefined } {
  for (const segment of [...segments].reverse()) {
    const last = lastRecord(segment.text);
    if (!last) continue;
    if (last.skipped > 0) {
      log(`${segment.name}: ${last.skipped} unreadable line(s) after the last valid record; the chain continues from ${last.record.entry_id}`);
    }
    if (segment.chainHead !== undefined && segment.chainHead !== last.record.hash) {
      log(`${segment.name}: its chain-head annotation does not match its last record; records may have been removed (verify the ring)`);
    }
    return { hash: last.record.hash, durable: { text: last.text, segment: segment.seq, line: last.line } };
  }
  if (segments.length > 0) log(`the audit ring of ${ring.label} holds no readable record; starting a new chain`);
  return { hash: GENESIS_HASH, durable: undefined };
}

/** The last line of `text` that is a valid record, its 1-based line, and how many unreadable lines follow it. */
function lastRecord(text: string): { record: AuditRecord; text: string; line: number; skipped: number } | undefined {
  const lines = recordLines(text);
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i] ?? '';
    const record = parseAuditLine(line);
    if (record) return { record, text: line, line: i + 1, skipped: lines.length - 1 - i };
  }
  return undefined;
}

class ConfigMapAuditSink extends BatchingAuditSink {
  constructor(
    private readonly ring: Ring,
    /** The slot being appended to; undefined until the first write of a new ring. */
    private current: Slot | undefined,
    head: { hash: string; durable: DurableLine | undefined },
    private readonly options: ResolvedOptions,
    integrity: ResolvedIntegrity,
  ) {
    super(head.hash, head.durable, {
      ...integrity,
      flushIntervalMs: options.flushIntervalMs,
      maxBuffered: options.maxBuffered,
      log: options.log,
      // A line and its `\n` must fit an empty ConfigMap next to the data key, below maxBytes.
      maxLineBytes: options.maxBytes - RECORDS_KEY_BYTES - 2,
      retryDelayMs: (failures) => {
        const exponential = options.flushIntervalMs * 2 ** Math.min(failures - 1, 20);
        // Jitter, so replicas cut off together do not come back in lockstep.
        return Math.round(Math.min(exponential, options.maxRetryDelayMs) * (0.8 + Math.random() * 0.4));
      },
    });
  }

  protected describeTarget(): string {
    return `ConfigMap ${this.options.namespace}/${this.current?.name ?? ringConfigMapName(this.ring.label, 0)}`;
  }

  protected override describeError(error: unknown): string {
    return describeKubeError(error);
  }

  /**
   * Appends as many of `lines` as fit to the current ConfigMap, moving to the next one in the
   * ring when none fits. A 409 or 404 means someone else changed the ConfigMap since it was
   * read: read it again and retry on top of what is there now.
   */
  protected async writeSome(lines: readonly string[]): Promise<StoredLines> {
    for (let conflicts = 0; ; ) {
      const slot = (this.current ??= this.ring.newSlot(0, 1));
      if (!slot.synced) {
        const found = await this.sync(slot, lines);
        if (found) return found;
      }
      const count = this.linesThatFit(slot, lines);
      if (count === 0) {
        this.current = this.ring.next(slot);
        continue;
      }
      try {
        await this.store(slot, lines.slice(0, count));
        return { count, segment: slot.seq, line: slot.lines };
      } catch (error) {
        const status = statusOf(error);
        if ((status === 409 || status === 404) && ++conflicts < MAX_CONFLICT_RETRIES) {
          slot.synced = false;
          // A few random milliseconds, so two writers that keep colliding fall out of step.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * conflicts));
          continue;
        }
        // Timeouts and connection errors may hide a write that happened: read before the retry.
        if (status === undefined || status >= 500) slot.synced = false;
        throw error;
      }
    }
  }

  /**
   * Reads the slot's ConfigMap and decides what the next write builds on. An older segment
   * there (the ring wrapped) is overwritten; this slot's own segment is appended to. When that
   * copy already holds some of `lines` — a write whose answer was lost — says how many and
   * where, so they are not stored twice.
   */
  private async sync(slot: Slot, lines: readonly string[]): Promise<StoredLines | undefined> {
    const { namespace } = this.options;
    let cm: V1ConfigMap;
    try {
      cm = await this.ring.call(`read ${slot.name}`, () => this.ring.core.readNamespacedConfigMap({ name: slot.name, namespace }));
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
      if (slot.exists) this.options.log(`${namespace}/${slot.name} was deleted by someone else; writing segment ${slot.seq} anew`);
      Object.assign(slot, this.ring.newSlot(slot.index, slot.seq), { synced: true });
      return undefined;
    }
    const found = toRingSegment(cm);
    if (found.seq < slot.seq && !slot.ours) {
      // The ring has wrapped: this ConfigMap holds the oldest segment, which retention replaces.
      Object.assign(slot, this.ring.newSlot(slot.index, slot.seq), {
        synced: true,
        exists: true,
        resourceVersion: found.resourceVersion,
        overwrites: found.seq,
      });
      return undefined;
    }
    if (found.seq < slot.seq) {
      // Only a hand edit lowers a segment number; its records stay, and the number is restored.
      this.options.log(`${namespace}/${slot.name} says segment ${found.seq} but holds segment ${slot.seq}; appending and restoring the number`);
    } else if (found.seq > slot.seq) {
      this.options.log(
        `${namespace}/${slot.name} holds segment ${found.seq}, newer than this replica's ${slot.seq}: another ` +
          `process writes the ring of replica ${this.ring.label}; appending after its records`,
      );
      slot.seq = found.seq;
    }
    this.ring.adopt(slot, found);
    const last = lastRecord(found.text);
    if (!last) return undefined;
    const alreadyStored = indexOfRecord(lines, last.record);
    if (alreadyStored >= 0) return { count: alreadyStored + 1, segment: slot.seq, line: last.line };
    const first = JSON.parse(lines[0] ?? '{}') as Partial<AuditRecord>;
    if (first.prev_hash !== last.record.hash) {
      this.options.log(
        `${namespace}/${slot.name} ends with ${last.record.entry_id}, not with the record before ${first.entry_id}: ` +
          `it was changed by someone else; the chain will not verify at this point`,
      );
    }
    return undefined;
  }

  /** How many of `lines` fit into `slot` with its data staying below maxBytes. */
  private linesThatFit(slot: Slot, lines: readonly string[]): number {
    let bytes = RECORDS_KEY_BYTES + slot.bytes;
    let count = 0;
    for (const line of lines) {
      bytes += Buffer.byteLength(line) + 1;
      if (bytes >= this.options.maxBytes) break;
      count++;
    }
    return count;
  }

  private async store(slot: Slot, chunk: readonly string[]): Promise<void> {
    const { namespace } = this.options;
    const added = `${chunk.join('\n')}\n`;
    const text = slot.text + added;
    const head = (JSON.parse(chunk.at(-1) ?? '{}') as Partial<AuditRecord>).hash ?? '';
    const body = this.ring.body(slot, text, head);
    const result = slot.exists
      ? await this.ring.call(`replace ${slot.name}`, () => this.ring.core.replaceNamespacedConfigMap({ name: slot.name, namespace, body }))
      : await this.ring.call(`create ${slot.name}`, () => this.ring.core.createNamespacedConfigMap({ namespace, body }));
    const overwrote = slot.overwrites;
    const newSegment = !slot.ours;
    // The base class drops `chunk` from its buffer when this returns; a query in between sees
    // these records both stored and buffered and counts them once (by entry_id).
    Object.assign(slot, {
      text,
      bytes: slot.bytes + Buffer.byteLength(added),
      lines: slot.lines + chunk.length,
      exists: true,
      synced: true,
      ours: true,
      resourceVersion: result.metadata?.resourceVersion,
      overwrites: undefined,
    });
    this.ring.stored.set(slot.name, slot.seq);
    if (overwrote !== undefined) {
      this.options.log(
        `retention: segment ${slot.seq} overwrote ${slot.name} (segment ${overwrote}); ` +
          `each replica keeps its newest ${this.options.ringSize} segments`,
      );
    }
    // Stored already: a failure here is logged, never thrown, so the batch is not written twice.
    if (newSegment) await this.ring.retireOlderThanRing(slot.seq);
  }

  /**
   * Every replica's ring plus this replica's buffered records, filtered, newest first: the
   * replicas' chains merged by timestamp (ties: this replica's buffer first, then the order of
   * the listing), each chain newest first. Buffered records are snapshotted before the listing;
   * one written meanwhile shows up in both and is visited once. The rings are read whole —
   * bounded by ringSize × maxBytes (900 KiB by default) per replica — and records are parsed
   * as the merge reaches them, so a scan that stops early parses little.
   */
  async scan(filter: AuditFilter, visit: (record: AuditRecord) => boolean | void): Promise<{ scanned: number; matched: number }> {
    const buffered = this.bufferedLines().map((line) => JSON.parse(line) as AuditRecord);
    const bufferedIds = new Set(buffered.map((record) => record.entry_id));
    const segments = await listRingSegments(this.ring.core, this.options.namespace, undefined, (send) =>
      this.ring.call('list the audit ConfigMaps', send),
    );
    const since = filter.since?.getTime();
    const checked: Checked = (record, line, segment, linksTo) => this.checkedRecord(record, line, ringSegmentPath(this.options.namespace, segment), linksTo);
    const sources = [buffered.reverse()[Symbol.iterator](), ...chainsNewestFirst(segments, since, this.options.namespace, checked)].map(peekable);
    const counts = { scanned: 0, matched: 0 };
    for (;;) {
      let newest: Peekable | undefined;
      for (const source of sources) {
        const head = source.peek();
        if (head && (!newest || head.timestamp > (newest.peek()?.timestamp ?? ''))) newest = source;
      }
      const record = newest?.take();
      if (!record) return counts;
      if (newest !== sources[0] && bufferedIds.has(record.entry_id)) continue;
      counts.scanned++;
      if (!matchesAuditQuery(record, filter)) continue;
      counts.matched++;
      if (visit(record) === false) return counts;
    }
  }
}

/** A record as a scan may serve it, read from `line` of `segment`, linking to `linksTo` when given (ConfigMapAuditSink: checkedRecord). */
type Checked = (record: AuditRecord, line: string, segment: RingSegment, linksTo: string | undefined) => AuditRecord;

const ringSegmentPath = (namespace: string, segment: RingSegment) => `configmap/${namespace}/${segment.name}`;

/** What a record before an unreadable line is expected to link to: no hash, so it does not. */
const UNREADABLE_LINE = 'an unreadable line';

/**
 * The records of each replica's ring, newest first, one iterator per replica in listing order
 * (`segments` come sorted by replica, then sequence), each passed through `checked`. A segment
 * whose newest record is older than `since` is skipped: records are appended in time order.
 */
function chainsNewestFirst(segments: readonly RingSegment[], since: number | undefined, namespace: string, checked: Checked): Array<Iterator<AuditRecord>> {
  const byReplica = new Map<string, RingSegment[]>();
  for (const segment of segments) {
    const list = byReplica.get(segment.replica) ?? [];
    list.push(segment);
    byReplica.set(segment.replica, list);
  }
  return [...byReplica.values()].map((list) => recordsNewestFirst(list, since, namespace, checked));
}

/**
 * One replica's records, newest first, each checked against its line and against the record
 * after it: the listing is one snapshot of the ring (a LIST and its continuations read one
 * resourceVersion), so the chain holds across the segments of consecutive sequence numbers, and
 * a segment's newest record is the one its chain-head annotation names.
 */
function* recordsNewestFirst(segments: readonly RingSegment[], since: number | undefined, namespace: string, checked: Checked): Generator<AuditRecord> {
  let linksTo: string | undefined;
  let newerSeq: number | undefined;
  for (const segment of [...segments].reverse()) {
    const newest = lastRecord(segment.text)?.record;
    if (since !== undefined && newest && Date.parse(newest.timestamp) < since) continue;
    // A gap in the sequence (a segment retention has not deleted yet, one missing) starts the chain again, as verify does.
    if (newerSeq === undefined || segment.seq !== newerSeq - 1) linksTo = undefined;
    newerSeq = segment.seq;
    const lines = recordLines(segment.text);
    let newestInSegment = true;
    for (let i = lines.length - 1; i >= 0; i--) {
      const line = lines[i] ?? '';
      const parsed = parseAuditLine(line);
      if (!parsed) {
        // An unreadable line is verifyConfigMapRing's to describe; here the record before it does not link.
        linksTo = UNREADABLE_LINE;
        newestInSegment = false;
        continue;
      }
      if (newestInSegment && parsed.hash !== segment.chainHead) {
        const annotation = `its chain-head annotation ${ANNOTATION_CHAIN_HEAD}=${segment.chainHead ?? '(missing)'} names another record`;
        throw new AuditRecordTamperedError(parsed.entry_id, ringSegmentPath(namespace, segment), `the newest record of the segment, but ${annotation}: records were removed from its end, or the annotation was edited`);
      }
      newestInSegment = false;
      const record = checked(parsed, line, segment, linksTo);
      linksTo = record.prev_hash;
      yield record;
    }
  }
}

/** An iterator whose next value can be looked at before it is taken: the merge needs that. */
interface Peekable {
  peek(): AuditRecord | undefined;
  take(): AuditRecord | undefined;
}

function peekable(iterator: Iterator<AuditRecord>): Peekable {
  let next = iterator.next();
  return {
    peek: () => (next.done ? undefined : next.value),
    take() {
      if (next.done) return undefined;
      const value = next.value;
      next = iterator.next();
      return value;
    },
  };
}

/** Position in `lines` of the line that is `record` (same entry_id and hash), or -1. */
function indexOfRecord(lines: readonly string[], record: AuditRecord): number {
  // The id is random, and a JSON string value cannot contain an unescaped `"`: a cheap filter.
  const marker = `"entry_id":"${record.entry_id}"`;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.includes(marker) && parseAuditLine(line)?.hash === record.hash) return i;
  }
  return -1;
}
