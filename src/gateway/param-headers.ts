/**
 * `Mcp-Param-*` headers (protocol revision 2026-07-28, SEP-2243): a tool's `inputSchema` may mark
 * primitive properties with `"x-mcp-header": "Name"`; a client then sends each such argument
 * also as the HTTP header `Mcp-Param-Name`, so intermediaries can route on it, and a server
 * refuses a call whose headers are missing or disagree with the body (HTTP 400, -32020).
 *
 * The gateway is both: the server its client talks to, and a client of the upstream. So
 * (docs/decisions.md, "The gateway"):
 * - it learns each upstream tool's declarations from the tools/list answers it sees, or lists
 *   the upstream's tools itself ({@link ToolHeaderCatalog}); a call it allowed is not forwarded
 *   when the declarations break the specification's rules or the upstream cannot be listed;
 * - it checks the client's headers against the body ({@link paramHeaderMismatch}), refusing one
 *   that disagrees as a server must, but not one that is missing: the upstream never gets the
 *   client's headers, so a missing one loses nothing, and a refusal would cost the call's
 *   decision (an approval is used once);
 * - it builds the headers it sends upstream from the arguments it decided ({@link paramHeaders}),
 *   never passing on the client's own: a tool its listing does not name goes with none, so an
 *   upstream that does declare some refuses the call for want of them.
 */

import { printable } from '../printable.js';
import { cut } from './message.js';

/** One `x-mcp-header` declaration: where its value is in the arguments, and the header's name. */
export interface ParamHeader {
  /** Property names from the arguments object down to the value (`['repo', 'owner']`). */
  path: readonly string[];
  /** The declared name: the header is `Mcp-Param-<name>`. */
  name: string;
  type: 'string' | 'integer' | 'boolean';
}

/** A tool's declarations (possibly none), or why they are invalid. */
export type ToolParamHeaders = { ok: true; headers: readonly ParamHeader[] } | { ok: false; reason: string };

/**
 * What the gateway knows of a tool's declarations ({@link ToolHeaderCatalog.declarations}):
 * them, that they are invalid, or nothing, with why: `unlisted` (the upstream's tools/list does
 * not name the tool) or `unavailable` (the upstream could not be listed).
 */
export type KnownParamHeaders = ToolParamHeaders | { ok: false; unknown: 'unlisted' | 'unavailable'; reason: string };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 9110 `token`: what a header name may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const PRIMITIVE_TYPES = new Set(['string', 'integer', 'boolean']);
/**
 * Subschema keywords an annotation must not be reached through: only a chain of `properties`
 * is "statically reachable" (the specification's word), and an annotation anywhere else makes
 * the tool definition invalid. `$ref` targets live under `$defs`/`definitions`, walked here too.
 */
const UNREACHABLE_KEYWORDS = [
  'items', 'prefixItems', 'contains', 'additionalProperties', 'unevaluatedProperties', 'unevaluatedItems', 'propertyNames',
  'patternProperties', 'dependentSchemas', 'oneOf', 'anyOf', 'allOf', 'not', 'if', 'then', 'else', '$defs', 'definitions',
];
/** Of those, the ones whose value maps names to subschemas (not one subschema, not an array of them). */
const NAMED_SUBSCHEMAS = new Set(['patternProperties', 'dependentSchemas', '$defs', 'definitions']);
/**
 * The most declarations a tool may have, and the most properties deep one may be: each costs a
 * path to keep and a value to look up on every call, and a schema's size is the upstream's to
 * choose (thousands of declarations down one deep chain of properties would cost the gateway
 * seconds and gigabytes). Real tools have a few, near the top.
 */
export const MAX_DECLARATIONS = 64;
export const MAX_DECLARATION_DEPTH = 32;
/** The longest header name, or property name on a declaration's path, the gateway keeps. */
export const MAX_DECLARED_NAME = 256;

/** One schema on the walk of {@link scanParamHeaders}: its parent and the key it is under there. */
interface Visit {
  node: unknown;
  parent: Visit | undefined;
  key: string;
  /** How many keys down from the root. */
  depth: number;
  /** Reached from the root through `properties` alone. */
  reachable: boolean;
}

