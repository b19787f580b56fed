/**
 * What the gateway takes from a client and what it forwards: a message that means to every
 * upstream what it meant to the gate (docs/decisions.md, "The gateway").
 *
 * The gate reads exact keys (`params.name`, `params.arguments.amount`) and exact methods. Some
 * upstreams do not: Go's encoding/json — used by mcp-go and by the Go MCP SDK before v1.3.1 —
 * matches a struct field to every key equal to its name under Unicode simple case folding
 * (`Name`, `NAME`; `argumentſ`, U+017F folding to `s`; the Kelvin sign `K` folding to `k`) and
 * takes the last of several; lenient servers match methods ignoring case or spaces. So:
 * - a tools/call is forwarded as a message built here from what was decided (name, arguments,
 *   and the `_meta` and `task` the client sent), never the client's own text;
 * - a tools/call whose params hold a key it does not decide is refused: nothing undecided rides along;
 * - two keys equal under case folding in one object of a tools/call are refused: which one an
 *   upstream reads is not the gate's to guess;
 * - in any message, a top-level key that folds to a JSON-RPC member without being it, and a
 *   method spelled like one the gateway decides or filters without being it, are refused.
 */
import { foldKey } from '../engine/keys.js';
import { printable } from '../printable.js';

/** Why a message is refused before anything is decided or forwarded, as the client reads it and as metrics count it. */
export interface MessageRefusal {
  httpStatus: number;
  /** JSON-RPC error code: -32600 for the message itself, -32602 for a tools/call's params. */
  code: number;
  message: string;
  /**
   * `ambiguous_key` (keys equal under case folding, or a member spelled another way) and
   * `lookalike_method` are what an attack or a broken client sends; `invalid_request` and
   * `invalid_params` a client that does not follow the tools/call schema; `tasks_unsupported`
   * a task-augmented call or a `tasks/*` request ({@link TASKS_REFUSED}).
   */
  outcome: 'ambiguous_key' | 'lookalike_method' | 'invalid_request' | 'invalid_params' | 'tasks_unsupported';
}

type JsonObject = Record<string, unknown>;

