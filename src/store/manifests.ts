/**
 * Read GuardAgent / GuardPolicy objects from multi-document YAML, with errors that name the
 * file, the line and the field, as `kubectl apply` users expect. Each document stands on its
 * own: one that fails never drops the valid objects around it, and its error names the object
 * when its kind and name can be read, so the store can tell what is missing
 * (docs/decisions.md, "Objects that cannot be loaded").
 */
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, stringify, visit, type Document, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { API_VERSION, GROUP, GuardAgentSchema, GuardPolicySchema, GuardUpstreamSchema, type AnyGuardObject } from '../api/schemas.js';
import type { ObjectProblem } from '../engine/types.js';

/** Who a document defines, read from it whether or not it is valid. */
export interface ObjectIdentity {
  kind: string;
  namespace?: string;
  name: string;
  /** A GuardAgent's id: `spec.agentId`, else its name; absent when `spec.agentId` is there but not a string. */
  agentId?: string;
}

export interface ManifestError {
  /** The file, or a folder that could not be listed (then there is no line). */
  file: string;
  line?: number;
  message: string;
  /** The object the failing document defines, when its kind and name can be read. */
  object?: ObjectIdentity;
}

export interface ManifestObject {
  object: AnyGuardObject;
  /** The line its document (or `List` item) starts on. */
  line: number;
}

export interface ParsedManifests {
  objects: ManifestObject[];
  errors: ManifestError[];
  /** Documents of other kinds (kagent, Argo CD, …) that were skipped. */
  skipped: number;
}

/** `file:line: message`, the format editors and CI logs link from (`folder: message` for a folder). */
export function formatManifestError(e: ManifestError): string {
  return `${e.file}${e.line === undefined ? '' : `:${e.line}`}: ${e.message}`;
}

const SCHEMAS = { GuardAgent: GuardAgentSchema, GuardPolicy: GuardPolicySchema, GuardUpstream: GuardUpstreamSchema } as const;

/** Every kind of our group: one of them under another apiVersion is a mistake, not another project's object. */
const OUR_KINDS = ['GuardAgent', 'GuardPolicy', 'GuardUpstream', 'GuardApproval'];
const isOurKind = (kind: unknown) => typeof kind === 'string' && OUR_KINDS.some((k) => k.toLowerCase() === kind.trim().toLowerCase());

/**
 * An apiVersion that names our group but is not written as it (`policyguard/v1alpha1`,
 * `PolicyGuard.dev/v1alpha1`, ` policyguard.dev/v1alpha1`): a typo of ours, not another
 * project's group, so its object is refused rather than passed over.
 */
const looksLikeOurGroup = (apiVersion: string) => /^\s*policy-?guard/i.test(apiVersion);

/** `kind: List` (what `kubectl get -o yaml` prints) or `GuardPolicyList` (the API's own list): its items are read as documents. */
const isListKind = (kind: unknown) => kind === 'List' || (typeof kind === 'string' && kind.endsWith('List') && OUR_KINDS.includes(kind.slice(0, -4)));

/** YAML aliases one document may expand: beyond it `toJS` refuses (a billion-laughs document). */
const MAX_ALIASES = 100;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const nonBlank = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v : undefined);

/**
 * The fields of Kubernetes ObjectMeta (k8s.io/apimachinery meta/v1). A metadata key outside it
 * is a typo (`lables`) that would silently drop what it holds: labels an agentSelector needs,
 * so a deny would apply to no one. The list lives here, not in `ObjectMetaSchema`, because that
 * schema also reads objects from the API server, which prunes unknown metadata keys itself: in
 * Kubernetes mode such a key never reaches us, only a manifest file can carry one.
 */
const OBJECT_META_FIELDS: ReadonlySet<string> = new Set([
  'name', 'generateName', 'namespace', 'selfLink', 'uid', 'resourceVersion', 'generation', 'creationTimestamp',
  'deletionTimestamp', 'deletionGracePeriodSeconds', 'labels', 'annotations', 'ownerReferences', 'finalizers', 'managedFields',
]);

/**
 * The identity of a document, valid or not: its kind and `metadata.name`, when both are strings.
 *
 * @example identityOf({ kind: 'GuardAgent', metadata: { name: 'bot' }, spec: { agentId: 'Bot' } }) // { kind: 'GuardAgent', name: 'bot', agentId: 'Bot' }
 */