/** The keys from the root down to `visit` (`['repo', 'owner']`; `<items>` for a keyword). */
function pathOf(visit: Visit): string[] {
  const keys: string[] = [];
  for (let at: Visit | undefined = visit; at?.parent; at = at.parent) keys.push(at.key);
  return keys.reverse();
}

/** A value an upstream or a client chose as a reason shows it: JSON, cut, with nothing that moves a cursor. */
export const shown = (value: unknown) => printable(cut(JSON.stringify(value) ?? String(value)));

/**
 * Where `visit` is, for a reason: its path, cut after {@link MAX_DECLARATION_DEPTH} keys and
 * each key {@link cut} short (a reason is read, logged and audited).
 */
function placeOf(visit: Visit): string {
  if (!visit.parent) return 'the schema root';
  let at = visit;
  while (at.depth > MAX_DECLARATION_DEPTH) at = at.parent!;
  return printable(pathOf(at).map(cut).join('.')) + (at === visit ? '' : '.…');
}

/**
 * The `x-mcp-header` declarations of a tool's `inputSchema`, or why they are invalid: an
 * annotation not reached through `properties` alone (or on the root), a name that is empty or
 * not an RFC 9110 token, a type other than string, integer or boolean (`number` included, as
 * the specification says), a name declared twice ignoring case, or more declarations, or one
 * deeper, than the gateway takes ({@link MAX_DECLARATIONS}, {@link MAX_DECLARATION_DEPTH}).
 *
 * @example scanParamHeaders({ type: 'object', properties: { region: { type: 'string', 'x-mcp-header': 'Region' } } })
 *   // { ok: true, headers: [{ path: ['region'], name: 'Region', type: 'string' }] }
 */
export function scanParamHeaders(inputSchema: unknown): ToolParamHeaders {
  const headers: ParamHeader[] = [];
  const invalid = (where: Visit, why: string): ToolParamHeaders => ({ ok: false, reason: `its inputSchema's x-mcp-header declarations are invalid: ${placeOf(where)}: ${why}` });
  const byLowerName = new Map<string, string>();
  // Iterative, in document order, each node's path built only when needed (for a declaration
  // within the caps, or once for the reason): a schema's depth and size are the upstream's to choose.
  const stack: Visit[] = [{ node: inputSchema, parent: undefined, key: '', depth: 0, reachable: true }];
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const { node, reachable } = visit;
    if (!isObject(node)) continue;
    if (Object.hasOwn(node, 'x-mcp-header')) {
      const name = node['x-mcp-header'];
      if (!reachable || !visit.parent) return invalid(visit, 'x-mcp-header is allowed only on a property reached through properties alone');
      if (visit.depth > MAX_DECLARATION_DEPTH) return invalid(visit, `the gateway takes x-mcp-header at most ${MAX_DECLARATION_DEPTH} properties deep`);
      if (typeof name !== 'string' || !TOKEN.test(name)) return invalid(visit, `x-mcp-header ${shown(name)} is not an HTTP token`);
      const type = node.type;
      if (typeof type !== 'string' || !PRIMITIVE_TYPES.has(type)) return invalid(visit, `x-mcp-header is allowed only on a string, integer or boolean property, not ${shown(type ?? null)}`);
      const earlier = byLowerName.get(name.toLowerCase());
      if (earlier !== undefined) return invalid(visit, `x-mcp-header ${shown(name)} is declared twice, ignoring case (also as ${shown(earlier)})`);
      if (headers.length === MAX_DECLARATIONS) return invalid(visit, `the gateway takes at most ${MAX_DECLARATIONS} x-mcp-header declarations per tool`);
      const path = pathOf(visit);
      if (name.length > MAX_DECLARED_NAME || path.some((key) => key.length > MAX_DECLARED_NAME)) return invalid(visit, `the gateway takes header and property names of at most ${MAX_DECLARED_NAME} characters`);
      byLowerName.set(name.toLowerCase(), name);
      headers.push({ path, name, type: type as ParamHeader['type'] });
    }
    const children: Visit[] = [];
    const depth = visit.depth + 1;
    if (isObject(node.properties)) {
      for (const [key, child] of Object.entries(node.properties)) children.push({ node: child, parent: visit, key, depth, reachable });
    } else if (Array.isArray(node.properties)) {
      // Not JSON Schema (`properties` is an object). The SDK's server reads the indices as
      // property names and so wants `Mcp-Param-X` from `arguments["0"]`; another upstream may
      // ignore the array, or refuse the tool. The gateway cannot know which reading it talks
      // to, so an annotation in there makes the tool invalid (not called) rather than guessed
      // at; an array with none changes nothing, as no reading finds a declaration in it.
      for (const branch of node.properties) children.push({ node: branch, parent: visit, key: '<properties>', depth, reachable: false });
    }
    for (const keyword of UNREACHABLE_KEYWORDS) {
      const sub = node[keyword];
      if (sub === undefined) continue;
      const branches = Array.isArray(sub) ? sub : NAMED_SUBSCHEMAS.has(keyword) && isObject(sub) ? Object.values(sub) : [sub];
      for (const branch of branches) children.push({ node: branch, parent: visit, key: `<${keyword}>`, depth, reachable: false });
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }
  return { ok: true, headers };
}

