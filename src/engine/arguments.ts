/**
 * Argument conditions: compare a value found at a dot path in the call's parameters.
 * Comparisons are on strings (Kubernetes label-selector style); NotEquals and NotIn also match
 * when the path is absent, as NotIn does in a label selector.
 */
import type { ArgumentCondition } from '../api/schemas.js';
import { compileGlob, type Glob } from './glob.js';

export type ArgumentTest = (parameters: Readonly<Record<string, unknown>>) => boolean;

/** Look up `a.b.c` in own properties only (no prototype walking). */
export function lookupPath(root: unknown, path: readonly string[]): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** Scalars compare by their string form; objects and arrays compare with nothing. */
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

function asNumber(value: unknown): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Compile one condition into a test. Globs in `Glob` values are compiled here, once.
 *
 * @example
 *   compileArgument({ path: 'table', operator: 'In', values: ['users'] })({ table: 'users' }) // true
 */
export function compileArgument(cond: ArgumentCondition): ArgumentTest {
  const path = cond.path.split('.');
  const values = cond.values ?? [];
  const get = (p: Readonly<Record<string, unknown>>) => lookupPath(p, path);
  const set = new Set(values);
  switch (cond.operator) {
    case 'Exists':
      return (p) => get(p) !== undefined;
    case 'DoesNotExist':
      return (p) => get(p) === undefined;
    case 'Equals':
      return (p) => asComparable(get(p)) === values[0];
    case 'NotEquals':
      return (p) => asComparable(get(p)) !== values[0];
    case 'In':
      return (p) => {
        const v = asComparable(get(p));
        return v !== undefined && set.has(v);
      };
    case 'NotIn':
      return (p) => {
        const v = asComparable(get(p));
        return v === undefined || !set.has(v);
      };
    case 'Glob': {
      const globs: Glob[] = values.map(compileGlob);
      return (p) => {
        const v = asComparable(get(p));
        if (v === undefined) return false;
        const lower = v.toLowerCase();
        return globs.some((g) => g.matchLower(lower));
      };
    }
    case 'GreaterThan':
    case 'LessThan': {
      const bound = Number(values[0]);
      const greater = cond.operator === 'GreaterThan';
      return (p) => {
        const v = asNumber(get(p));
        return v !== undefined && (greater ? v > bound : v < bound);
      };
    }
  }
}