/** A tools/call as decided and as forwarded: `forward` is all the upstream gets. */
export interface ToolsCall {
  id: string | number;
  name: string;
  arguments: JsonObject;
  forward: { jsonrpc: '2.0'; id: string | number; method: 'tools/call'; params: JsonObject };
}

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** How much of a key (or another value a client or an upstream chose) a message or a log line shows. */
const SHOWN_MAX = 64;
export const cut = (text: string) => (text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX)}…` : text);

/** A key or method as messages and logs show it: quoted, cut, and with nothing that moves a cursor. */
const shown = (text: string) => printable(JSON.stringify(cut(text)));

/** One object on the walk of {@link foldedDuplicate}: its parent and key, to name where it is only when needed. */
interface Visit {
  value: object;
  parent: Visit | undefined;
  key: string;
}

const pathOf = (v: Visit): string => {
  const keys: string[] = [];
  for (let at: Visit | undefined = v; at; at = at.parent) keys.push(cut(at.key));
  return printable(keys.reverse().join('.'));
};

/**
 * The first object in `root` (itself, and every object in it at any depth, arrays included)
 * holding two keys equal under {@link foldKey}: where it is (`params.arguments.items.0`) and the
 * two keys. Iterative, each key folded once; the depth and size of what it walks are bounded
 * before the gateway sees a body (MAX_JSON_DEPTH, the body limit).
 *
 * @example foldedDuplicate({ arguments: { amount: 1, AMOUNT: 9 } }, 'params') // { where: 'params.arguments', keys: ['amount', 'AMOUNT'] }
 */
export function foldedDuplicate(root: unknown, name: string): { where: string; keys: [string, string] } | undefined {
  if (typeof root !== 'object' || root === null) return undefined;
  const stack: Visit[] = [{ value: root, parent: undefined, key: name }];
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const value = visit.value as Record<string, unknown>;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const child: unknown = value[i];
        if (typeof child === 'object' && child !== null) stack.push({ value: child, parent: visit, key: String(i) });
      }
      continue;
    }
    const keys = Object.keys(value);
    const seen = keys.length > 1 ? new Map<string, string>() : undefined;
    for (const key of keys) {
      if (seen) {
        const folded = foldKey(key);
        const other = seen.get(folded);
        if (other !== undefined) return { where: pathOf(visit), keys: [other, key] };
        seen.set(folded, key);
      }
      const child = value[key];
      if (typeof child === 'object' && child !== null) stack.push({ value: child, parent: visit, key });
    }
  }
  return undefined;
}

/** The members of a JSON-RPC message: a request or notification, or a response. */
const JSON_RPC_MEMBERS = ['jsonrpc', 'id', 'method', 'params', 'result', 'error'];
/** What a tools/call's params may hold: the MCP schema's members (CallToolRequestParams). */
const TOOLS_CALL_PARAMS = ['name', 'arguments', '_meta', 'task'];
/** Methods the gateway acts on (decides, filters): any other spelling of them would pass it by. */
const GATED_METHODS = ['tools/call', 'tools/list'];
/** The methods of MCP tasks, folded (./keys.ts): `tasks/get`, `Tasks/Result`, … */
const TASKS_PREFIX = foldKey('tasks/');
/** Every MCP method is visible ASCII: a space, a control or a non-ASCII character is how a look-alike is spelled. */
const VISIBLE_ASCII = /^[\u0021-\u007e]*$/;

const byFold = (names: readonly string[]) => new Map(names.map((n) => [foldKey(n), n]));
const MEMBERS_BY_FOLD = byFold(JSON_RPC_MEMBERS);
const PARAMS_BY_FOLD = byFold(TOOLS_CALL_PARAMS);
const GATED_BY_FOLD = byFold(GATED_METHODS);

const ambiguous = (httpStatus: number, code: number, what: string): MessageRefusal => ({
  httpStatus,
  code,
  message: `${code === -32600 ? 'Invalid Request' : 'Invalid params'}: ${what}; an upstream that matches keys ignoring case (as Go's encoding/json does) could read either, so the gateway refuses the message`,
  outcome: 'ambiguous_key',
});

/** A key of `obj` that folds to one of `members` without being it, and that member. */
function misspelledMember(obj: JsonObject, members: ReadonlyMap<string, string>): { key: string; member: string } | undefined {
  for (const key of Object.keys(obj)) {
    const member = members.get(foldKey(key));
    if (member !== undefined && member !== key) return { key, member };
  }
  return undefined;
}

/**
 * Why the gateway serves no MCP tasks (a tools/call with `params.task`, and `tasks/get`,
 * `tasks/result`, `tasks/list`, `tasks/cancel`, `tasks/update`): every agent reaches an upstream
 * with the upstream's credentials, so the upstream keeps one set of tasks for all of them, and
 * any agent could list, read or cancel another's, results of tools it is denied included; and a
 * task's result comes later than the call, past the outcome the audit log records.
 */
export const TASKS_REFUSED =
  'the gateway does not pass MCP tasks through: every agent reaches the upstream with the same credentials, so any of them could read or cancel the tasks of another, and a task\'s result would not be audited; call the tool without params.task';

/**
 * Why the gateway refuses `message`, whatever its method, or undefined: a top-level key that
 * folds to a JSON-RPC member without being it (`Method`, `ID`, `paramſ`), a method that is
 * not visible ASCII or spells `tools/call` or `tools/list` another way (`Tools/Call`), or a
 * `tasks/*` method ({@link TASKS_REFUSED}). Unknown top-level keys are the SDK classifier's to refuse.
 *
 * @example refuseMessage({ jsonrpc: '2.0', id: 1, method: 'ping', Method: 'tools/call' })?.outcome // 'ambiguous_key'
 */
