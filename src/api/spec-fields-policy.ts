/**
 * Generates the chart's ValidatingAdmissionPolicy `<fullname>-spec-fields`
 * (helm/policyguard/templates/spec-fields-admission.yaml): it refuses, at admission, a spec
 * field the CRDs do not declare, naming it, for every client.
 *
 * The CRDs keep such fields rather than prune them (./crd.ts), so PolicyGuard refuses the
 * object when it loads it. This policy says so at `kubectl apply` time instead, as the API
 * server's own validation would. A CRD's CEL rules cannot do it: they cannot list an object's
 * keys, while an admission policy sees the object as a map.
 *
 * Like the CRDs it is generated from the zod schemas: run `npm run crds` after editing them; a
 * test fails on any difference.
 */
import { stringify } from 'yaml';
import { GROUP } from './schemas.js';
import { specSchemas, type JsonSchema } from './crd.js';

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

/** Field names go into CEL string literals unescaped. */
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9]*$/;

const celList = (fields: string[]) => `[${fields.map((f) => `'${f}'`).join(', ')}]`;

/**
 * CEL: every object at `path` below `base` has only `fields`. Properties are read as map keys
 * (`base['namespace']`), so names CEL reserves need no escaping.
 */
function clean(base: string, path: Step[], fields: string, depth = 0): string {
  const [step, ...rest] = path;
  if (!step) return `${base}.all(k, k in ${fields})`;
  if (step === 'items') return `${base}.all(x${depth}, ${clean(`x${depth}`, rest, fields, depth + 1)})`;
  return `(!('${step.property}' in ${base}) || ${clean(`${base}['${step.property}']`, rest, fields, depth)})`;
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
 * The parts of a message naming the first object at `path` below `base` that has a field not
 * in `fields` (`spec.rules[2].match`), and those fields. It is evaluated only when
 * {@link clean} is false, so there is such an object.
 */
function message(base: string, path: Step[], fields: string[], shown: Part[], depth = 0): Part[] {
  const list = celList(fields);
  const [step, ...rest] = path;
  if (!step) {
    const unknown = `${base}.filter(k, !(k in ${list})).map(k, '"' + k + '"').join(', ')`;
    return [...shown, { text: ': unknown field(s) ' }, { cel: unknown }, { text: `; the fields there are ${fields.join(', ')}` }];
  }
  if (step === 'items') {
    const first = `${base}.filter(x${depth}, !${clean(`x${depth}`, rest, list, depth + 1)})[0]`;
    return message(first, rest, fields, [...shown, { text: '[' }, { cel: `string(${base}.indexOf(${first}))` }, { text: ']' }], depth + 1);
  }
  return message(`${base}['${step.property}']`, rest, fields, [...shown, { text: `.${step.property}` }], depth);
}

/** The validations for one kind: one per strict object, each naming the fields it refuses. */
function validations(kind: string, plural: string, spec: JsonSchema) {
  return strictObjects(spec).map(({ path, fields }) => {
    for (const f of fields) if (!FIELD_NAME.test(f)) throw new Error(`${kind}: field name "${f}" cannot go into a CEL literal unescaped`);
    const where = `spec${path.map((step) => (step === 'items' ? '[]' : `.${step.property}`)).join('')}`;
    return {
      expression: `request.resource.resource != '${plural}' || ${clean('object.spec', path, celList(fields))}`,
      messageExpression: concat(message('object.spec', path, fields, [{ text: `${kind} spec` }])),
      // What the API server says if the message expression cannot be evaluated.
      message: `${kind} ${where} has a field the CRD does not declare; the fields there are ${fields.join(', ')}`,
      reason: 'Invalid',
    };
  });
}

const HEADER = `# Code generated by \`npm run crds\` from src/api/schemas.ts. DO NOT EDIT.
{{- if .Values.admission.enabled }}
{{- $fullname := include "policyguard.fullname" . }}
# A spec field the CRDs do not declare (a typo such as match.tool for match.tools) is refused at
# admission, named, whatever the client: the CRDs keep such fields instead of pruning them, so
# that PolicyGuard never loads a rule with a condition silently dropped, and without this policy
# the object would be accepted and only then marked Ready=False (docs/decisions.md, §3).
`;

/** The template's text. */
export function specFieldsPolicyTemplate(): string {
  const kinds = specSchemas();
  const policy = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata: { name: 'FULLNAME-spec-fields', labels: 'LABELS' },
    spec: {
      failurePolicy: 'Fail',
      matchConstraints: {
        // Not the status subresources: PolicyGuard writes those, and they cannot change a spec.
        resourceRules: [{ apiGroups: [GROUP], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: kinds.map((k) => k.plural) }],
      },
      // An edit that leaves the spec as it was (labels, annotations, finalizers) is not refused
      // for a field that was there before this policy.
      matchConditions: [{ name: 'spec-written', expression: "request.operation == 'CREATE' || object.spec != oldObject.spec" }],
      validations: kinds.flatMap((k) => validations(k.kind, k.plural, k.spec)),
    },
  };
  const binding = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata: { name: 'FULLNAME-spec-fields', labels: 'LABELS' },
    spec: { policyName: 'FULLNAME-spec-fields', validationActions: ['Deny'] },
  };
  const templated = (o: object) =>
    stringify(o, { lineWidth: 0 })
      .replaceAll('FULLNAME', '{{ $fullname }}')
      .replace('labels: LABELS', 'labels:\n    {{- include "policyguard.labels" . | nindent 4 }}');
  return `${HEADER}${templated(policy)}---\n${templated(binding)}{{- end }}\n`;
}

/** Where the chart keeps it. */
export const SPEC_FIELDS_TEMPLATE = 'helm/policyguard/templates/spec-fields-admission.yaml';
