/**
 * Generates the ValidatingAdmissionPolicy `spec-fields`: it refuses, at admission, a spec field
 * the CRDs do not declare, a null in a spec field, and a field beside `spec`, naming them, for
 * every client. The chart ships it as
 * helm/policyguard/templates/spec-fields-admission.yaml (`<fullname>-spec-fields`); without the
 * chart, `policyguard crds --admission` prints it (docs/deploy.md, "Unknown fields and nulls").
 *
 * The CRDs keep such fields and nulls rather than prune them (./crd.ts), so PolicyGuard refuses
 * the object when it loads it. This policy says so at `kubectl apply` time instead, as the API
 * server's own validation would. A CRD's CEL rules cannot do it: they cannot list an object's
 * keys, while an admission policy sees the object as a map.
 *
 * Like the CRDs it is generated from the zod schemas: run `npm run crds` after editing them; a
 * test fails on any difference.
 */
import { stringify } from 'yaml';
import { GROUP, VERSION } from './schemas.js';
import { specSchemas, type JsonSchema } from './crd.js';

/** Where the chart keeps the policy (written by `npm run crds`). */
export const SPEC_FIELDS_TEMPLATE = 'helm/policyguard/templates/spec-fields-admission.yaml';

/** A kind's spec as its CRD declares it. */
export interface SpecKind {
  kind: string;
  plural: string;
  spec: JsonSchema;
}

/** A step from the spec down to a strict object: a property, or every item of a list. */
type Step = { property: string } | 'items';

interface StrictObject {
  path: Step[];
  fields: string[];
}

/** Every object below `node` whose unknown fields the CRD keeps, with the fields it declares. */
function strictObjects(node: JsonSchema, path: Step[] = []): StrictObject[] {
  const properties = node.properties as Record<string, JsonSchema> | undefined;
  if (typeof node.additionalProperties === 'object' && strictObjects(node.additionalProperties as JsonSchema).length > 0) {
    throw new Error('a map of strict objects is not supported: add a map step to src/api/spec-fields-policy.ts');
  }
  return [
    ...(properties && node['x-kubernetes-preserve-unknown-fields'] === true ? [{ path, fields: Object.keys(properties) }] : []),
    ...Object.entries(properties ?? {}).flatMap(([property, child]) => strictObjects(child, [...path, { property }])),
    ...(node.items ? strictObjects(node.items as JsonSchema, [...path, 'items']) : []),
  ];
}

/** Field names go into CEL string literals and variable names unescaped. */
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9]*$/;

const celList = (fields: string[]) => `[${fields.map((f) => `'${f}'`).join(', ')}]`;

/** The object's fields at the top level. */
const TOP_LEVEL = ['apiVersion', 'kind', 'metadata', 'spec', 'status'];

/**
 * The spec, typed `dyn`: read as a map (its keys listed, unknown ones included) without the API
 * server's type checker flagging the CRD's object types, which cannot be iterated.
 */
const SPEC = 'dyn(object.spec)';

/**
 * CEL: every object at `path` below `base` has only the fields of `celFields` (a CEL list), none
 * of them null. Properties are read as map keys (`base['namespace']`), so names CEL reserves need
 * no escaping.
 */
function onlyDeclared(base: string, path: Step[], celFields: string, depth = 0): string {
  const [step, ...rest] = path;
  if (!step) return `${base}.all(k, k in ${celFields} && ${base}[k] != null)`;
  if (step === 'items') return `${base}.all(x${depth}, ${onlyDeclared(`x${depth}`, rest, celFields, depth + 1)})`;
  // A null there is its parent's problem (reported for the parent); it has nothing below.
  const child = `${base}['${step.property}']`;
  return `(!('${step.property}' in ${base}) || ${child} == null || ${onlyDeclared(child, rest, celFields, depth)})`;
}

/** A piece of a CEL string expression: text, or an expression that yields text. */
type Part = { text: string } | { cel: string };

