import { createHash } from 'node:crypto';
import type { CoreV1Api, V1ConfigMap } from '@kubernetes/client-node';
import { isAnchoredLine, segmentToSearch, type AnchorSite, type AuditAnchor } from './anchor.js';

/**
 * The layout of the ConfigMap audit ring, shared by the sink (writes, resume, query) and by
 * verification. Each replica owns `ringSize` ConfigMaps `policyguard-audit-<replica>-<index>`;
 * `data["records.jsonl"]` holds one audit record per line, and the annotations say which
 * segment of the replica's chain it is (a sequence number that only grows, so the ring can be
 * put in order after it wraps) and the hash of its last record.
 */

/** Key in `data` holding the records, one JSON record per line, each line ending in `\n`. */
export const RECORDS_KEY = 'records.jsonl';
/** ConfigMaps in a replica's ring: segments kept, the oldest overwritten by the next. */
export const DEFAULT_RING_SIZE = 16;

export const LABEL_APP = 'app.kubernetes.io/name';
export const LABEL_AUDIT = 'policyguard.dev/audit';
export const LABEL_REPLICA = 'policyguard.dev/replica';
/** Segment number of this ConfigMap in its replica's chain: 1, 2, … across wraps of the ring. */
export const ANNOTATION_SEQUENCE = 'policyguard.dev/audit-sequence';
/** `hash` of the last record in `records.jsonl`. */
export const ANNOTATION_CHAIN_HEAD = 'policyguard.dev/audit-chain-head';

/** Selects every audit ConfigMap of every replica. */
export const AUDIT_RING_SELECTOR = `${LABEL_APP}=policyguard,${LABEL_AUDIT}=true`;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_LABEL = 63;

/**
 * A replica name (usually the pod name) as a DNS-1123 label, usable in ConfigMap names and as
 * a label value. A name that is one already is kept; any other gets a short hash of the
 * original appended, so two names that differ only in what sanitising removed (`Pod_A`,
 * `pod-a`) never share a ring.
 *
 * @example
 * replicaLabel('policyguard-7d9f8-x2x4q'); // 'policyguard-7d9f8-x2x4q'
 * replicaLabel('My_Replica');              // 'my-replica-' + 8 hex characters
 */
export function replicaLabel(replica: string): string {
  if (DNS1123_LABEL.test(replica) && replica.length <= MAX_LABEL) return replica;
  if (replica.length === 0) throw new RangeError('the audit replica name must not be empty');
  const hash = createHash('sha256').update(replica).digest('hex').slice(0, 8);
  const base = replica
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, MAX_LABEL - hash.length - 1)
    .replace(/^-+|-+$/g, '');
  return base ? `${base}-${hash}` : `replica-${hash}`;
}

/**
 * Name of ConfigMap `index` of a replica's ring (`label` from {@link replicaLabel}).
 *
 * @example
 * ringConfigMapName('pod-0', 3); // 'policyguard-audit-pod-0-3'
 */
export function ringConfigMapName(label: string, index: number): string {
  return `policyguard-audit-${label}-${index}`;
}

