/**
 * Read GuardAgent / GuardPolicy objects from multi-document YAML, with errors that name the
 * file, the line and the field, as `kubectl apply` users expect.
 */
import { LineCounter, parseAllDocuments, stringify, visit, type Document } from 'yaml';
import { z } from 'zod';
import { GROUP, GuardAgentSchema, GuardPolicySchema, GuardUpstreamSchema, type AnyGuardObject } from '../api/schemas.js';
import type { ObjectProblem } from '../engine/types.js';

export interface ManifestError {
  file: string;
  line: number;
  message: string;
}

export interface ParsedManifests {
  objects: AnyGuardObject[];
  errors: ManifestError[];
  /** Documents of other kinds (kagent, Argo CD, …) that were skipped. */
  skipped: number;
}

/** `file:line: message`, the format editors and CI logs link from. */
export function formatManifestError(e: ManifestError): string {
  return `${e.file}:${e.line}: ${e.message}`;
}

const SCHEMAS = { GuardAgent: GuardAgentSchema, GuardPolicy: GuardPolicySchema, GuardUpstream: GuardUpstreamSchema } as const;

function lineOf(doc: Document, lines: LineCounter, path: readonly PropertyKey[]): number {
  // Walk up the path until a node with a position is found (a missing field has none).
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]).line;
  }
  return 1;
}

function issuePath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '');
}

/**
 * Parse every document in `text`. Documents of our group are validated with the API schemas;
 * other kinds are counted in `skipped`; empty documents are ignored.
 *
 * @example
 *   const { objects, errors } = parseManifests(fs.readFileSync(f, 'utf8'), f);
 */
export function parseManifests(text: string, file: string): ParsedManifests {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const out: ParsedManifests = { objects: [], errors: [], skipped: 0 };
  if (!Array.isArray(docs)) {
    // An empty stream parses to an EmptyStream object.
    return out;
  }
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      for (const err of doc.errors) {
        out.errors.push({ file, line: err.linePos?.[0]?.line ?? 1, message: `invalid YAML: ${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}` });
      }
      continue;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    const startLine = doc.contents?.range ? lines.linePos(doc.contents.range[0]).line : 1;
    if (typeof value !== 'object' || Array.isArray(value)) {
      out.errors.push({ file, line: startLine, message: 'a document must be a mapping with apiVersion and kind' });
      continue;
    }
    const { apiVersion, kind } = value as { apiVersion?: unknown; kind?: unknown };
    if (typeof apiVersion !== 'string' || !apiVersion.startsWith(`${GROUP}/`)) {
      out.skipped++;
      continue;
    }
    const schema = SCHEMAS[kind as keyof typeof SCHEMAS];
    if (!schema) {
      out.errors.push({ file, line: startLine, message: `unknown kind ${JSON.stringify(kind)} in ${apiVersion}; expected GuardAgent, GuardPolicy or GuardUpstream` });
      continue;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const where = issuePath(issue.path);
        out.errors.push({ file, line: lineOf(doc, lines, issue.path), message: `${kind}${where ? ` ${where}` : ''}: ${issue.message}` });
      }
      continue;
    }
    out.objects.push(parsed.data);
  }
  return out;
}

/**
 * The line in `text` a compile problem of an object points at: the line of the value the
 * problem's message quotes (the offending pattern: `pattern "delete_{a,b}" uses braces`), the
 * longest when several are quoted; else the first line of the object's document; 1 when the
 * object is not in `text`.
 *
 * @example
 *   lineOfProblem(text, { kind: 'GuardPolicy', name: 'p', reason: Reason.InvalidPattern, message: 'pattern "a{b}" uses braces, which are not supported' });
 */
export function lineOfProblem(text: string, problem: ObjectProblem): number {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines });
  if (!Array.isArray(docs)) return 1;
  for (const doc of docs) {
    if (
      doc.get('kind') !== problem.kind ||
      doc.getIn(['metadata', 'name']) !== problem.name ||
      (doc.getIn(['metadata', 'namespace']) ?? undefined) !== problem.namespace
    ) {
      continue;
    }
    let quoted: { value: string; offset: number } | undefined;
    visit(doc, {
      Scalar(_key, node) {
        if (typeof node.value !== 'string' || !node.range || !problem.message.includes(JSON.stringify(node.value))) return;
        if (!quoted || node.value.length > quoted.value.length) quoted = { value: node.value, offset: node.range[0] };
      },
    });
    return lines.linePos(quoted?.offset ?? doc.contents?.range?.[0] ?? 0).line;
  }
  return 1;
}

/** Serialise one object as a YAML manifest (what the standalone store writes). */
export function toManifest(obj: AnyGuardObject): string {
  return stringify(obj, { lineWidth: 0 });
}

/** A zod error as one readable line: `field: message; field: message`. */
export function formatZodError(err: z.ZodError): string {
  return err.issues.map((i) => `${issuePath(i.path) || '(root)'}: ${i.message}`).join('; ');
}