/** Joins parts with `+`, adjacent texts as one literal. Texts hold no quote or backslash. */
function concat(parts: Part[]): string {
  const merged: Part[] = [];
  for (const part of parts) {
    const last = merged.at(-1);
    if ('text' in part && last && 'text' in last) merged[merged.length - 1] = { text: last.text + part.text };
    else merged.push(part);
  }
  return merged.map((p) => ('text' in p ? `'${p.text}'` : p.cel)).join(' + ');
}

/**
 * CEL: the keys of `base` that `test` holds for, quoted and comma-separated. A key holding a
 * control character is not shown: the message goes to the writer's terminal.
 */
const quotedKeys = (base: string, test: string) =>
  `${base}.filter(k, ${test}).map(k, k.matches('\\\\p{Cc}') ? 'a field name with control characters' : strings.quote(k)).join(', ')`;

/** The message's end for an object `base` that fails {@link onlyDeclared}: its unknown fields, else its nulls. */
function problems(base: string, fields: string[]): Part[] {
  const celFields = celList(fields);
  const unknown = `!(k in ${celFields})`;
  return [
    { text: ': ' },
    {
      cel:
        `(${base}.exists(k, ${unknown}) ` +
        `? 'unknown field(s) ' + ${quotedKeys(base, unknown)} + '; the fields there are ${fields.join(', ')}' ` +
        `: 'null in ' + ${quotedKeys(base, `${base}[k] == null`)} + ': remove the field, or give it a value')`,
    },
  ];
}

/**
 * The parts of a message naming the first object at `path` below `base` that fails
 * {@link onlyDeclared} (`spec.rules[2].match`), and what is wrong with it. Only valid when
 * there is such an object: the message expression evaluates it only when the check is false.
 */
function message(base: string, path: Step[], fields: string[], shown: Part[], depth = 0): Part[] {
  const celFields = celList(fields);
  const [step, ...rest] = path;
  if (!step) return [...shown, ...problems(base, fields)];
  if (step === 'items') {
    const first = `${base}.filter(x${depth}, !${onlyDeclared(`x${depth}`, rest, celFields, depth + 1)})[0]`;
    return message(first, rest, fields, [...shown, { text: '[' }, { cel: `string(${base}.indexOf(${first}))` }, { text: ']' }], depth + 1);
  }
  return message(`${base}['${step.property}']`, rest, fields, [...shown, { text: `.${step.property}` }], depth);
}

/**
 * The policy's variables and validations for `kinds`: per strict object of a spec, a variable
 * (its check, for its kind only) and a validation that reads it. The API server evaluates a
 * variable once per request and every message expression on every request, so each message
 * first reads its variable and costs nothing more when the object is clean.
 *
 * @example specFieldChecks(specSchemas()).validations[1].message
 * // 'GuardAgent spec has a field the CRD does not declare, or a null; the fields there are agentId, …'
 */
export function specFieldChecks(kinds: readonly SpecKind[]) {
  const topLevel = celList(TOP_LEVEL);
  const variables = [{ name: 'top_level', expression: `dyn(object).all(k, k in ${topLevel})` }];
  const validations = [
    {
      expression: 'variables.top_level',
      messageExpression: `variables.top_level ? '' : request.kind.kind + ${concat([{ text: ' (top level)' }, ...problems('dyn(object)', TOP_LEVEL)])}`,
      message: `a field beside spec that the CRD does not declare; the fields there are ${TOP_LEVEL.join(', ')}`,
      reason: 'Invalid' as const,
    },
  ];
  for (const { kind, plural, spec } of kinds) {
    for (const { path, fields } of strictObjects(spec)) {
      for (const f of [...fields, ...path.flatMap((s) => (s === 'items' ? [] : [s.property]))]) {
        if (!FIELD_NAME.test(f)) throw new Error(`${kind}: field name "${f}" cannot go into CEL unescaped`);
      }
      const name = `${plural}_spec${path.map((s) => (s === 'items' ? '' : `_${s.property}`)).join('')}`;
      const where = `spec${path.map((s) => (s === 'items' ? '[]' : `.${s.property}`)).join('')}`;
      variables.push({ name, expression: `request.resource.resource != '${plural}' || ${onlyDeclared(SPEC, path, celList(fields))}` });
      validations.push({
        expression: `variables.${name}`,
        messageExpression: `variables.${name} ? '' : ${concat(message(SPEC, path, fields, [{ text: `${kind} spec` }]))}`,
        // What the API server says when the message expression cannot be evaluated or its text
        // is unusable (a line break in a field name, say).
        message: `${kind} ${where} has a field the CRD does not declare, or a null; the fields there are ${fields.join(', ')}`,
        reason: 'Invalid',
      });
    }
  }
  return { variables, validations };
}