export function refuseMessage(message: JsonObject): MessageRefusal | undefined {
  const misspelled = misspelledMember(message, MEMBERS_BY_FOLD);
  if (misspelled) return ambiguous(400, -32600, `the message has the key ${shown(misspelled.key)}, which is not "${misspelled.member}" but equals it ignoring case`);
  const method = message.method;
  if (typeof method !== 'string') return undefined;
  const lookalike = (why: string): MessageRefusal => ({ httpStatus: 400, code: -32600, message: `Invalid Request: method ${shown(method)} ${why}`, outcome: 'lookalike_method' });
  if (!VISIBLE_ASCII.test(method)) return lookalike('has a space, a control or a non-ASCII character, which no MCP method has; an upstream that trims or normalizes it could run a method the gateway did not decide');
  const gated = GATED_BY_FOLD.get(foldKey(method));
  if (gated !== undefined && gated !== method) return lookalike(`is not "${gated}" but equals it ignoring case; the gateway decides "${gated}" spelled exactly so, and an upstream that ignores case would run this one undecided`);
  if (foldKey(method).startsWith(TASKS_PREFIX)) return { httpStatus: 200, code: -32601, message: `Method not found: ${method}: ${TASKS_REFUSED}`, outcome: 'tasks_unsupported' };
  return undefined;
}

/**
 * A tools/call as the gateway decides and forwards it, or why it is refused: an id (a tools/call
 * is a request), params with no two keys equal under case folding at any depth (only in params'
 * own keys when the upstream matches keys exactly: `exactKeys`) and no key but name, arguments
 * and `_meta` (`task` is refused: {@link TASKS_REFUSED}), a tool name, and arguments that are an object.
 *
 * @example
 *   const read = readToolsCall({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'add', arguments: { a: 1 } } });
 *   if (read.ok) JSON.stringify(read.call.forward); // '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}'
 */
export function readToolsCall(message: JsonObject, opts: { exactKeys: boolean } = { exactKeys: false }): { ok: true; call: ToolsCall } | { ok: false; refusal: MessageRefusal } {
  const refuse = (refusal: MessageRefusal) => ({ ok: false as const, refusal });
  const invalidParams = (what: string) => refuse({ httpStatus: 200, code: -32602, message: `Invalid params: ${what}`, outcome: 'invalid_params' });
  const id = message.id;
  if (typeof id !== 'string' && typeof id !== 'number') {
    return refuse({ httpStatus: 400, code: -32600, message: 'Invalid Request: a tools/call is a request and needs an id (a string or a number); the gateway answers every call it decides', outcome: 'invalid_request' });
  }
  const params = isObject(message.params) ? message.params : {};
  // An upstream that matches keys exactly reads `to` and `TO` as two arguments; params' own keys
  // are checked below whatever the upstream (misspelled members).
  const duplicate = opts.exactKeys ? undefined : foldedDuplicate(params, 'params');
  if (duplicate) return refuse(ambiguous(200, -32602, `${duplicate.where} holds the keys ${shown(duplicate.keys[0])} and ${shown(duplicate.keys[1])}, which are equal ignoring case`));
  const misspelled = misspelledMember(params, PARAMS_BY_FOLD);
  if (misspelled) return refuse(ambiguous(200, -32602, `params holds the key ${shown(misspelled.key)}, which is not "${misspelled.member}" but equals it ignoring case`));
  const unknown = Object.keys(params).find((k) => !TOOLS_CALL_PARAMS.includes(k));
  if (unknown !== undefined) return invalidParams(`tools/call params hold only name, arguments and _meta; ${shown(unknown)} would reach the upstream undecided, so the call is refused`);
  const name = params.name;
  if (typeof name !== 'string' || name === '') return invalidParams('tools/call needs params.name, the tool to call');
  if (params.arguments !== undefined && !isObject(params.arguments)) return invalidParams('tools/call params.arguments must be an object');
  if (Object.hasOwn(params, 'task')) return refuse({ httpStatus: 200, code: -32602, message: `Invalid params: ${TASKS_REFUSED}`, outcome: 'tasks_unsupported' });
  const args = isObject(params.arguments) ? params.arguments : {};
  const forwarded: JsonObject = { name, arguments: args };
  if (Object.hasOwn(params, '_meta')) forwarded._meta = params._meta;
  return { ok: true, call: { id, name, arguments: args, forward: { jsonrpc: '2.0', id, method: 'tools/call', params: forwarded } } };
}