/** One ConfigMap of a ring, as read. */
export interface RingSegment {
  name: string;
  /** The `policyguard.dev/replica` label. */
  replica: string;
  /** Position in the ring, from the name. */
  index: number;
  /** {@link ANNOTATION_SEQUENCE}; 0 when missing or not a positive integer. */
  seq: number;
  /** {@link ANNOTATION_CHAIN_HEAD}, when present. */
  chainHead: string | undefined;
  resourceVersion: string | undefined;
  /** `data["records.jsonl"]`, '' when missing. */
  text: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

const NAME_INDEX = /-(\d+)$/;

/**
 * Reads a ConfigMap of the ring into a {@link RingSegment}.
 *
 * @example
 * const segment = toRingSegment(await core.readNamespacedConfigMap({ name, namespace }));
 */
export function toRingSegment(cm: V1ConfigMap): RingSegment {
  const name = cm.metadata?.name ?? '';
  const labels = cm.metadata?.labels ?? {};
  const annotations = cm.metadata?.annotations ?? {};
  const seq = Number(annotations[ANNOTATION_SEQUENCE]);
  return {
    name,
    replica: labels[LABEL_REPLICA] ?? '',
    index: Number(NAME_INDEX.exec(name)?.[1] ?? -1),
    seq: Number.isSafeInteger(seq) && seq > 0 ? seq : 0,
    chainHead: annotations[ANNOTATION_CHAIN_HEAD],
    resourceVersion: cm.metadata?.resourceVersion,
    text: cm.data?.[RECORDS_KEY] ?? '',
    labels,
    annotations,
  };
}

/**
 * The audit ConfigMaps in `namespace` — of one replica (`label` from {@link replicaLabel}) or
 * of all — ordered by replica, then by sequence (oldest first). Listed in pages, so no single
 * response carries more than a few ConfigMaps of up to 900 KiB each.
 *
 * @example
 * const ring = await listRingSegments(core, 'policyguard-system', replicaLabel('pod-0'));
 */
export async function listRingSegments(
  core: CoreV1Api,
  namespace: string,
  label?: string,
  /** Wraps each page request (the sink adds its request timeout). */
  request: <T>(send: () => Promise<T>) => Promise<T> = (send) => send(),
): Promise<RingSegment[]> {
  const labelSelector = label === undefined ? AUDIT_RING_SELECTOR : `${AUDIT_RING_SELECTOR},${LABEL_REPLICA}=${label}`;
  const segments: RingSegment[] = [];
  let next: string | undefined;
  do {
    const page = await request(() =>
      core.listNamespacedConfigMap({ namespace, labelSelector, limit: 4, ...(next ? { _continue: next } : {}) }),
    );
    segments.push(...page.items.map(toRingSegment));
    next = page.metadata?._continue || undefined;
  } while (next);
  return segments.sort((a, b) => (a.replica === b.replica ? a.seq - b.seq : a.replica < b.replica ? -1 : 1));
}

/**
 * The lines of a `records.jsonl` value: split on `\n`, without the empty string after the
 * final `\n`.
 *
 * @example
 * recordLines('{"a":1}\n{"b":2}\n'); // ['{"a":1}', '{"b":2}']
 */
export function recordLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

/**
 * Bytes a ConfigMap's data takes as the API server counts it against its size limit: every
 * key plus every value, UTF-8.
 *
 * @example
 * configMapDataBytes({ 'records.jsonl': 'x\n' }); // 15
 */
export function configMapDataBytes(data: Record<string, string>): number {
  let bytes = 0;
  for (const [key, value] of Object.entries(data)) bytes += Buffer.byteLength(key) + Buffer.byteLength(value);
  return bytes;
}

/**
 * What one replica's ring (segments oldest first) holds where `anchor` points; used by the
 * sink on open and by verifyConfigMapRing. `lastEntryId`: the ring's last record, for messages.
 *
 * @example
 * const check = checkAnchor(anchor, ringSiteOf(anchor, segments, 'aud_0123456789ab'), key);
 */
export function ringSiteOf(anchor: AuditAnchor, segments: readonly RingSegment[], lastEntryId: string | undefined): AnchorSite {
  const anchored = segments.find((segment) => segment.seq === anchor.segment);
  const lines = anchored ? recordLines(anchored.text) : [];
  const site: AnchorSite = {
    segments: segments.map((segment) => segment.seq),
    lines: lines.length,
    text: lines[anchor.line - 1],
    lastEntryId,
    describeSegment: (seq) => segments.find((segment) => segment.seq === seq)?.name ?? `segment ${seq}`,
  };
  if (isAnchoredLine(anchor, site.text)) return site;
  const searched = segmentToSearch(anchor, segments);
  const index = searched ? recordLines(searched.text).findIndex((text) => isAnchoredLine(anchor, text)) : -1;
  return index < 0 || !searched ? site : { ...site, moved: { segment: searched.seq, line: index + 1 } };
}
