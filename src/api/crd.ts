/**
 * Generates the CustomResourceDefinitions from the zod schemas in ./schemas.ts.
 *
 * `crds/*.yaml` and the Helm chart's copy are this module's output; a test regenerates them and
 * fails on any difference, so edit the schemas, then run `npm run crds`.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { stringify } from 'yaml';
import {
  GROUP,
  VERSION,
  GuardAgentSpecSchema,
  GuardAgentStatusSchema,
  GuardPolicySpecSchema,
  GuardPolicyStatusSchema,
  GuardUpstreamSpecSchema,
  GuardUpstreamStatusSchema,
  GuardApprovalSpecSchema,
  GuardApprovalStatusSchema,
} from './schemas.js';

export type JsonSchema = { [key: string]: unknown };

interface KindInfo {
  kind: 'GuardAgent' | 'GuardPolicy' | 'GuardUpstream' | 'GuardApproval';
  plural: string;
  singular: string;
  shortName: string;
  spec: z.ZodType;
  status: z.ZodType;
  columns: { name: string; type: string; jsonPath: string; description?: string; priority?: number }[];
  /** CEL rules over the whole object (e.g. transition rules that must see the status appear or go). */
  objectRules?: { rule: string; message: string }[];
}

const READY = '.status.conditions[?(@.type=="Ready")]';
const commonColumns = [
  { name: 'Ready', type: 'string', jsonPath: `${READY}.status` },
  { name: 'Reason', type: 'string', jsonPath: `${READY}.reason` },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
];

const KINDS: KindInfo[] = [
  {
    kind: 'GuardAgent',
    plural: 'guardagents',
    singular: 'guardagent',
    shortName: 'gagent',
    spec: GuardAgentSpecSchema,
    status: GuardAgentStatusSchema,
    columns: [
      { name: 'Agent ID', type: 'string', jsonPath: '.spec.agentId', priority: 1 },
      { name: 'Trust', type: 'string', jsonPath: '.spec.trustLevel' },
      { name: 'Suspended', type: 'boolean', jsonPath: '.spec.suspended', priority: 1 },
      ...commonColumns,
    ],
    // An id goes to the oldest GuardAgent claiming it (docs/decisions.md §4): an older object
    // given a new id would take it from a live agent. Another id is another GuardAgent.
    objectRules: [
      {
        rule: '(has(self.spec.agentId) ? self.spec.agentId : self.metadata.name) == (has(oldSelf.spec.agentId) ? oldSelf.spec.agentId : oldSelf.metadata.name)',
        message: 'the agent id (spec.agentId, else metadata.name) cannot change: the oldest GuardAgent claiming an id holds it, so create a new GuardAgent for another id',
      },
    ],
  },
  {
    kind: 'GuardPolicy',
    plural: 'guardpolicies',
    singular: 'guardpolicy',
    shortName: 'gpol',
    spec: GuardPolicySpecSchema,
    status: GuardPolicyStatusSchema,
    columns: [
      { name: 'Enforcement', type: 'string', jsonPath: '.spec.enforcement' },
      { name: 'Priority', type: 'integer', jsonPath: '.spec.priority', priority: 1 },
      ...commonColumns,
    ],
  },
  {
    kind: 'GuardUpstream',
    plural: 'guardupstreams',
    singular: 'guardupstream',
    shortName: 'gup',
    spec: GuardUpstreamSpecSchema,
    status: GuardUpstreamStatusSchema,
    columns: [{ name: 'URL', type: 'string', jsonPath: '.spec.url' }, ...commonColumns],
  },
  {
    kind: 'GuardApproval',
    plural: 'guardapprovals',
    singular: 'guardapproval',
    shortName: 'gapr',
    spec: GuardApprovalSpecSchema,
    status: GuardApprovalStatusSchema,
    columns: [
      { name: 'Agent', type: 'string', jsonPath: '.spec.agentId' },
      { name: 'Target', type: 'string', jsonPath: '.spec.target' },
      { name: 'Upstream', type: 'string', jsonPath: '.spec.upstream', priority: 1 },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Empty until PolicyGuard marks it Pending.' },
      { name: 'Decided By', type: 'string', jsonPath: '.status.decidedBy' },
      // A string, not a date: kubectl prints future dates as <invalid>.
      { name: 'Expires', type: 'string', jsonPath: '.spec.expiresAt' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
    // The status's own transition rules do not run when it is removed: removing it would turn a
    // decided approval back into a Pending one.
    objectRules: [{ rule: '!has(oldSelf.status) || has(self.status)', message: 'status cannot be removed once written' }],
  },
];

/**
 * What the API server does with a field a strict object does not declare, and with a null
 * where a field is optional (or a map value).
 * - `prune`: drops it silently (the default for structural schemas). Right for the status,
 *   which only PolicyGuard writes.
 * - `keep`: stores it, so PolicyGuard sees it and refuses the object with the field named. Right
 *   for the spec, which people and GitOps tools write: a dropped `match` condition (misspelt, or
 *   `arguments:` with every item commented out) widens the rule it was in, and a client that
 *   does not ask for strict field validation (`kubectl --validate=false`, most API clients)
 *   would never hear of it (docs/decisions.md, "Typos are errors, not silence").
 */
type Pruning = 'prune' | 'keep';

/** JSON Schema → structural OpenAPI v3 schema as Kubernetes wants it. */
function toStructural(node: unknown, pruning: Pruning): unknown {
  if (Array.isArray(node)) return node.map((n) => toStructural(n, pruning));
  if (node === null || typeof node !== 'object') return node;
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$schema') continue;
    // zod emits JavaScript's safe-integer bounds for every int; they say nothing to Kubernetes.
    if ((key === 'maximum' || key === 'minimum') && Math.abs(value as number) === Number.MAX_SAFE_INTEGER) continue;
    // Kubernetes rejects additionalProperties: false next to properties; a strict object either
    // has its unknown fields pruned or keeps them for PolicyGuard to refuse.
    if (key === 'additionalProperties' && value === false) {
      if (pruning === 'keep') out['x-kubernetes-preserve-unknown-fields'] = true;
      continue;
    }
    out[key] = toStructural(value, pruning);
  }
  if (pruning === 'keep') keepNulls(out);
  return out;
}

/**
 * Marks the optional properties and the map values of `node` nullable, so that the API server
 * stores a null there (for PolicyGuard to refuse) instead of dropping it. A required property
 * stays non-nullable: the API server refuses a null there itself.
 */
function keepNulls(node: JsonSchema): void {
  const required = new Set((node.required as string[] | undefined) ?? []);
  for (const [name, property] of Object.entries((node.properties as Record<string, JsonSchema> | undefined) ?? {})) {
    if (!required.has(name)) property.nullable = true;
  }
  if (typeof node.additionalProperties === 'object') (node.additionalProperties as JsonSchema).nullable = true;
}

function openApiFor(schema: z.ZodType, pruning: Pruning): JsonSchema {
  return toStructural(z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'throw' }), pruning) as JsonSchema;
}

