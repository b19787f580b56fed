import { hash as cryptoHash, randomFillSync, type KeyObject } from 'node:crypto';
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
const CIRCULAR_JSON = JSON.stringify(CIRCULAR);

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
  return serialize(value, undefined, undefined) ?? 'null';
}

/**
 * The canonical JSON of `value` with secrets redacted ({@link redactSecrets}), in one pass and
 * without a copy: what an audit record stores of an action's parameters.
 *
 * @example redactedCanonicalJson({ b: 1, token: 'x' }) // '{"b":1,"token":"[REDACTED]"}'
 */
export function redactedCanonicalJson(value: unknown): string {
  return serialize(value, undefined, 0) ?? 'null';
}

/**
 * Text of frozen objects whose members are all primitive data properties (the engine's shared
 * `matched` entries): they cannot change, so each is serialised once, not once per decision.
 * Read and written only outside redacted data.
 */
const frozenText = new WeakMap<object, string>();

/** No getters: what the object's text says cannot change once it is frozen. */
function plainData(value: object): boolean {
  for (const descriptor of Object.values(Object.getOwnPropertyDescriptors(value))) if (!('value' in descriptor)) return false;
  return true;
}

/**
 * One serialiser for both: `redactDepth` undefined is {@link canonicalJson}; a number is the
 * depth inside redacted data, where the redaction rules apply first (secret keys,
 * `[TRUNCATED]` below depth 32, Dates as their ISO text, any other object taken as its own
 * enumerable keys, without calling its `toJSON`).
 */
function serialize(input: unknown, seen: Set<object> | undefined, redactDepth: number | undefined): string | undefined {
  if (redactDepth !== undefined && redactDepth > MAX_DEPTH) return TRUNCATED_JSON;
  let value = input;
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    if (redactDepth === undefined || value instanceof Date) value = (value as { toJSON(): unknown }).toJSON();
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(redactDepth === undefined ? value : redactSecretText(value));
    case 'number':
      // String(n) is JSON's number text for every finite number.
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      return `"${value}"`;
    case 'object':
      break;
    default:
      // undefined, functions and symbols: dropped from objects, null in arrays, like JSON.stringify.
      return undefined;
  }
  if (value === null) return 'null';
  // Redacted data never comes from the cache: its text there is unredacted.
  const cached = redactDepth === undefined ? frozenText.get(value) : undefined;
  if (cached !== undefined) return cached;
  // Made on the first object, so a primitive costs no Set.
  const ancestors = seen ?? new Set<object>();
  if (ancestors.has(value)) return CIRCULAR_JSON;
  ancestors.add(value);
  const inner = redactDepth === undefined ? undefined : redactDepth + 1;
  let text: string;
  let flat = true;
  if (Array.isArray(value)) {
    text = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) text += ',';
      // An argv: the item after `--password` is its value.
      const item = value[i];
      const flagged = inner !== undefined && i > 0 && typeof item !== 'boolean' && item !== null && typeof item !== 'object' && secretFlag(value[i - 1]);
      text += flagged ? REDACTED_JSON : (serialize(item, ancestors, inner) ?? 'null');
    }
    text += ']';
    flat = false;
  } else {
    const object = value as Record<string, unknown>;
    const keys = Object.keys(object);
    if (keys.length > 1) keys.sort();
    // A name/value pair that names a secret (`{"name": "Authorization", "value": "Bearer …"}`,
    // as headers, environment variables, tags and parameters are often listed): its value is the secret.
    const namedSecret = inner !== undefined && keys.some(isPairValue) && namesSecret(object, keys);
    text = '{';
    for (const key of keys) {
      const member = object[key];
      // true, false and null hold no secret: shown, as a person approving `bypass_review: true` must see it.
      const secret = inner !== undefined && typeof member !== 'boolean' && member !== null && (secretKey(key) || (namedSecret && isPairValue(key)));
      const serialized = secret ? REDACTED_JSON : serialize(member, ancestors, inner);
      if (serialized === undefined) continue;
      if (text.length > 1) text += ',';
      text += `${JSON.stringify(key)}:${serialized}`;
      if (typeof member === 'object' && member !== null) flat = false;
    }
    text += '}';
  }
  ancestors.delete(value);
  if (flat && redactDepth === undefined && Object.isFrozen(value) && plainData(value)) frozenText.set(value, text);
  return text;
}