/** The value at `path` in the arguments (undefined when a step is missing). */
function valueAt(args: Record<string, unknown>, path: readonly string[]): unknown {
  let at: unknown = args;
  for (const key of path) {
    if (!isObject(at) || !Object.hasOwn(at, key)) return undefined;
    at = at[key];
  }
  return at;
}

/**
 * A primitive argument as header text: a string as it is, a boolean as `true`/`false`, a number
 * in decimal. Anything else (an object, a non-finite number, an integer past 2^53) has no
 * header: a client sends none and a server expects none.
 */
function textOf(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number' && Number.isFinite(value) && (!Number.isInteger(value) || Number.isSafeInteger(value))) return String(value);
  return undefined;
}

const SENTINEL_START = '=?base64?';
const SENTINEL_END = '?=';
const CANONICAL_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Text a header carries as it is: tabs and visible ASCII, with no whitespace at either end (HTTP strips it). */
const PLAIN = /^(?![ \t])[\t\x20-\x7e]+(?<![ \t])$/;

const isSentinel = (text: string) => text.startsWith(SENTINEL_START) && text.endsWith(SENTINEL_END);

/**
 * Header text for a value: as it is when HTTP carries it unchanged, else `=?base64?<UTF-8 in
 * Base64>?=` (empty, non-ASCII, controls, whitespace at an end, or text that looks like the
 * sentinel itself).
 *
 * @example encodeParamValue('Zürich') // '=?base64?WsO8cmljaA==?='
 */
export function encodeParamValue(text: string): string {
  return PLAIN.test(text) && !isSentinel(text) ? text : `${SENTINEL_START}${Buffer.from(text, 'utf8').toString('base64')}${SENTINEL_END}`;
}

/** Header text decoded: the sentinel's Base64 as UTF-8, else as it is; undefined when the sentinel holds anything but canonical Base64 of valid UTF-8. */
function decodeParamValue(value: string): string | undefined {
  if (!isSentinel(value)) return value;
  const base64 = value.slice(SENTINEL_START.length, value.length - SENTINEL_END.length);
  if (!CANONICAL_BASE64.test(base64)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(base64, 'base64'));
  } catch {
    return undefined;
  }
}

/**
 * The `Mcp-Param-*` headers for a call with `args`: one per declaration whose value is present,
 * not null and primitive, encoded by {@link encodeParamValue}.
 *
 * @example paramHeaders([{ path: ['n'], name: 'N', type: 'integer' }], { n: 3 }) // { 'Mcp-Param-N': '3' }
 */
export function paramHeaders(declared: readonly ParamHeader[], args: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const d of declared) {
    const text = textOf(valueAt(args, d.path));
    if (text !== undefined) out[`Mcp-Param-${d.name}`] = encodeParamValue(text);
  }
  return out;
}

/** A decimal number as text: the form in which an integer header may differ from its body value (`42.0` for 42). */
const DECIMAL = /^-?\d+(?:\.\d+)?$/;