/**
 * The policy and its binding, as plain objects, named `name`.
 *
 * @example specFieldsPolicy('policyguard-spec-fields').map((o) => o.kind)
 * // ['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']
 */
export function specFieldsPolicy(name: string, labels?: Record<string, string>): [Record<string, unknown>, Record<string, unknown>] {
  const kinds = specSchemas();
  const metadata = { name, ...(labels ? { labels } : {}) };
  const policy = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata,
    spec: {
      failurePolicy: 'Fail',
      matchConstraints: {
        // Not the status subresources: PolicyGuard writes those, and they cannot change a spec.
        // The version the fields are those of; a request in another is converted to it first.
        resourceRules: [{ apiGroups: [GROUP], apiVersions: [VERSION], operations: ['CREATE', 'UPDATE'], resources: kinds.map((k) => k.plural) }],
      },
      // An edit that leaves the spec as it was (labels, annotations, finalizers) is not refused
      // for a field that was there before this policy.
      matchConditions: [{ name: 'spec-written', expression: "request.operation == 'CREATE' || object.spec != oldObject.spec" }],
      ...specFieldChecks(kinds),
    },
  };
  const binding = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata,
    spec: { policyName: name, validationActions: ['Deny'] },
  };
  return [policy, binding];
}

/** `policyguard crds --admission`: the policy and binding as YAML, for clusters without the chart. */
export function specFieldsPolicyYaml(): string {
  return specFieldsPolicy('policyguard-spec-fields')
    .map((o) => stringify(o, { lineWidth: 0 }))
    .join('---\n');
}

const TEMPLATE_HEADER = `# Code generated by \`npm run crds\` from src/api/schemas.ts. DO NOT EDIT.
{{- if .Values.admission.enabled }}
{{- $fullname := include "policyguard.fullname" . }}
# A spec field the CRDs do not declare (a typo such as match.tool for match.tools), a null in a
# spec field, or a field beside spec is refused at admission, named, whatever the client: the
# CRDs keep them instead of pruning them, so that PolicyGuard never loads a rule with a
# condition silently dropped, and without this policy the object would be accepted and only
# then marked Ready=False (docs/deploy.md, "Unknown fields and nulls").
`;

/**
 * The chart's template: {@link specFieldsPolicy} named after the release, with its labels.
 *
 * @example specFieldsPolicyTemplate().includes('name: {{ $fullname }}-spec-fields') // true
 */
export function specFieldsPolicyTemplate(): string {
  const [policy, binding] = specFieldsPolicy('FULLNAME-spec-fields', { LABELS: '' });
  const templated = (o: object) =>
    stringify(o, { lineWidth: 0 })
      .replaceAll('FULLNAME', '{{ $fullname }}')
      .replace(/labels:\n {4}LABELS: ""/, 'labels:\n    {{- include "policyguard.labels" . | nindent 4 }}');
  return `${TEMPLATE_HEADER}${templated(policy)}---\n${templated(binding)}{{- end }}\n`;
}
