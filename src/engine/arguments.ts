/**
 * Argument conditions: compare a value found at a dot path in the call's parameters.
 * Comparisons are on strings (Kubernetes label-selector style). NotEquals and NotIn on an
 * absent path are indeterminate: a tool's default for it may be a listed value. A value that is not a listed one
 * as written but is one as a tool may read it (`"Users"` for `users`, `"1e6"` for `1000000`:
 * {@link nearMatcher}) is indeterminate, not a plain mismatch.
 *
 * A condition on a value of the wrong type or shape (`GreaterThan 500` on `"600 USD"`, `Equals`
 * on an object, a path through a string) is neither true nor false but indeterminate, and says
 * why; the evaluator decides what that means for the rule (docs/decisions.md): an evaluation
 * error is an outcome, not an exception and not a quiet `false`.
 */
import type { ArgumentCondition } from '../api/schemas.js';
import { exactNumber, isPlainDecimal } from '../json-limits.js';
import { compileGlob, foldCase, type Glob } from './glob.js';
import { foldKey } from './keys.js';

/** Why a condition could not be evaluated, e.g. `parameters.amount is "600 USD", not a number; GreaterThan cannot be evaluated`. */
export interface Indeterminate {
  readonly indeterminate: string;
}

export type ArgumentResult = boolean | Indeterminate;

export type ArgumentTest = (parameters: Readonly<Record<string, unknown>>) => ArgumentResult;

/**
 * What a path runs into when it goes through something that is not an object (`options.force`
 * with `options: "yes"`): the thing, and how many keys were followed to reach it.
 */
class Blocked {
  constructor(
    readonly value: unknown,
    readonly depth: number,
  ) {}
}

/**
 * Where beside a path's key (or in its place) there is another key that servers reading keys
 * ignoring case take as it (`AMOUNT` for `amount`: ./keys.ts): that key, how many keys were
 * followed to reach its object, and whether the path's own key is there too. Read as absent, a
 * deny on `amount` would not apply to a call such a server runs with AMOUNT as its amount; read
 * as `amount` when both are there, it would judge 1 in `{"amount":1,"AMOUNT":900}` where Go's
 * encoding/json takes the last, 900.
 */
class ReadAlike {
  constructor(
    readonly key: string,
    readonly depth: number,
    readonly besideExact: boolean,
  ) {}
}

/** A list index as a path segment: `items.0.name`. */
const INDEX = /^(?:0|[1-9]\d*)$/;

/** An object's keys by {@link foldKey}: the first key of each fold, and the folds two keys share. */
interface KeyFolds {
  first: Map<string, string>;
  twice: Set<string>;
}

/** Made on an object's first lookup (a call's parameters live as long as the call). */
const keyFoldsOf = new WeakMap<object, KeyFolds>();

function keyFolds(node: object): KeyFolds {
  let folds = keyFoldsOf.get(node);
  if (!folds) {
    folds = { first: new Map(), twice: new Set() };
    for (const k of Object.keys(node)) {
      const fold = foldKey(k);
      if (folds.first.has(fold)) folds.twice.add(fold);
      else folds.first.set(fold, k);
    }
    keyFoldsOf.set(node, folds);
  }
  return folds;
}

/** A key of `node` other than `key` that folds to `fold`, as `key` does. */
function otherKey(node: object, key: string, fold: string): string {
  return Object.keys(node).find((k) => k !== key && foldKey(k) === fold)!;
}

/**
 * Look up `a.b.c` in own properties only (no prototype walking); undefined when absent. A list
 * is looked into by index only: `options.force` on `options: [{ force: true }]` is blocked (a
 * deny on it must not read it as absent), and so is `length`. A key with a look-alike beside
 * it or in its place (`AMOUNT`) is neither read nor absent. `folds`: the path's keys, folded.
 */