/**
 * The annotation each CRD carries with the digest of its spec: PolicyGuard compares it at start
 * with the CRDs it was built with, because older ones may prune what its checks rely on
 * (src/controller/crd-check.ts).
 */
export const SCHEMA_DIGEST_ANNOTATION = `${GROUP}/schema-digest`;

const digestOf = (spec: unknown) => `sha256:${createHash('sha256').update(JSON.stringify(spec)).digest('hex')}`;

/** Build one CRD object. */
export function buildCrd(info: KindInfo): Record<string, unknown> {
  const spec = crdSpec(info);
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${info.plural}.${GROUP}`, annotations: { [SCHEMA_DIGEST_ANNOTATION]: digestOf(spec) } },
    spec,
  };
}

/**
 * The digest of each CRD this version generates, by CRD name.
 *
 * @example crdDigests().get('guardpolicies.policyguard.dev') // 'sha256:3f…'
 */
export function crdDigests(): Map<string, string> {
  return new Map(KINDS.map((info) => [`${info.plural}.${GROUP}`, digestOf(crdSpec(info))]));
}

/** A CRD's spec: names, the one version, its schema and printer columns. */
function crdSpec(info: KindInfo): Record<string, unknown> {
  return {
    group: GROUP,
    names: {
      kind: info.kind,
      listKind: `${info.kind}List`,
      plural: info.plural,
      singular: info.singular,
      shortNames: [info.shortName],
      categories: ['policyguard'],
    },
    scope: 'Namespaced',
    versions: [
      {
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: info.columns,
        schema: {
          openAPIV3Schema: {
            type: 'object',
            description: `${info.kind} (${GROUP}/${VERSION}). Generated from src/api/schemas.ts.`,
            // A field beside spec (indented one level too little) is kept for PolicyGuard to
            // refuse, as in the spec.
            'x-kubernetes-preserve-unknown-fields': true,
            required: ['spec'],
            ...(info.objectRules ? { 'x-kubernetes-validations': info.objectRules } : {}),
            properties: {
              apiVersion: { type: 'string' },
              kind: { type: 'string' },
              metadata: { type: 'object' },
              spec: specSchemaOf(info),
              status: openApiFor(info.status, 'prune'),
            },
          },
        },
      },
    ],
  };
}

/** A kind's spec schema as its CRD declares it: unknown fields kept. */
const specSchemaOf = (info: KindInfo) => openApiFor(info.spec, 'keep');

/**
 * Each kind's spec as its CRD declares it, for ./spec-fields-policy.ts.
 *
 * @example specSchemas().map((k) => k.plural) // ['guardagents', 'guardpolicies', 'guardupstreams', 'guardapprovals']
 */
export function specSchemas(): { kind: KindInfo['kind']; plural: string; spec: JsonSchema }[] {
  return KINDS.map((info) => ({ kind: info.kind, plural: info.plural, spec: specSchemaOf(info) }));
}

export interface GeneratedCrd {
  /** File name under crds/, e.g. `guardagents.policyguard.dev.yaml`. */
  fileName: string;
  yaml: string;
}

const HEADER = '# Code generated by `npm run crds` from src/api/schemas.ts. DO NOT EDIT.\n';

/** Every CRD as YAML text, ready to write to `crds/`. */
export function generateCrds(): GeneratedCrd[] {
  return KINDS.map((info) => ({
    fileName: `${info.plural}.${GROUP}.yaml`,
    yaml: HEADER + stringify(buildCrd(info), { lineWidth: 0 }),
  }));
}
