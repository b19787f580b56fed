import { createHash, randomFillSync, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { macOf } from './key.js';

/** What the agent asked to do, as audited (parameters and context already redacted). */
export interface AuditAction {
  type: string;
  target: string;
  parameters: Record<string, unknown>;
  context: string;
  /** `namespace/name` of the GuardUpstream a gated call went through (the MCP gateway). */
  upstream?: string;
}

/** The engine's decision, as audited. */
export interface AuditEvaluation {
  allowed: boolean;
  decision: 'allow' | 'deny' | 'require_approval';
  require_approval: boolean;
  reason: string;
  matched: unknown[];
  audit_findings: unknown[];
}

/** The GuardApproval a decision asked for or used (docs/decisions.md, "Approvals"). */
export interface AuditApproval {
  /** `namespace/name` (the name alone in standalone mode). */
  ref: string;
  /** Its phase as this decision left it: Pending (asked), Used (this call), Denied or Expired (refused). */
  phase: string;
  decided_by?: string;
}

/** What a caller hands to {@link AuditSink.append}; the sink adds id, time and chain fields. */
export interface AuditEntryInput {
  action_id: string | null;
  agent_id: string;
  caller: string | null;
  action: AuditAction;
  evaluation: AuditEvaluation;
  revision: string;
  approval?: AuditApproval;
}

/** One line of the audit log. */
export interface AuditRecord extends AuditEntryInput {
  /** `aud_` + 12 hex. */
  entry_id: string;
  /** RFC 3339 UTC with milliseconds (`new Date().toISOString()`). */
  timestamp: string;
  prev_hash: string;
  hash: string;
  /**
   * HMAC-SHA256 (hex) of `hash` under the audit key, present when the sink has one
   * (`--audit-key-file`). Not part of the chain hash, so a log verifies without the key; with the
   * key, a chain recomputed by someone who does not hold it fails (docs/decisions.md).
   */
  mac?: string;
}

/** `prev_hash` of the very first record of a log. */
export const GENESIS_HASH = '0'.repeat(64);

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Shape of a stored audit record. Used to tell a complete record from a torn or foreign line
 * (repair, verify, query); the annotation makes tsc fail if it drifts from {@link AuditRecord}.
 */
export const AuditRecordSchema: z.ZodType<AuditRecord> = z.object({
  entry_id: z.string(),
  timestamp: z.string(),
  action_id: z.string().nullable(),
  agent_id: z.string(),
  caller: z.string().nullable(),
  action: z.object({
    type: z.string(),
    target: z.string(),
    parameters: z.record(z.string(), z.unknown()),
    context: z.string(),
    upstream: z.string().optional(),
  }),
  evaluation: z.object({
    allowed: z.boolean(),
    decision: z.enum(['allow', 'deny', 'require_approval']),
    require_approval: z.boolean(),
    reason: z.string(),
    matched: z.array(z.unknown()),
    audit_findings: z.array(z.unknown()),
  }),
  revision: z.string(),
  approval: z.object({ ref: z.string(), phase: z.string(), decided_by: z.string().optional() }).optional(),
  prev_hash: z.string().regex(SHA256_HEX),
  hash: z.string().regex(SHA256_HEX),
  mac: z.string().regex(SHA256_HEX).optional(),
});

/**
 * Parses one JSONL line into an audit record, or `undefined` when it is not valid JSON or not
 * shaped like a record. The parsed object is returned as read (not zod's stripped copy), so
 * whatever was hashed is what callers see.
 *
 * @example
 * const record = parseAuditLine(line); // AuditRecord | undefined
 */
export function parseAuditLine(text: string): AuditRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return AuditRecordSchema.safeParse(value).success ? (value as AuditRecord) : undefined;
}

const CIRCULAR = '[CIRCULAR]';

/**
 * Deterministic JSON: object keys sorted (by UTF-16 code unit, like `Array#sort`) at every
 * level, no whitespace. Follows `JSON.stringify` for everything else (`toJSON`, `undefined`
 * members dropped, non-finite numbers → `null`) so a record survives a write/parse round trip
 * with the same text. Unlike `JSON.stringify` it never throws: a bigint becomes its decimal
 * string and a cycle becomes `"[CIRCULAR]"` — an audit write must not fail on odd input.
 *
 * @example
 * canonicalJson({ b: 1, a: { d: [true], c: null } }); // '{"a":{"c":null,"d":[true]},"b":1}'
 */