/**
 * Why the request's `Mcp-Param-*` headers disagree with `args`, or undefined when they do not:
 * for each declaration whose value is present (not null, primitive), its header, when there,
 * must decode to the value (an integer compared as a number). A header for an absent value, or
 * one no declaration names, is ignored, as a server ignores it. A header that is not there is
 * no error here, though a server refuses it: the gateway sends the upstream the headers it
 * builds, never the client's, so nothing is lost; and the SDK's client sends none until it has
 * listed the tools, then calls again, which would be decided again (and an approval it had
 * would be used already). `headers` are Node's (names in lower case).
 *
 * @example paramHeaderMismatch(declared, { region: 'eu' }, { 'mcp-param-region': 'us' }) // 'the Mcp-Param-Region header …'
 */
export function paramHeaderMismatch(declared: readonly ParamHeader[], args: Record<string, unknown>, headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
  for (const d of declared) {
    const value = valueAt(args, d.path);
    const text = textOf(value);
    if (text === undefined) continue;
    const header = `Mcp-Param-${d.name}`;
    const raw = headers[header.toLowerCase()];
    // Not sent (Node joins a header sent twice into one string, which then disagrees).
    if (typeof raw !== 'string') continue;
    const where = `arguments.${printable(d.path.map(cut).join('.'))}=${shown(value)}`;
    const decoded = decodeParamValue(raw);
    if (decoded === undefined) return `the ${header} header carries an invalid Base64 sentinel value`;
    const same = d.type === 'integer' && typeof value === 'number' && DECIMAL.test(decoded) ? Number(decoded) === value : decoded === text;
    if (!same) return `the ${header} header says ${shown(decoded)} but the body carries ${where}`;
  }
  return undefined;
}

/** An upstream's tools/list, as the gateway fetched it: every page it read, and whether that was all of them. */
export interface ToolListing {
  tools: unknown[];
  complete: boolean;
}

/** How long what was learned of an upstream's tools is taken as true without asking again. */
export const DECLARATIONS_MAX_AGE_MS = 5 * 60_000;
/**
 * How long a failed listing stands for its upstream: the calls meanwhile fail at once with its
 * reason, rather than each waiting out the upstream's timeout again.
 */
export const LISTING_FAILURE_MAX_AGE_MS = 10_000;

/** When the gateway last listed an upstream's tools itself, and whether it read the whole list (a tool missing from it is not there). */
interface Listed {
  at: number;
  complete: boolean;
}

interface Known {
  /** Declarations by tool name, each with when it was learned. */
  tools: Map<string, { at: number; declared: ToolParamHeaders }>;
  /** The declarations those hold, together (bounded by {@link MAX_KNOWN_DECLARATIONS}). */
  declarations: number;
  /** Some tools were not kept: the bounds were reached. */
  full: boolean;
  listed: Listed | undefined;
}

/**
 * How much the gateway keeps of one upstream's tools: an upstream's list is its to choose, and
 * every caller's tools/list answer passes through. Past either bound, the tools not kept are
 * called as ones the listing does not name: with no `Mcp-Param-*` headers.
 */
export const MAX_KNOWN_TOOLS = 2_000;
export const MAX_KNOWN_DECLARATIONS = 4_096;
/** The longest tool name kept (MCP's own limit for a tool name is 128 characters). */
export const MAX_KNOWN_TOOL_NAME = 128;

/** A tool missing from the gateway's own listing (or not kept of it). */
const missing = (known: Known & { listed: Listed }): KnownParamHeaders => ({
  ok: false,
  unknown: 'unlisted',
  reason: known.full
    ? `the gateway keeps at most ${MAX_KNOWN_TOOLS} tools (named in at most ${MAX_KNOWN_TOOL_NAME} characters) and ${MAX_KNOWN_DECLARATIONS} declarations of one upstream, and not this one`
    : known.listed.complete
      ? "the upstream's tools/list does not name it"
      : "the pages of the upstream's tools/list that the gateway reads do not name it",
});

/**
 * What the gateway knows of each upstream's `x-mcp-header` declarations, by a key naming the
 * upstream (its ref and URL): learned from the tools/list answers that pass through, or from
 * a listing of its own when a call names a tool it knows nothing fresh about (one listing per
 * upstream at a time, however many calls wait for it; after one that failed, none for
 * {@link LISTING_FAILURE_MAX_AGE_MS}). Bounded per upstream ({@link MAX_KNOWN_TOOLS},
 * {@link MAX_KNOWN_DECLARATIONS}); forgotten when an upstream says its list changed.
 */