/**
 * The members of a pair, in any case: `name`/`key` and `value` (headers, environment
 * variables; `Name`/`Value` in AWS SSM, `Key`/`Value` in tags), CloudFormation's
 * `ParameterKey`/`ParameterValue`.
 */
const PAIR_NAME = /^(?:parameter)?(?:name|key)$/i;
const PAIR_VALUE = /^(?:parameter)?value$/i;
/** {@link PAIR_VALUE}, its regex run only for the two lengths it can match: every object of every record asks. */
const isPairValue = (key: string): boolean => (key.length === 5 || key.length === 14) && PAIR_VALUE.test(key);

const FLAG_ITEM = /^--?[A-Za-z][\w.-]+$/;

/** Whether `item` is a command-line flag naming a secret, whose value is the next item: `--password`, `--api-key`, `-password`. */
function secretFlag(item: unknown): boolean {
  return typeof item === 'string' && item.charCodeAt(0) === 45 /* - */ && FLAG_ITEM.test(item) && secretKey(item);
}

/** Whether a name member of `object` (of `keys`, see {@link PAIR_NAME}) is a string that names a secret. */
function namesSecret(object: Record<string, unknown>, keys: readonly string[]): boolean {
  return keys.some((k) => PAIR_NAME.test(k) && typeof object[k] === 'string' && secretKey(object[k]));
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

/**
 * Whether a stored line's `hash` is the hash of the line itself: sha256 over its `prev_hash`
 * and its text up to `,"hash":"`, closed with `}`, which is the canonical JSON the writer hashed
 * ({@link sealAuditRecord}). No re-serialisation, so a read of the log checks every record it
 * serves at little more than the parse (docs/decisions.md, "The audit log"). A line whose text
 * differs from what the writer stored (a field edited, keys moved) fails.
 *
 * @example storedLineHashMatches(line, parseAuditLine(line)!) // true for a line as written
 */
export function storedLineHashMatches(line: string, record: AuditRecord): boolean {
  const at = line.lastIndexOf(',"hash":"');
  return at >= 0 && chainHash(record.prev_hash, `${line.slice(0, at)}}`) === record.hash;
}

function chainHash(prevHash: string, canonicalRecord: string): string {
  // One-shot hash: ~0.5 µs less than createHash().update().digest() for a record's size.
  return cryptoHash('sha256', prevHash + canonicalRecord, 'hex');
}

/**
 * What names a secret, in a word of a key: any of these anywhere in the word (`dbpass`,
 * `TS_AUTHKEY`, `refresh_tokens`, `privkey`, `code_verifier`), or the short names otp, totp,
 * hotp, mfa, pin, pincode, cardpin, ssn, cvv, cvc, sig and dsn as the whole word (`card_pin`,
 * not `mapping`; `sentry_dsn`).
 */
const SECRET_WORD = /pass(?:word|wd)?|pwd|token|secret|key|cred|auth|cookie|bearer|session|signature|priv|jwt|mnemonic|verifier|^(?:otp|totp|hotp|mfa|pin|pincode|cardpin|ssn|cvv|cvv2|cvc|sig|dsn)$/i;
/** The short names of {@link SECRET_WORD} anywhere in a key: a key without them or a long name is not split into words. */
const SHORT_SECRET_HINT = /otp|mfa|pin|ssn|cvv|cvc|sig|dsn/i;
/**
 * Words that hold one of those but name no secret, which a person approving a call must see
 * (`author`, `monkey_patch`, `keyboard`). Only these are let through: any other word that holds
 * a secret's name is taken as one. Not here, though they look harmless: `bypass`
 * (`x-vercel-protection-bypass` is a secret), `authority` (a URI authority holds user:password),
 * `passport`, `tokenized` (a payment token), `passthrough`.
 */
const NOT_SECRET_WORDS = new Set([
  'author', 'authors', 'authored', 'authoring',
  'compass', 'encompass', 'surpass', 'trespass', 'overpass', 'underpass', 'passenger', 'passengers', 'passage', 'passages', 'passive',
  'monkey', 'donkey', 'turkey', 'hockey', 'jockey', 'whiskey', 'keyboard', 'keyword', 'keywords', 'keynote', 'keystone', 'keyframe', 'keyframes',
  'tokenizer', 'tokenize', 'tokenization', 'possession', 'obsession', 'secretary', 'privilege', 'privileges', 'privileged', 'privacy',
]);
/**
 * The words of a key: runs of ASCII letters or digits, split where a lower-case letter meets
 * an upper-case one (`apiKey`: api, Key; `DB_PASSWORD`: DB, PASSWORD; `XAuthToken`: X, Auth, Token).
 */
const KEY_WORD = /[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+/g;

/**
 * Whether the value under `key` is never written: a word of the key holds a secret's name
 * ({@link SECRET_WORD}: `api_key`, `accessToken`, `DB_PASSWORD`, `dbpass`, `card_pin`,
 * `X-Auth-Token`) and is not one of the few words known to name none ({@link NOT_SECRET_WORDS}:
 * `author`, `monkey`, `keyboard`), which approvers must see; `true`, `false` and `null` are kept
 * under any key (`bypass_review: true`). Broad on purpose: an over-redacted
 * field costs a look at the caller, a leaked credential a lot; ambiguous names (`key`,
 * `session_id`, `sort_key`, `max_tokens`) are redacted too.
 *
 * @example secretKey('clientSecret') // true
 * @example secretKey('author') // false
 */
export function secretKey(key: string): boolean {
  // A key that holds no secret's name at all (most: `amount`, `table`) is not split.
  if (!SECRET_WORD.test(key) && !SHORT_SECRET_HINT.test(key)) return false;
  for (const word of key.match(KEY_WORD) ?? []) {
    if (SECRET_WORD.test(word) && !NOT_SECRET_WORDS.has(word.toLowerCase())) return true;
  }
  return false;
}

/**
 * `text` with the password of every URL's user information redacted (a connection string):
 * `postgres://app:s3cret@db/x` → `postgres://app:[REDACTED]@db/x`. The password runs to the
 * last `@` of the authority, so one with an unencoded `@` in it is redacted whole. Linear: each
 * authority is scanned once, and ends before the next `://`.
 */
function redactUrlPasswords(text: string): string {
  let i = text.indexOf('://');
  if (i < 0) return text;
  let out = '';
  let copied = 0;
  for (; i >= 0; i = text.indexOf('://', i + 3)) {
    const start = i + 3;
    let end = start;
    while (end < text.length && !AUTHORITY_END.test(text[end]!)) end++;
    const at = text.lastIndexOf('@', end - 1);
    const colon = text.indexOf(':', start);
    if (at < start || colon < 0 || colon > at) continue;
    out += `${text.slice(copied, colon + 1)}${REDACTED}`;
    copied = at;
    i = at;
  }
  return out + text.slice(copied);
}
const AUTHORITY_END = /[\s/?#]/;
const REDACTED = '[REDACTED]';
const TRUNCATED = '[TRUNCATED]';
const REDACTED_JSON = JSON.stringify(REDACTED);
const TRUNCATED_JSON = JSON.stringify(TRUNCATED);
/** Deep enough for any real tool call; stops hostile nesting from costing stack or disk. */
const MAX_DEPTH = 32;

/**
 * Deep copy of `value` with the value of every object key that names a secret
 * (password, token, secret, key, credential, auth … as a word of the key, any case; see
 * {@link secretKey}; true, false and null are kept) replaced by `'[REDACTED]'`, as is the `value` of a name/value pair whose `name`
 * looks like one, and secrets inside strings as {@link redactSecretText} finds them. Values nested deeper than 32 levels become `'[TRUNCATED]'`, cycles become
 * `'[CIRCULAR]'`; it never throws. The copy is plain JSON, what an audit record or incident
 * stores: arrays stay arrays, Dates become their ISO text, any other object a plain object of
 * its own enumerable keys. The input is not modified.
 *
 * @example
 * redactSecrets({ user: 'bob', auth: { apiKey: 'x' }, list: [{ Password: 'y' }] });
 * // { user: 'bob', auth: '[REDACTED]', list: [{ Password: '[REDACTED]' }] }
 */
export function redactSecrets<T>(value: T): T {
  // One set of redaction rules: the serialiser's. JSON.parse keeps a "__proto__" key as data.
  return JSON.parse(redactedCanonicalJson(value)) as T;
}

/**
 * `name=`, `name: `, `"name":` … found token by token (the lookbehind anchors each match at
 * the start of a name, which keeps the scan linear on hostile input). A colon separates a name
 * from its value only when a space or a quote follows it or the name is quoted: `token:bot`
 * and `system:serviceaccount:ns:sa` are how identities are written, not assignments. The value
 * after it may be quoted (an unclosed quote runs to the end of the text) or carry a
 * `Bearer`/`Basic` scheme; unquoted it runs to whitespace or one of `,;&}`.
 */
const NAME_AND_SEPARATOR = /(?<![\w.-])([\w.-]+)(?:["']?\s*=|["']\s*:|\s*:(?=[\s"']))\s*/g;
/** `--name value`, `-name value`: a command line's flag (a word, not a letter) and the value after it (a second pass, only for texts holding ` -`). */
const FLAG_AND_SPACE = /(?<![\w.-])--?([A-Za-z][\w.-]+)\s+(?=[^\s-])/g;
const ASSIGNED_VALUE = /(?:(?:bearer|basic)\s+)?("[^"]*"?|'[^']*'?|[^\s,;&"'}]+)/iy;

/**
 * Redacts secret-looking assignments inside free text such as an action's `context`
 * (`password=hunter2`, `"token": "abc"`, `Authorization: Bearer abc`; not `token:bot`, a
 * caller's name) and the password of a URL (`postgres://app:[REDACTED]@db`). Prose that merely
 * mentions a key name followed by a colon loses the next word; that is accepted.
 *
 * @example
 * redactSecretText('retry with token=abc123 please'); // 'retry with token=[REDACTED] please'
 */
export function redactSecretText(input: string): string {
  // Every assignment has a separator, or is a `--flag value`; most contexts have none (and many are empty).
  const flags = input.includes(' -') || input.startsWith('-');
  if (!input.includes('=') && !input.includes(':') && !flags) return input;
  const text = redactAssignments(redactUrlPasswords(input), NAME_AND_SEPARATOR);
  return flags ? redactAssignments(text, FLAG_AND_SPACE) : text;
}

/** `text` with the value after each name `pattern` finds (its group 1) that names a secret redacted. */
function redactAssignments(text: string, pattern: RegExp): string {
  // Fresh copies: both regexes carry lastIndex state.
  const names = new RegExp(pattern);
  const values = new RegExp(ASSIGNED_VALUE);
  let result = '';
  let copied = 0;
  for (let name = names.exec(text); name; name = names.exec(text)) {
    if (!secretKey(name[1] ?? '')) continue;
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
 * `input` with its largest parameters replaced by what they were, for a record they would make
 * `bytes` long, more than `maxBytes`: each such argument's value becomes
 * `[OMITTED: N bytes of canonical JSON (secrets redacted), sha256 …]`, the text the record would
 * have held and its digest, largest first until the rest fits; the small ones (the query, the
 * table) stay. A call is never left unrecorded for its size, and who holds the arguments can
 * show these were they.
 *
 * @example withParametersOmitted({ …input, action: { …, parameters: { sql: 'DELETE …', pad: hugeList } } }, 6_860_569, 4_194_304).action.parameters
 *   // { sql: 'DELETE …', pad: '[OMITTED: 6859104 bytes of canonical JSON (secrets redacted), sha256 …]' }
 */
export function withParametersOmitted(input: AuditEntryInput, bytes: number, maxBytes: number): AuditEntryInput {
  const parameters: Record<string, unknown> = { ...input.action.parameters };
  const members = Object.entries(parameters)
    // Each as the record would hold it (a secret already "[REDACTED]"): `{"key":…}` without the key.
    .map(([key, value]) => ({ key, text: redactedCanonicalJson({ [key]: value }).slice(JSON.stringify(key).length + 2, -1) }))
    .sort((a, b) => b.text.length - a.text.length);
  // A replacement takes ~140 of the bytes it frees: count 160.
  let over = bytes - maxBytes;
  for (const { key, text } of members) {
    if (over <= 0) break;
    const size = Buffer.byteLength(text);
    parameters[key] = `[OMITTED: ${size} bytes of canonical JSON (secrets redacted), sha256 ${cryptoHash('sha256', text, 'hex')}]`;
    over -= size - 160;
  }
  return { ...input, action: { ...input.action, parameters } };
}

/** A record ready to store: its line, and what the chain and the log messages need of it. */
export interface SealedAuditRecord {
  readonly entry_id: string;
  readonly hash: string;
  /**
   * The stored JSONL line (no newline): the canonical JSON that `hash` covers, with `hash` (and
   * `mac`) added as its last members. Parsing it gives the record.
   */
  readonly line: string;
}

/**
 * Builds the next record of a chain as the line the log stores: redacts the action's
 * parameters and context, assigns `entry_id`, `timestamp` and `prev_hash`, hashes, and with a
 * `key` adds the `mac`. The record is serialised once, straight from `input`: the text hashed is
 * `canonicalJson` of the record without `hash` and `mac` (a property test holds the two
 * equal), so `hashRecord` over the parsed line gives `hash` back.
 *
 * @example
 * const sealed = sealAuditRecord(input, GENESIS_HASH);
 * const next = sealAuditRecord(other, sealed.hash, key); // key from readAuditKeyFile: carries a mac
 */
export function sealAuditRecord(input: AuditEntryInput, prevHash: string, key?: KeyObject): SealedAuditRecord {
  const entryId = newId('aud_');
  const text = hashedText(input, entryId, isoNow(), prevHash);
  const hash = chainHash(prevHash, text);
  const mac = key ? `,"mac":"${macOf(key, hash)}"` : '';
  return { entry_id: entryId, hash, line: `${text.slice(0, -1)},"hash":"${hash}"${mac}}` };
}

/** `new Date().toISOString()`, made once per millisecond: records in the same one share it. */
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}
let isoMs = -1;
let isoText = '';

/**
 * The record as {@link sealAuditRecord} stores it, parsed back: a plain object detached from
 * `input`, as later reads of the log see it.
 *
 * @example
 * const record = createAuditRecord(input, GENESIS_HASH); // AuditRecord
 */
export function createAuditRecord(input: AuditEntryInput, prevHash: string, key?: KeyObject): AuditRecord {
  return JSON.parse(sealAuditRecord(input, prevHash, key).line) as AuditRecord;
}

/**
 * `canonicalJson` of the record's hashed fields, written member by member in their sorted
 * order (`action` < `action_id` < … < `timestamp`) instead of collecting and sorting keys; the
 * free-form parts (parameters, matched rules, the approval) go through the general serialiser.
 */
function hashedText(input: AuditEntryInput, entryId: string, timestamp: string, prevHash: string): string {
  const { action, evaluation } = input;
  const upstream = action.upstream !== undefined ? `,"upstream":${canonicalJson(action.upstream)}` : '';
  const approval = input.approval !== undefined ? `,"approval":${canonicalJson(input.approval)}` : '';
  return (
    `{"action":{"context":${canonicalJson(redactSecretText(action.context))},"parameters":${redactedCanonicalJson(action.parameters)}` +
    `,"target":${canonicalJson(redactSecretText(action.target))},"type":${canonicalJson(action.type)}${upstream}}` +
    `,"action_id":${canonicalJson(input.action_id)},"agent_id":${canonicalJson(input.agent_id)}${approval}` +
    `,"caller":${canonicalJson(input.caller)},"entry_id":${canonicalJson(entryId)}` +
    `,"evaluation":{"allowed":${canonicalJson(evaluation.allowed)},"audit_findings":${redactedMatches(evaluation.audit_findings)}` +
    `,"decision":${canonicalJson(evaluation.decision)},"matched":${redactedMatches(evaluation.matched)}` +
    `,"reason":${canonicalJson(redactSecretText(evaluation.reason))},"require_approval":${canonicalJson(evaluation.require_approval)}}` +
    `,"prev_hash":${canonicalJson(prevHash)},"revision":${canonicalJson(input.revision)},"timestamp":${canonicalJson(timestamp)}}`
  );
}

/**
 * The canonical JSON of matched rules, their messages redacted: a reason quotes what the caller
 * sent (`Tool 'postgres://app:s3cret@db' is not in allowed list …`), and the engine's shared
 * entries carry no secret, so they keep their cached text.
 */
function redactedMatches(matches: readonly unknown[]): string {
  if (!matches.some(leaks)) return canonicalJson(matches);
  return canonicalJson(matches.map((m) => (leaks(m) ? { ...(m as object), message: redactSecretText(messageOf(m)!) } : m)));
}

const messageOf = (m: unknown): string | undefined => {
  const message = typeof m === 'object' && m !== null ? (m as { message?: unknown }).message : undefined;
  return typeof message === 'string' ? message : undefined;
};

const leaks = (m: unknown): boolean => {
  const text = messageOf(m);
  return text !== undefined && redactSecretText(text) !== text;
};

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