export function canonicalJson(value: unknown): string {
  return serialize(value, new Set()) ?? 'null';
}

function serialize(input: unknown, ancestors: Set<object>): string | undefined {
  const value = hasToJson(input) ? input.toJSON() : input;
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      return JSON.stringify(value.toString());
  }
  if (value === null) return 'null';
  // undefined, functions and symbols: dropped from objects, null in arrays, like JSON.stringify.
  if (typeof value !== 'object') return undefined;
  if (ancestors.has(value)) return JSON.stringify(CIRCULAR);
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      return `[${value.map((item) => serialize(item, ancestors) ?? 'null').join(',')}]`;
    }
    const members: string[] = [];
    const object = value as Record<string, unknown>;
    for (const key of Object.keys(object).sort()) {
      const member = serialize(object[key], ancestors);
      if (member !== undefined) members.push(`${JSON.stringify(key)}:${member}`);
    }
    return `{${members.join(',')}}`;
  } finally {
    ancestors.delete(value);
  }
}

function hasToJson(value: unknown): value is { toJSON(): unknown } {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { toJSON?: unknown }).toJSON === 'function'
  );
}

/** A record without the fields derived from it: what the chain hash covers. */
export type HashedAuditFields = Omit<AuditRecord, 'hash' | 'mac'>;

/**
 * The chain link: sha256 (hex) over `prevHash` followed by the canonical JSON of the record
 * without its `hash` and `mac` fields.
 *
 * @example
 * const { hash, mac, ...fields } = record;
 * hashRecord(fields.prev_hash, fields) === hash;
 */
export function hashRecord(prevHash: string, fields: HashedAuditFields): string {
  return chainHash(prevHash, canonicalJson(fields));
}

function chainHash(prevHash: string, canonicalRecord: string): string {
  return createHash('sha256').update(prevHash).update(canonicalRecord).digest('hex');
}

/**
 * Keys whose values are never written. Deliberately broad ("key" also hits "monkey", "auth"
 * also hits "author"): an over-redacted audit field costs little, a leaked credential a lot.
 */
const SECRET_KEY = /pass(word)?|token|secret|key|credential|auth/i;
const REDACTED = '[REDACTED]';
const TRUNCATED = '[TRUNCATED]';
/** Deep enough for any real tool call; stops hostile nesting from costing stack or disk. */
const MAX_DEPTH = 32;

/**
 * Deep copy of `value` with the value of every object key that looks like a secret
 * (password, token, secret, key, credential, auth — any case, anywhere in the key) replaced by
 * `'[REDACTED]'`. Values nested deeper than 32 levels become `'[TRUNCATED]'`, cycles become
 * `'[CIRCULAR]'`; it never throws. Meant for JSON-shaped data: arrays stay arrays, Dates are
 * copied, any other object becomes a plain object of its own enumerable keys. The input is not
 * modified.
 *
 * @example
 * redactSecrets({ user: 'bob', auth: { apiKey: 'x' }, list: [{ Password: 'y' }] });
 * // { user: 'bob', auth: '[REDACTED]', list: [{ Password: '[REDACTED]' }] }
 */
export function redactSecrets<T>(value: T): T {
  return redact(value, 0, new Set()) as T;
}

function redact(value: unknown, depth: number, ancestors: Set<object>): unknown {
  if (depth > MAX_DEPTH) return TRUNCATED;
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Date) return new Date(value.getTime());
  if (ancestors.has(value)) return CIRCULAR;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1, ancestors));
    const copy: Record<string, unknown> = {};
    for (const [key, member] of Object.entries(value)) {
      const redacted = SECRET_KEY.test(key) ? REDACTED : redact(member, depth + 1, ancestors);
      // A JSON-parsed "__proto__" key is an own property; plain assignment would set the prototype.
      Object.defineProperty(copy, key, { value: redacted, enumerable: true, writable: true, configurable: true });
    }
    return copy;
  } finally {
    ancestors.delete(value);
  }
}