export function identityOf(value: unknown): ObjectIdentity | undefined {
  if (!isRecord(value) || typeof value.kind !== 'string' || !isRecord(value.metadata)) return undefined;
  const { name, namespace } = value.metadata;
  if (typeof name !== 'string' || name === '') return undefined;
  const out: ObjectIdentity = { kind: value.kind, name, ...(typeof namespace === 'string' && namespace ? { namespace } : {}) };
  if (value.kind === 'GuardAgent') {
    const agentId = isRecord(value.spec) ? value.spec.agentId : undefined;
    if (agentId === undefined || typeof agentId === 'string') out.agentId = agentId ?? name;
  }
  return out;
}

/** `GuardPolicy team/deny-drops`, or the kind alone when there is no name. */
function label(kind: string, id: ObjectIdentity | undefined): string {
  return id ? `${kind} ${id.namespace ? `${id.namespace}/` : ''}${id.name}` : kind;
}

function lineOf(doc: Document, lines: LineCounter, path: readonly PropertyKey[]): number {
  // Walk up the path until a node with a position is found (a missing field has none).
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]).line;
  }
  return 1;
}

/** The line `key` is written on in the mapping at `path`: an unknown key is pointed at itself, not at its value or its mapping. */
function lineOfKey(doc: Document, lines: LineCounter, path: readonly PropertyKey[], key: string): number {
  const map = doc.getIn(path as unknown[], true);
  const pair = isMap(map) ? map.items.find((p) => isScalar(p.key) && p.key.value === key) : undefined;
  const range = isScalar(pair?.key) ? pair.key.range : undefined;
  return range ? lines.linePos(range[0]).line : lineOf(doc, lines, [...path, key]);
}

function issuePath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '');
}

/**
 * Parse every document in `text`, each on its own. Documents of our group are validated with
 * the API schemas; a `List` has its items read as documents; other kinds are counted in
 * `skipped`; empty documents are ignored. A document of one of our kinds under another (or no)
 * apiVersion is an error, not another project's object.
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
    // An unknown tag (`!secret x`) is only a warning to the parser, which keeps the plain value:
    // whatever the author meant it to do, it would silently not happen.
    const problems = [...doc.errors, ...doc.warnings.filter((w) => w.code === 'TAG_RESOLVE_FAILED')];
    if (problems.length > 0) {
      for (const err of problems) {
        const text = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
        out.errors.push({ file, line: err.linePos?.[0]?.line ?? 1, message: `invalid YAML: ${err.code === 'TAG_RESOLVE_FAILED' ? `${text} (PolicyGuard reads plain YAML: remove the tag)` : text}` });
      }
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (err) {
      // An alias to an anchor of another document, or too many aliases: this document only.
      out.errors.push({ file, line: lineOf(doc, lines, []), message: `invalid YAML: ${(err as Error).message}` });
      continue;
    }
    if (value === null || value === undefined) continue;
    readDocument(value, [], doc, lines, file, out);
  }
  return out;
}

/** Take in one document, or one item of a `List` (`at` is its path in the document). */
function readDocument(value: unknown, at: readonly PropertyKey[], doc: Document, lines: LineCounter, file: string, out: ParsedManifests): void {
  const startLine = lineOf(doc, lines, at);
  const fail = (message: string, object?: ObjectIdentity, line = startLine) => out.errors.push({ file, line, message, ...(object ? { object } : {}) });
  if (!isRecord(value)) return void fail('a document must be a mapping with apiVersion and kind');
  const apiVersion = nonBlank(value.apiVersion);
  const kind = nonBlank(value.kind);
  if (apiVersion === undefined || kind === undefined) {
    // kubectl refuses such a document too. Passed over, a policy whose header lines were lost
    // (or split off by a stray `---`) would silently stop being in force.
    const id = identityOf(value);
    if (isOurKind(kind)) return void fail(`${label(kind!, id)}: apiVersion is ${value.apiVersion === undefined ? 'missing' : JSON.stringify(value.apiVersion)}; write apiVersion: ${API_VERSION}`, id);
    const missing = [apiVersion === undefined ? 'apiVersion' : '', kind === undefined ? 'kind' : ''].filter(Boolean);
    return void fail(`not a Kubernetes object: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing (every YAML document under the config folder must be one, as for kubectl apply; a GuardPolicy or GuardAgent starts with apiVersion: ${API_VERSION} and its kind)`);
  }
  if (isListKind(kind)) {
    const { items } = value;
    if (!Array.isArray(items)) return void fail(`a ${kind} needs items: a list of objects`);
    items.forEach((item, i) => readDocument(item, [...at, 'items', i], doc, lines, file, out));
    return;
  }
  const id = identityOf(value);
  if (!apiVersion.startsWith(`${GROUP}/`)) {
    if (!isOurKind(kind) && !looksLikeOurGroup(apiVersion)) {
      out.skipped++;
      return;
    }
    return void fail(`${label(kind, id)}: apiVersion is ${JSON.stringify(apiVersion)}; write apiVersion: ${API_VERSION}`, id);
  }
  if (kind === 'GuardApproval') return void fail(`${label(kind, id)}: approvals are not read from manifests; standalone mode keeps them in <data-dir>/approvals`, id);
  const schema = SCHEMAS[kind as keyof typeof SCHEMAS];
  if (!schema) return void fail(`unknown kind ${JSON.stringify(kind)} in ${apiVersion}; expected GuardAgent, GuardPolicy or GuardUpstream`, id);
  const unknownMeta = isRecord(value.metadata) ? Object.keys(value.metadata).filter((k) => !OBJECT_META_FIELDS.has(k)) : [];
  for (const key of unknownMeta) {
    fail(`${label(kind, id)}: metadata: Unrecognized key: ${JSON.stringify(key)} (not a field of Kubernetes ObjectMeta)`, id, lineOfKey(doc, lines, [...at, 'metadata'], key));
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const message = `${label(kind, id)}: ${issuePath(issue.path) || '(root)'}: ${issue.message}`;
      // An unknown key is pointed at where it is written, not at the mapping that holds it.
      fail(message, id, issue.code === 'unrecognized_keys' ? lineOfKey(doc, lines, [...at, ...issue.path], issue.keys[0]!) : lineOf(doc, lines, [...at, ...issue.path]));
    }
  }
  if (unknownMeta.length > 0 || !parsed.success) return;
  out.objects.push({ object: parsed.data, line: startLine });
}