export class ToolHeaderCatalog {
  private readonly known = new Map<string, Known>();
  private readonly listing = new Map<string, Promise<Known & { listed: Listed }>>();
  /** The last listing of each upstream that failed, when it did, and what the calls were told. */
  private readonly failed = new Map<string, { at: number; known: KnownParamHeaders }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Take the declarations of `tools` (a tools/list page the upstream sent), within the bounds; what is old goes first. */
  learn(key: string, tools: readonly unknown[]): void {
    const known: Known = this.known.get(key) ?? { tools: new Map(), declarations: 0, full: false, listed: undefined };
    this.known.set(key, known);
    const at = this.now();
    const count = (declared: ToolParamHeaders) => (declared.ok ? declared.headers.length : 0);
    for (const [name, entry] of known.tools) {
      if (entry.at > at - DECLARATIONS_MAX_AGE_MS) continue;
      known.tools.delete(name);
      known.declarations -= count(entry.declared);
    }
    for (const tool of tools) {
      if (!isObject(tool) || typeof tool.name !== 'string') continue;
      const before = known.tools.get(tool.name);
      if (tool.name.length > MAX_KNOWN_TOOL_NAME || (!before && known.tools.size >= MAX_KNOWN_TOOLS)) {
        known.full = true;
        continue;
      }
      const declared = scanParamHeaders(tool.inputSchema);
      const declarations = known.declarations - (before ? count(before.declared) : 0) + count(declared);
      if (declarations > MAX_KNOWN_DECLARATIONS) {
        // Not the old declarations either: they are no longer the tool's.
        if (before) {
          known.tools.delete(tool.name);
          known.declarations -= count(before.declared);
        }
        known.full = true;
        continue;
      }
      known.declarations = declarations;
      known.tools.set(tool.name, { at, declared });
    }
  }

  /** Forget all of an upstream's declarations (its tools changed). */
  forget(key: string): void {
    this.known.delete(key);
  }

  /**
   * The declarations of `tool`, or why they are unknown: from what was learned in the last
   * {@link DECLARATIONS_MAX_AGE_MS}, else from a listing by `list` (which throws, with the
   * reason as message, when the upstream cannot be listed; that failure is the answer for
   * {@link LISTING_FAILURE_MAX_AGE_MS}).
   */
  async declarations(key: string, tool: string, list: () => Promise<ToolListing>): Promise<KnownParamHeaders> {
    const fresh = this.lookup(key, tool);
    if (fresh) return fresh;
    const failed = this.failed.get(key);
    if (failed && failed.at > this.now() - LISTING_FAILURE_MAX_AGE_MS) return failed.known;
    let pending = this.listing.get(key);
    if (!pending) {
      pending = list()
        .then((listing) => this.replace(key, listing))
        .finally(() => this.listing.delete(key));
      this.listing.set(key, pending);
    }
    let known: Known & { listed: Listed };
    try {
      known = await pending;
    } catch (err) {
      const unavailable: KnownParamHeaders = { ok: false, unknown: 'unavailable', reason: `the gateway could not list the upstream's tools to learn which Mcp-Param headers it takes: ${(err as Error).message}` };
      this.failed.set(key, { at: this.now(), known: unavailable });
      return unavailable;
    }
    return known.tools.get(tool)?.declared ?? missing(known);
  }

  /** What is known and fresh of `tool`: its declarations, or that the gateway's own listing did not name it. */
  private lookup(key: string, tool: string): KnownParamHeaders | undefined {
    const known = this.known.get(key);
    if (!known) return undefined;
    const oldest = this.now() - DECLARATIONS_MAX_AGE_MS;
    const entry = known.tools.get(tool);
    if (entry && entry.at > oldest) return entry.declared;
    // Not listed again for every call of a tool the upstream does not list (or not on the pages read).
    if (!entry && known.listed !== undefined && known.listed.at > oldest) return missing({ ...known, listed: known.listed });
    return undefined;
  }

  /** Replace what is known of an upstream with a listing the gateway made itself. */
  private replace(key: string, listing: ToolListing): Known & { listed: Listed } {
    const known = { tools: new Map(), declarations: 0, full: false, listed: { at: this.now(), complete: listing.complete } };
    this.known.set(key, known);
    this.failed.delete(key);
    this.learn(key, listing.tools);
    return known;
  }
}