/**
 * `name=`, `name:`, `"name": ` … found token by token (the lookbehind anchors each match at
 * the start of a name, which keeps the scan linear on hostile input). The value after it may be
 * quoted (an unclosed quote runs to the end of the text) or carry a `Bearer`/`Basic` scheme;
 * unquoted it runs to whitespace or one of `,;&}`.
 */
const NAME_AND_SEPARATOR = /(?<![\w.-])([\w.-]+)["']?\s*[:=]\s*/g;
const ASSIGNED_VALUE = /(?:(?:bearer|basic)\s+)?("[^"]*"?|'[^']*'?|[^\s,;&"'}]+)/iy;

/**
 * Redacts secret-looking assignments inside free text such as an action's `context`
 * (`password=hunter2`, `"token": "abc"`, `Authorization: Bearer abc`). Prose that merely
 * mentions a key name followed by a colon loses the next word; that is accepted.
 *
 * @example
 * redactSecretText('retry with token=abc123 please'); // 'retry with token=[REDACTED] please'
 */
export function redactSecretText(text: string): string {
  // Fresh copies: both regexes carry lastIndex state.
  const names = new RegExp(NAME_AND_SEPARATOR);
  const values = new RegExp(ASSIGNED_VALUE);
  let result = '';
  let copied = 0;
  for (let name = names.exec(text); name; name = names.exec(text)) {
    if (!SECRET_KEY.test(name[1] ?? '')) continue;
    values.lastIndex = names.lastIndex;
    const value = values.exec(text);
    if (!value) continue;
    const quote = /^["']/.test(value[1] ?? '') ? value[1]?.[0] : '';
    result += `${text.slice(copied, names.lastIndex)}${quote}${REDACTED}${quote}`;
    copied = names.lastIndex = values.lastIndex;
  }
  return result + text.slice(copied);
}

/**
 * Builds the next record of a chain: redacts the action's parameters and context, assigns
 * `entry_id`, `timestamp` and `prev_hash`, hashes, and with a `key` adds the `mac`. The result is exactly what a JSON round
 * trip of its canonical JSON gives back (no Dates, no `undefined`, no shared references with
 * `input`), so the stored line, the returned object and later reads all agree.
 *
 * @example
 * const record = createAuditRecord(input, GENESIS_HASH);
 * const next = createAuditRecord(other, record.hash, key); // key from readAuditKeyFile: carries a mac
 */
export function createAuditRecord(input: AuditEntryInput, prevHash: string, key?: KeyObject): AuditRecord {
  const draft: HashedAuditFields = {
    entry_id: newId('aud_'),
    timestamp: new Date().toISOString(),
    action_id: input.action_id,
    agent_id: input.agent_id,
    caller: input.caller,
    action: {
      type: input.action.type,
      target: input.action.target,
      parameters: redactSecrets(input.action.parameters),
      context: redactSecretText(input.action.context),
      ...(input.action.upstream !== undefined ? { upstream: input.action.upstream } : {}),
    },
    evaluation: input.evaluation,
    revision: input.revision,
    ...(input.approval !== undefined ? { approval: input.approval } : {}),
    prev_hash: prevHash,
  };
  // Serialised once: parsing the canonical text back gives `stored`, whose canonical JSON is
  // that same text (the round trip is property-tested), so hashing the text is hashRecord(stored).
  const text = canonicalJson(draft);
  const stored = JSON.parse(text) as HashedAuditFields;
  const hash = chainHash(prevHash, text);
  return key ? { ...stored, hash, mac: macOf(key, hash) } : { ...stored, hash };
}

/**
 * A record id: `prefix` + 12 random hex characters.
 *
 * @example
 * newId('inc_'); // 'inc_3f9a0c1b2d4e'
 */
export function newId(prefix: string): string {
  if (idOffset + ID_BYTES > idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const id = prefix + idPool.toString('hex', idOffset, idOffset + ID_BYTES);
  idOffset += ID_BYTES;
  return id;
}

// Random bytes are drawn a block at a time: one randomFillSync per 1,024 ids instead of a
// randomBytes call (~2 µs) per id; a decision takes two ids, a deny three.
const ID_BYTES = 6;
const idPool = Buffer.alloc(ID_BYTES * 1024);
let idOffset = idPool.length;