/** The mappings of a document that are objects: the document itself, or each item of a `List`. */
function* objectNodes(node: unknown): Generator<YAMLMap> {
  if (!isMap(node)) return;
  if (!isListKind(node.get('kind'))) {
    yield node;
    return;
  }
  const items = node.get('items', true);
  if (isSeq(items)) for (const item of items.items) yield* objectNodes(item);
}

/**
 * The line in `text` a compile problem of an object points at: the line of the value the
 * problem's message quotes (the offending pattern: `pattern "delete_{a,b}" uses braces`), the
 * longest when several are quoted; else the first line of the object's document (or `List`
 * item); 1 when the object is not in `text`. `fromLine`: the line the object's document starts
 * on, when known, so a name defined twice in one text points at the right copy.
 *
 * @example
 *   lineOfProblem(text, { kind: 'GuardPolicy', name: 'p', reason: Reason.InvalidPattern, message: 'pattern "a{b}" uses braces, which are not supported' });
 */
export function lineOfProblem(text: string, problem: ObjectProblem, fromLine = 1): number {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines });
  if (!Array.isArray(docs)) return 1;
  for (const doc of docs) {
    for (const node of objectNodes(doc.contents)) {
      if (
        node.getIn(['kind']) !== problem.kind ||
        node.getIn(['metadata', 'name']) !== problem.name ||
        (node.getIn(['metadata', 'namespace']) ?? undefined) !== problem.namespace ||
        lines.linePos(node.range?.[0] ?? 0).line < fromLine
      ) {
        continue;
      }
      let quoted: { value: string; offset: number } | undefined;
      visit(node, {
        Scalar(_key, scalar) {
          if (typeof scalar.value !== 'string' || !scalar.range || !problem.message.includes(JSON.stringify(scalar.value))) return;
          if (!quoted || scalar.value.length > quoted.value.length) quoted = { value: scalar.value, offset: scalar.range[0] };
        },
      });
      return lines.linePos(quoted?.offset ?? node.range?.[0] ?? 0).line;
    }
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