function lookupPath(root: unknown, path: readonly string[], folds: readonly string[]): unknown {
  let node = root;
  for (let i = 0; i < path.length; i++) {
    const key = path[i]!;
    if (node === null || typeof node !== 'object' || (Array.isArray(node) && !INDEX.test(key))) return new Blocked(node, i);
    const exact = Object.hasOwn(node, key);
    if (!Array.isArray(node)) {
      const fold = folds[i]!;
      if (exact && keyFolds(node).twice.has(fold)) return new ReadAlike(otherKey(node, key, fold), i, true);
      if (!exact) {
        const alike = keyFolds(node).first.get(fold);
        return alike === undefined ? undefined : new ReadAlike(alike, i, false);
      }
    } else if (!exact) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

const PREVIEW_MAX = 64;

/** A short, safe description of a value for a warning: strings quoted and cut, containers by kind. */
function preview(value: unknown): string {
  if (typeof value === 'string') {
    if (value.length <= PREVIEW_MAX) return JSON.stringify(value);
    const end = /[\uD800-\uDBFF]/.test(value[PREVIEW_MAX - 1]!) ? PREVIEW_MAX - 1 : PREVIEW_MAX; // do not split a pair
    return `${JSON.stringify(value.slice(0, end))}…`;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length} item${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${String(value)} (a ${typeof value})`;
  return `a ${typeof value}`;
}

/** Scalars compare by their string form (null as "null"); anything else cannot be compared. */
function asComparable(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
    case 'boolean':
      return String(value);
    default:
      return value === null ? 'null' : undefined;
  }
}

// eslint-disable-next-line no-control-regex -- all of ASCII, controls included
const ASCII = /^[\u0000-\u007f]*$/;
// eslint-disable-next-line no-control-regex -- controls are what it finds
const ASCII_CONTROL = /[\u0000-\u001f\u007f]/g;
/** Characters that show as nothing: controls, zero-width spaces and joiners, soft hyphens, variation selectors, a BOM. */
const INVISIBLE = /[\p{Cc}\p{Default_Ignorable_Code_Point}]/gu;

/**
 * `s` as a tool that compares loosely may read it: case folded as globs fold it (./glob.ts),
 * in Unicode compatibility form (NFKC: fullwidth `ｕｓｅｒｓ` is `users`), without controls or
 * other invisible characters and without whitespace at either end. The last answer is kept: the
 * conditions of a call on one value (a megabyte, say) pay for it once.
 *
 * @example looseText(' Users\u200b') // 'users'
 */
function looseText(s: string): string {
  if (s === lastLoose.of) return lastLoose.text;
  const text = ASCII.test(s) ? s.replace(ASCII_CONTROL, '').toLowerCase().trim() : foldCase(s.replace(INVISIBLE, '').normalize('NFKC')).trim();
  lastLoose = { of: s, text };
  return text;
}
let lastLoose = { of: '', text: '' };

/** `s` as a tool written in C (or passing it to one) reads it, up to its first NUL, when it has one. */
function beforeNul(s: string): string | undefined {
  const nul = s.indexOf('\u0000');
  return nul < 0 ? undefined : s.slice(0, nul);
}

/** Whether `s` reads as nothing, whole or up to its first NUL. */
function isBlank(s: string): boolean {
  const cut = beforeNul(s);
  return looseText(s) === '' || (cut !== undefined && looseText(cut) === '');
}

/**
 * For the values of an Equals, NotEquals, In or NotIn: which of them a value that is none of
 * them as written still equals as a tool may read it, or undefined. Alike as text by
 * {@link looseText} (`Users`, `users `, `ＵＳＥＲＳ` for `users`; `True` for `true`), or as
 * numbers (`1e6`, `1000000.00` for `1000000`), whole or up to its first NUL (`users\0x`). Such a value is neither a match nor a mismatch: a
 * deny on `table In [users]` must not let `Users` through to a database that ignores case, and an
 * allow on `env NotIn [prod]` must not let `Prod` through.
 *
 * @example nearMatcher(['users'])('USERS') // 'users'
 */
function nearMatcher(values: readonly string[]): (s: string) => string | undefined {
  const byText = new Map<string, string>();
  const byNumber = new Map<number, string>();
  for (const v of values) {
    if (!byText.has(looseText(v))) byText.set(looseText(v), v);
    const n = exactNumber(v);
    if (n !== undefined && !byNumber.has(n)) byNumber.set(n, v);
  }
  const alikeOf = (s: string) => {
    const alike = byText.get(looseText(s));
    if (alike !== undefined || byNumber.size === 0) return alike;
    const n = exactNumber(s);
    return n === undefined ? undefined : byNumber.get(n);
  };
  return (s) => {
    const cut = beforeNul(s);
    return alikeOf(s) ?? (cut === undefined ? undefined : alikeOf(cut));
  };
}

/**
 * A number, or a string of a plain decimal (`"600"`, `"-2.5"`, `"1e3"`; not `"0x10"`, `"600 USD"`
 * or `"Infinity"`) that a double holds exactly (not `"9007199254740993"`, which would be judged
 * as 9007199254740992); else undefined. JSON numbers parsing would change never get here: the
 * edge refuses them (src/json-limits.ts).
 */
function asNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  return typeof value === 'string' ? exactNumber(value) : undefined;
}

/**
 * Compile one condition into a test giving `true`, `false` or {@link Indeterminate}. Globs in
 * `Glob` values are compiled here, once. An absent path: Exists is false, DoesNotExist true,
 * NotEquals and NotIn indeterminate (what the tool does without it is not known: its default
 * may be a listed value, `env NotIn [prod]` on a deploy that defaults to prod), the others false.
 *
 * @example
 *   compileArgument({ path: 'table', operator: 'In', values: ['users'] })({ table: 'users' }) // true
 *   compileArgument({ path: 'amount', operator: 'GreaterThan', values: ['500'] })({ amount: '600 USD' })
 *   // { indeterminate: 'parameters.amount is "600 USD", not a number; GreaterThan cannot be evaluated' }
 */
export function compileArgument(cond: ArgumentCondition): ArgumentTest {
  const path = cond.path.split('.');
  const folds = path.map(foldKey);
  const op = cond.operator;
  const where = (n: number) => ['parameters', ...path.slice(0, n)].join('.');
  /** The path without a leading `parameters.` that a policy author may have written by mistake. */
  const unprefixed = path.length > 1 && path[0] === 'parameters' ? path.slice(1) : undefined;
  const unprefixedFolds = folds.slice(1);
  const cannot = (what: string): Indeterminate => ({ indeterminate: `${what}; ${op} cannot be evaluated` });
  const wrongType = (value: unknown, expected: string) => cannot(`${where(path.length)} is ${preview(value)}, not ${expected}`);

  /** The test on a value that is there (not undefined); `absent` is the answer when it is not. */
  const make = (absent: ArgumentResult, present: (value: unknown) => ArgumentResult): ArgumentTest => {
    return (p) => {
      const value = lookupPath(p, path, folds);
      if (value instanceof Blocked) {
        const hint = Array.isArray(value.value) ? ' (a list is looked into by index, as in items.0.name)' : '';
        return cannot(`${where(value.depth)} is ${preview(value.value)}, not an object${hint}, so ${where(path.length)} cannot be looked up`);
      }
      if (value instanceof ReadAlike) {
        const wanted = path[value.depth]!;
        if (value.besideExact) return cannot(`${where(value.depth)} has both ${JSON.stringify(wanted)} and ${JSON.stringify(value.key)}, which a server that reads keys ignoring case may take either of as ${where(value.depth + 1)}`);
        return cannot(`${where(value.depth)} has no key ${JSON.stringify(wanted)} but has ${JSON.stringify(value.key)}, which a server that reads keys ignoring case takes as ${where(value.depth + 1)}`);
      }
      if (value !== undefined) return present(value);
      // `parameters.amount` looks up parameters.parameters.amount: a path is written from inside
      // the parameters. Read as absent, a deny on it would apply to no call.
      if (unprefixed && lookupPath(p, unprefixed, unprefixedFolds) !== undefined) {
        return cannot(`${where(path.length)} is absent, but ${where(path.length).replace('parameters.parameters.', 'parameters.')} is there: a path is written from inside the parameters (${unprefixed.join('.')}, not ${cond.path})`);
      }
      return absent;
    };
  };
  /** A comparison on the string form of a scalar. */
  const scalar = (absent: ArgumentResult, test: (s: string, value: unknown) => ArgumentResult) =>
    make(absent, (value) => {
      const s = asComparable(value);
      return s === undefined ? wrongType(value, 'a string, number, boolean or null') : test(s, value);
    });
  /** A value that only a loose reading takes as a listed value, or as one a glob matches: `how` says which. */
  const nearly = (value: unknown, how: string) =>
    cannot(`${where(path.length)} is ${preview(value)}, ${how} as a tool may read it (ignoring case, Unicode form, control and invisible characters, spaces at the ends, what follows a NUL, or how a number is written) but not as written`);

  const values = cond.values ?? [];
  switch (op) {
    case 'Exists':
      return make(false, () => true);
    case 'DoesNotExist':
      return make(true, () => false);
    case 'Equals':
    case 'NotEquals':
    case 'In':
    case 'NotIn': {
      const listed = op === 'Equals' || op === 'NotEquals' ? values.slice(0, 1) : values;
      const set = new Set(listed);
      const near = nearMatcher(listed);
      const negated = op === 'NotEquals' || op === 'NotIn';
      const theListed = listed.length === 1 ? 'the listed value' : 'a listed value';
      // false and 0 stand for "not given" only where no boolean or number is listed: `force NotEquals true` reads false as false.
      const falsyIsUnset = !listed.some((v) => v === 'true' || v === 'false' || exactNumber(v) !== undefined);
      const absent = negated ? cannot(`${where(path.length)} is absent, and the tool's default for it may be ${theListed} (a rule for calls without it says DoesNotExist)`) : false;
      return scalar(absent, (s, value) => {
        if (set.has(s)) return !negated;
        // null, "" or only spaces (and false or 0, see above): what many tools take as not given (`env || 'prod'`), so their default, as when absent.
        if (negated && (value === null || isBlank(s) || (falsyIsUnset && (value === false || value === 0)))) return cannot(`${where(path.length)} is ${preview(value)}, which a tool may take as not given, and its default may be ${theListed}`);
        const like = near(s);
        return like === undefined ? negated : nearly(value, `which is ${JSON.stringify(like)}`);
      });
    }
    case 'Glob': {
      const globs: Glob[] = values.map((v) => compileGlob(v, 'value'));
      const matched = (lower: string) => globs.find((g) => g.matchLower(lower));
      return scalar(false, (s, value) => {
        const folded = foldCase(s);
        if (matched(folded)) return true;
        const loose = looseText(s);
        const cut = beforeNul(s);
        const like = (loose === folded ? undefined : matched(loose)) ?? (cut === undefined ? undefined : matched(looseText(cut)));
        return like === undefined ? false : nearly(value, `which ${JSON.stringify(like.pattern)} matches`);
      });
    }
    case 'GreaterThan':
    case 'LessThan': {
      const bound = exactNumber(values[0] ?? '');
      // A load error (InvalidSpec), as a rule that would compare with another number than written.
      if (bound === undefined) throw new Error(`argument ${cond.path} ${op} ${JSON.stringify(values[0])}: a double cannot hold this number exactly (integers up to ±2^53, about 15 significant digits), so comparisons with it could not be trusted`);
      const greater = op === 'GreaterThan';
      return make(false, (value) => {
        const n = asNumber(value);
        if (n === undefined) return wrongType(value, typeof value === 'string' && isPlainDecimal(value) && Number.isFinite(Number(value)) ? 'a number a double holds exactly' : 'a number');
        return greater ? n > bound : n < bound;
      });
    }
  }
}
